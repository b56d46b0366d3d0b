// One register_*() per concept; module.cpp calls them in order.
#pragma once
#include <nanobind/nanobind.h>

namespace nb = nanobind;

void register_errors(nb::module_& m);
void register_gguf(nb::module_& m);
void register_sampler(nb::module_& m);
void register_model(nb::module_& m);
void register_generate(nb::module_& m);
void register_batch_engine(nb::module_& m);
void register_fast_gemm(nb::module_& m);

// diffrt._cuda: the CUDA backend's Python module. Importing it without a GPU or driver is harmless.
#include <cuda_runtime.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <string>

#include "../error_translation.h"

namespace nb = nanobind;

namespace {
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string device_name(int i) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, i) != cudaSuccess) return "";
  return p.name;
}
}  // namespace

void register_cuda_engine(nb::module_& m);  // cuda_bindings.cpp

NB_MODULE(_cuda, m) {
  m.doc() = "diffrt CUDA backend";
  diffrt_py::register_error_translation();  // the same classes as the _core module
  m.def("device_count", &device_count, "Number of usable CUDA devices (0 without a driver or GPU).");
  m.def("device_name", &device_name, nb::arg("index") = 0);
  m.def(
      "cuda_available", [] { return device_count() > 0; },
      "True when a CUDA driver and at least one device are usable (never raises).");
  m.attr("built_with_cuda_version") = CUDART_VERSION;
  register_cuda_engine(m);
}

// diffrt._core.generate: the C++ generation loop, GIL released; callbacks re-acquire it.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <vector>

#include <diffrt/error.h>
#include <diffrt/generate.h>

#include "bindings.h"
#include "generate_glue.h"
#include "model.h"
#include "models/diffusion_gemma.h"
#include "ndarray_util.h"
#include "sampler_params.h"

namespace {

using I32Array = diffrt_py::TapeArray;

nb::dict run_generate(const PyModel& pm, const std::vector<std::vector<int32_t>>& prompts,
                      std::optional<int> max_new_tokens, std::optional<int> steps, std::optional<double> t_min,
                      std::optional<double> t_max, std::optional<double> entropy_bound,
                      std::optional<int> stability_threshold, std::optional<double> confidence_threshold,
                      std::optional<std::vector<int32_t>> eos_ids, std::optional<int32_t> pad_id, uint64_t seed,
                      std::optional<I32Array> tape_init, std::optional<I32Array> tape_samples,
                      std::optional<I32Array> tape_renoise, std::optional<bool> self_cond_bf16, nb::object on_step,
                      nb::object on_canvas) {
  const std::shared_ptr<diffrt::Model>& model = pm.model;
  if (!model) throw diffrt::InvalidArgument("generate: no model");
  const diffrt::ModelConfig& cfg = model->config();
  const diffrt::SamplerParams p =
      diffrt_py::sampler_params(cfg.sampler, max_new_tokens, steps, t_min, t_max, entropy_bound, stability_threshold,
                                confidence_threshold, eos_ids, pad_id, seed);

  diffrt::GenerateOptions opt;
  opt.self_cond_bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*model);
  const int B = int(prompts.size()), L = cfg.canvas_length;
  diffrt_py::set_tape(opt.tape, tape_init, tape_samples, tape_renoise, B, L);

  diffrt_py::CallbackGuard guard;
  diffrt_py::wire_callbacks(opt, guard, on_step, on_canvas);

  diffrt::GenerateResult res;
  {
    nb::gil_scoped_release nogil;
    res = diffrt::generate(std::shared_ptr<const diffrt::Model>(model), prompts, p, opt);
  }
  if (guard.failed) throw nb::python_error();

  return diffrt_py::generate_result(res, p, L);
}

}  // namespace

void register_generate(nb::module_& m) {
  m.def("generate", &run_generate, nb::arg("model"), nb::arg("prompts"), nb::arg("max_new_tokens") = nb::none(),
        nb::arg("steps") = nb::none(), nb::arg("t_min") = nb::none(), nb::arg("t_max") = nb::none(),
        nb::arg("entropy_bound") = nb::none(), nb::arg("stability_threshold") = nb::none(),
        nb::arg("confidence_threshold") = nb::none(), nb::arg("eos_ids") = nb::none(), nb::arg("pad_id") = nb::none(),
        nb::arg("seed") = 0, nb::arg("tape_init") = nb::none(), nb::arg("tape_samples") = nb::none(),
        nb::arg("tape_renoise") = nb::none(), nb::arg("self_cond_bf16") = nb::none(), nb::arg("on_step") = nb::none(),
        nb::arg("on_canvas") = nb::none(),
        "Run the block-diffusion generation loop (spec §10.2) for a batch of prompts; returns a dict.");
}

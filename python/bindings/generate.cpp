// diffrt._core.generate: the C++ generation loop, GIL released; callbacks re-acquire it.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <optional>
#include <vector>

#include <diffrt/error.h>
#include <diffrt/generate.h>

#include "bindings.h"
#include "model.h"
#include "models/diffusion_gemma.h"

namespace {

using I32Array = nb::ndarray<const int32_t, nb::ndim<3>, nb::c_contig, nb::device::cpu>;

template <typename T>
nb::ndarray<nb::numpy, T> copy_array(const T* src, std::initializer_list<size_t> shape) {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  T* buf = new T[n];
  std::memcpy(buf, src, n * sizeof(T));
  nb::capsule del(buf, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nb::ndarray<nb::numpy, T>(buf, shape, del);
}

// A Python callback that may raise: the error is kept as the pending Python error and the loop is
// cancelled; generate() re-raises it once the loop has returned.
struct CallbackGuard {
  bool failed = false;
  bool call(const nb::object& fn, nb::dict ev) {
    try {
      nb::object r = fn(ev);
      return !(r.is(nb::bool_(false)));
    } catch (nb::python_error& e) {
      e.restore();
      failed = true;
      return false;
    }
  }
};

nb::dict run_generate(const PyModel& pm, const std::vector<std::vector<int32_t>>& prompts,
                      std::optional<int> max_new_tokens, std::optional<int> steps, std::optional<double> t_min,
                      std::optional<double> t_max, std::optional<double> entropy_bound,
                      std::optional<int> stability_threshold, std::optional<double> confidence_threshold,
                      std::optional<std::vector<int32_t>> eos_ids, std::optional<int32_t> pad_id, uint64_t seed,
                      std::optional<I32Array> tape_init, std::optional<I32Array> tape_samples,
                      std::optional<I32Array> tape_renoise, int threads, std::optional<bool> self_cond_bf16,
                      nb::object on_step, nb::object on_canvas) {
  const std::shared_ptr<diffrt::Model>& model = pm.model;
  if (!model) throw diffrt::InvalidArgument("generate: no model");
  const diffrt::ModelConfig& cfg = model->config();
  diffrt::SamplerParams p = diffrt::SamplerParams::from(cfg.sampler);
  if (max_new_tokens) p.max_new_tokens = *max_new_tokens;
  if (steps) p.steps = *steps;
  if (t_min) p.t_min = *t_min;
  if (t_max) p.t_max = *t_max;
  if (entropy_bound) p.entropy_bound = *entropy_bound;
  if (stability_threshold) p.stability_threshold = *stability_threshold;
  if (confidence_threshold) p.confidence_threshold = *confidence_threshold;
  if (eos_ids) p.eos_ids = *eos_ids;
  if (pad_id) p.pad_id = *pad_id;
  p.seed = seed;

  diffrt::GenerateOptions opt;
  opt.threads = threads;
  // The model's own pool is idle while the sampler runs (passes and sampling alternate).
  if (threads == 0)
    if (auto* dgm = dynamic_cast<const diffrt::dg::DiffusionGemma*>(model.get())) opt.pool = &dgm->pool();
  opt.self_cond_bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*model);
  const int B = int(prompts.size()), L = cfg.canvas_length;
  if (tape_init || tape_samples || tape_renoise) {
    if (!tape_init || !tape_samples || !tape_renoise)
      throw diffrt::InvalidArgument("tape needs 'init', 'samples' and 'renoise'");
    auto check = [&](const I32Array& a, const char* name) {
      if (int(a.shape(1)) != B || int(a.shape(2)) != L)
        throw diffrt::InvalidArgument(std::string("tape '") + name + "' must have shape [n, " + std::to_string(B) +
                                      ", " + std::to_string(L) + "]");
    };
    check(*tape_init, "init");
    check(*tape_samples, "samples");
    check(*tape_renoise, "renoise");
    if (tape_samples->shape(0) != tape_renoise->shape(0))
      throw diffrt::InvalidArgument("tape 'samples' and 'renoise' must have the same number of steps");
    opt.tape.init = tape_init->data();
    opt.tape.n_init = int64_t(tape_init->shape(0));
    opt.tape.samples = tape_samples->data();
    opt.tape.renoise = tape_renoise->data();
    opt.tape.n_steps = int64_t(tape_samples->shape(0));
  }

  CallbackGuard guard;
  if (!on_step.is_none()) {
    opt.on_step = [&](const diffrt::StepEvent& e) {
      nb::gil_scoped_acquire gil;
      nb::dict d;
      d["kind"] = "step";
      d["canvas"] = e.canvas;
      d["step"] = e.step;
      d["cur_step"] = e.cur_step;
      d["temperature"] = e.temperature;
      d["argmax"] = copy_array(e.argmax, {size_t(e.batch), size_t(e.L)});
      d["accepted"] = copy_array(e.accepted, {size_t(e.batch), size_t(e.L)});
      d["finished"] = copy_array(e.finished, {size_t(e.batch)});
      d["mean_entropy"] = copy_array(e.mean_entropy, {size_t(e.batch)});
      return guard.call(on_step, d);
    };
  }
  if (!on_canvas.is_none()) {
    opt.on_canvas = [&](const diffrt::CanvasEvent& e) {
      nb::gil_scoped_acquire gil;
      nb::dict d;
      d["kind"] = "canvas";
      d["canvas"] = e.canvas;
      d["steps"] = e.steps;
      d["tokens"] = copy_array(e.tokens, {size_t(e.batch), size_t(e.L)});
      d["done"] = copy_array(e.done, {size_t(e.batch)});
      return guard.call(on_canvas, d);
    };
  }

  diffrt::GenerateResult res;
  {
    nb::gil_scoped_release nogil;
    res = diffrt::generate(std::shared_ptr<const diffrt::Model>(model), prompts, p, opt);
  }
  if (guard.failed) throw nb::python_error();

  nb::dict out;
  nb::list toks;
  for (auto& t : res.tokens) toks.append(nb::cast(t));
  out["tokens"] = toks;
  out["steps"] = nb::cast(res.steps);
  out["decoder_passes"] = nb::cast(res.decoder_passes);
  out["cancelled"] = res.cancelled;
  out["prefill_s"] = res.prefill_s;
  out["encode_s"] = res.encode_s;
  out["denoise_s"] = res.denoise_s;
  out["sampler_s"] = res.sampler_s;
  out["total_s"] = res.total_s;
  out["canvas_length"] = L;
  out["eos_ids"] = nb::cast(p.eos_ids);
  out["pad_id"] = p.pad_id;
  return out;
}

}  // namespace

void register_generate(nb::module_& m) {
  m.def("generate", &run_generate, nb::arg("model"), nb::arg("prompts"), nb::arg("max_new_tokens") = nb::none(),
        nb::arg("steps") = nb::none(), nb::arg("t_min") = nb::none(), nb::arg("t_max") = nb::none(),
        nb::arg("entropy_bound") = nb::none(), nb::arg("stability_threshold") = nb::none(),
        nb::arg("confidence_threshold") = nb::none(), nb::arg("eos_ids") = nb::none(),
        nb::arg("pad_id") = nb::none(), nb::arg("seed") = 0, nb::arg("tape_init") = nb::none(),
        nb::arg("tape_samples") = nb::none(), nb::arg("tape_renoise") = nb::none(), nb::arg("threads") = 0,
        nb::arg("self_cond_bf16") = nb::none(), nb::arg("on_step") = nb::none(), nb::arg("on_canvas") = nb::none(),
        "Run the block-diffusion generation loop (spec §10.2) for a batch of prompts; returns a dict.");
}

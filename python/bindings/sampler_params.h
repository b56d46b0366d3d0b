// The sampler arguments of the generate / submit bindings (_core.generate, _core.BatchEngine.submit,
// _cuda.Session.generate): the model's defaults overridden by the arguments given, and the tape.
#pragma once
#include <diffrt/error.h>
#include <diffrt/model.h>
#include <diffrt/sampler.h>
#include <nanobind/ndarray.h>

#include <optional>
#include <string>
#include <vector>

namespace diffrt_py {

using TapeArray = nanobind::ndarray<const int32_t, nanobind::ndim<3>, nanobind::c_contig, nanobind::device::cpu>;

inline diffrt::SamplerParams sampler_params(const diffrt::SamplerDefaults& defaults, std::optional<int> max_new_tokens,
                                            std::optional<int> steps, std::optional<double> t_min,
                                            std::optional<double> t_max, std::optional<double> entropy_bound,
                                            std::optional<int> stability_threshold,
                                            std::optional<double> confidence_threshold,
                                            const std::optional<std::vector<int32_t>>& eos_ids,
                                            std::optional<int32_t> pad_id, uint64_t seed) {
  diffrt::SamplerParams p = diffrt::SamplerParams::from(defaults);
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
  return p;
}

// Points `tape` at the recorded draws (all three arrays or none; each [n, B, L]). The arrays must
// outlive the generation call.
inline void set_tape(diffrt::Tape& tape, const std::optional<TapeArray>& init, const std::optional<TapeArray>& samples,
                     const std::optional<TapeArray>& renoise, int B, int L) {
  if (!init && !samples && !renoise) return;
  if (!init || !samples || !renoise) throw diffrt::InvalidArgument("tape needs 'init', 'samples' and 'renoise'");
  auto check = [&](const TapeArray& a, const char* name) {
    if (int(a.shape(1)) != B || int(a.shape(2)) != L)
      throw diffrt::InvalidArgument(std::string("tape '") + name + "' must have shape [n, " + std::to_string(B) + ", " +
                                    std::to_string(L) + "]");
  };
  check(*init, "init");
  check(*samples, "samples");
  check(*renoise, "renoise");
  if (samples->shape(0) != renoise->shape(0))
    throw diffrt::InvalidArgument("tape 'samples' and 'renoise' must have the same number of steps");
  tape.init = init->data();
  tape.n_init = int64_t(init->shape(0));
  tape.samples = samples->data();
  tape.renoise = renoise->data();
  tape.n_steps = int64_t(samples->shape(0));
}

}  // namespace diffrt_py

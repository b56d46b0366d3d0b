// SamplerParams: per-call sampler settings, defaulted from the file and validated before compute.
#include <cmath>
#include <string>

#include "diffrt/error.h"
#include "diffrt/sampler.h"

namespace diffrt {

SamplerParams SamplerParams::from(const SamplerDefaults& d) {
  SamplerParams p;
  p.max_new_tokens = d.max_new_tokens;
  p.steps = d.max_steps;
  p.t_min = d.t_min;
  p.t_max = d.t_max;
  p.entropy_bound = d.entropy_bound;
  p.stability_threshold = d.stability_threshold;
  p.confidence_threshold = d.confidence_threshold;
  p.eos_ids = d.eos_ids;
  p.pad_id = d.pad_id;
  return p;
}

namespace {
[[noreturn]] void bad(const std::string& what) { throw InvalidArgument("invalid sampler parameter: " + what); }
}  // namespace

void SamplerParams::validate() const {
  if (max_new_tokens < 1) bad("max_new_tokens must be >= 1 (got " + std::to_string(max_new_tokens) + ")");
  if (steps < 1 || steps > 4095) bad("steps must be in [1, 4095] (got " + std::to_string(steps) + ")");
  if (!std::isfinite(t_min) || !std::isfinite(t_max)) bad("t_min and t_max must be finite");
  if (t_min < 0) bad("t_min must be >= 0 (got " + std::to_string(t_min) + ")");
  if (t_min >= t_max)
    bad("t_min must be < t_max (got t_min=" + std::to_string(t_min) + ", t_max=" + std::to_string(t_max) + ")");
  if (!(entropy_bound > 0) || !std::isfinite(entropy_bound))
    bad("entropy_bound must be a finite number > 0 (got " + std::to_string(entropy_bound) + ")");
  if (std::isnan(confidence_threshold)) bad("confidence_threshold is NaN");
}

}  // namespace diffrt

// SamplerParams: per-call sampler settings, defaulted from the file and validated before compute.
#include <cmath>
#include <cstdio>
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

namespace {
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace

void SamplerParams::validate() const {
  if (max_new_tokens < 1) bad("max_new_tokens must be >= 1 (got " + std::to_string(max_new_tokens) + ")");
  if (steps < 1 || steps > kMaxSteps)
    bad("steps must be in [1, " + std::to_string(kMaxSteps) + "] (got " + std::to_string(steps) + ")");
  if (!std::isfinite(t_min) || !std::isfinite(t_max)) bad("t_min and t_max must be finite");
  if (t_min < 0) bad("t_min must be >= 0 (got " + num(t_min) + ")");
  if (t_min >= t_max) bad("t_min must be < t_max (got t_min=" + num(t_min) + ", t_max=" + num(t_max) + ")");
  // The schedule is computed in fp32 (spec §10.2): both ends must stay apart and finite there, so
  // that every step's temperature is a positive finite float (t_max = 1e39 or 1e-300 are not).
  if (t_max > kMaxTemperature) bad("t_max must be <= " + num(kMaxTemperature) + " (got " + num(t_max) + ")");
  if (!(float(t_max) > float(t_min)) || float(t_max - t_min) < kMinTemperatureSpan)
    bad("t_max - t_min must be >= " + num(kMinTemperatureSpan) + " in fp32 (got t_min=" + num(t_min) +
        ", t_max=" + num(t_max) + ")");
  if (!(entropy_bound > 0) || !std::isfinite(entropy_bound))
    bad("entropy_bound must be a finite number > 0 (got " + num(entropy_bound) + ")");
  // Each row keeps its last stability_threshold argmax canvases: more than the steps of a canvas
  // can never be met, and would only cost memory (L ints each).
  if (stability_threshold > kMaxSteps)
    bad("stability_threshold must be <= " + std::to_string(kMaxSteps) + " (got " + std::to_string(stability_threshold) +
        ")");
  if (!std::isfinite(confidence_threshold))
    bad("confidence_threshold must be finite (got " + num(confidence_threshold) + ")");
}

}  // namespace diffrt

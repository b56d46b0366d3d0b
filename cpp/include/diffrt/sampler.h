// The DiffusionGemma entropy-bound sampler (spec §10): parameters, the random source (seeded
// generator or a recorded tape) and the per-step primitives the generation loop is built from.
//
// Contract:
//  - SamplerParams are per call; SamplerParams::from(defaults) copies the file's defaults.
//    validate() throws InvalidArgument naming the parameter (checked before any compute).
//  - Randomness is counter-based (Philox4x32-10 keyed by the seed): every draw is addressed by
//    (canvas, step, purpose, row, position, element), so results do not depend on the thread count
//    or on the order positions are processed, and a GPU can reproduce them.
//  - A Tape replaces the generator with recorded draws (for parity with transformers):
//      init    [n_init,  B, L]  initial canvas of each canvas (randint)
//      samples [n_steps, B, L]  multinomial draw of each executed step, in execution order
//      renoise [n_steps, B, L]  renoise randint of each executed step
//    The arrays are borrowed (not copied); they must outlive the call.
//  - All functions here are pure and thread-safe; buffers are the caller's.
#pragma once
#include <cstdint>
#include <vector>

#include "diffrt/model.h"

namespace diffrt {

struct SamplerParams {
  int max_new_tokens = 256;         // rounded UP to whole canvases
  int steps = 48;                   // N = max denoising steps per canvas
  double t_min = 0.4, t_max = 0.8;  // doubles: t_max - t_min is formed in double, as Python does
  double entropy_bound = 0.1;
  int stability_threshold = 1;          // < 0: no adaptive stopping
  double confidence_threshold = 0.005;  // <= 0: no adaptive stopping
  std::vector<int32_t> eos_ids;         // empty: no EOS handling
  int32_t pad_id = -1;                  // < 0: no pad rewriting
  uint64_t seed = 0;

  static constexpr int kMaxSteps = 4095;                // the RNG address has 12 bits for the step
  static constexpr double kMaxTemperature = 1e6;        // far past one-hot-uniform; fp32-safe
  static constexpr double kMinTemperatureSpan = 1e-30;  // t_max - t_min, as fp32 (a normal float)

  static SamplerParams from(const SamplerDefaults& d);
  bool adaptive_stopping() const { return stability_threshold >= 0 && confidence_threshold > 0; }
  // THE check of a request's sampler settings (every front end asks it: _core.sampler.check_params).
  // Throws InvalidArgument: max_new_tokens < 1, steps outside [1, kMaxSteps], t_min < 0,
  // t_min >= t_max, t_max > kMaxTemperature, t_max - t_min below kMinTemperatureSpan in fp32,
  // entropy_bound <= 0, stability_threshold > kMaxSteps, non-finite values.
  void validate() const;
};

// Recorded draws; nullptr arrays mean "no tape" (use the generator).
struct Tape {
  const int32_t* init = nullptr;  // [n_init, B, L]
  int64_t n_init = 0;
  const int32_t* samples = nullptr;  // [n_steps, B, L]
  const int32_t* renoise = nullptr;  // [n_steps, B, L]
  int64_t n_steps = 0;
  bool active() const { return init != nullptr; }
};

// ---- the counter-based generator ----------------------------------------------------------------
enum class DrawPurpose : uint32_t { Init = 0, Sample = 1, Renoise = 2 };

// Four 32-bit words of Philox4x32-10 for counter (c0..c3) and 64-bit key.
void philox4x32(const uint32_t ctr[4], uint64_t key, uint32_t out[4]);

// Uniform int in [0, n) for one (canvas, step, purpose, row, position) address (n >= 1).
int32_t rng_randint(uint64_t seed, int canvas, int step, DrawPurpose purpose, int row, int pos, int32_t n);

// Multinomial draw from softmax(logits[0..V)) by exponential race: argmax_i p_i / E_i with
// E_i ~ Exp(1) drawn from the (canvas, step, Sample, row, pos) stream, element i.
int32_t rng_multinomial(uint64_t seed, int canvas, int step, int row, int pos, const float* logits, int V);

// ---- per-step primitives -------------------------------------------------------------------------
// T = fp32(t_min) + fp32(t_max - t_min) * (fp32(cur_step) / fp32(N)), all fp32 as in transformers
// (the difference is formed in double first). cur_step counts DOWN N..1.
float temperature(double t_min, double t_max, int cur_step, int n_steps);

struct TokenStats {
  int32_t argmax;  // first maximum of pl
  float entropy;   // H of Categorical(logits = pl)
  int32_t sample;  // multinomial draw (only when requested)
};

// One vocabulary row: pl[i] = raw[i] / T (fp32 division, written to pl), argmax, entropy and,
// when `sample_stream` is non-null, a multinomial draw addressed by it. pl may alias raw.
struct SampleStream {
  uint64_t seed;
  int canvas, step, row, pos;
};
TokenStats token_stats(const float* raw, float T, float* pl, int V, const SampleStream* sample_stream);

// Entropy-bound acceptance over one canvas row: sort H ascending, accept position order[k] iff
// (exclusive prefix sum of sorted H) <= bound (compared in fp32). Ties in H are broken by position
// (stable sort), where torch.sort's order is unspecified; only exact ties can differ.
// scratch: L ints. Writes accepted[L] (0/1). Returns the number accepted (>= 1).
int accept_by_entropy(const float* H, int L, double bound, uint8_t* accepted, int* scratch);

// Round fp32 values to the nearest bf16 (ties to even), kept in fp32 storage; NaN stays NaN.
void round_to_bf16(float* x, int64_t n);

}  // namespace diffrt

// Per-position vocabulary math of one denoising step: temperature scaling, argmax, entropy and the
// multinomial draw, fused into two passes over the V logits.
#include <cmath>
#include <cstring>
#include <limits>

#include "diffrt/sampler.h"
#include "sampler/stream.h"

namespace diffrt {

TokenStats token_stats(const float* raw, float T, float* pl, int V, const SampleStream* ss) {
  // Pass 1: pl = raw / T (a division, exactly as transformers), first maximum.
  float m = -std::numeric_limits<float>::infinity();
  int32_t amax = 0;
  for (int i = 0; i < V; ++i) {
    const float x = raw[i] / T;
    pl[i] = x;
    if (x > m) {
      m = x;
      amax = i;
    }
  }
  // Pass 2: with d = pl - max and e = exp(d): s = sum e, H = log s - sum(d e) / s, which equals
  // -sum l softmax(l) for l = pl - logsumexp(pl). Sums in double (torch sums fp32 in blocks; the
  // double sum is closer to the exact value either would round to).
  double s = 0.0, t = 0.0;
  float best = -1.0f;
  int32_t sample = amax;
  uint32_t words[4] = {0, 0, 0, 0};
  uint32_t ctr[4];
  for (int i = 0; i < V; ++i) {
    const float d = pl[i] - m;
    const float e = std::exp(d);
    if (e > 0.0f) {  // e == 0 contributes 0 (torch clamps l at finfo.min, so 0 * l = 0, not NaN)
      s += e;
      t += double(d) * e;
    }
    if (ss) {
      if ((i & 3) == 0) {
        stream_counter(ss->canvas, ss->step, DrawPurpose::Sample, ss->row, ss->pos, uint32_t(i >> 2), ctr);
        philox4x32(ctr, ss->seed, words);
      }
      // Exponential race: argmax p_i / E_i samples i with probability p_i (p = e / s; s cancels).
      // (Skipping tokens that cannot win, e * max(1/E) <= best, measured slower: mispredicted
      // branches cost more than the skipped Philox + log.)
      const float key = e / exp1_from_bits(words[i & 3]);
      if (key > best) {
        best = key;
        sample = i;
      }
    }
  }
  TokenStats r;
  r.argmax = amax;
  r.entropy = float(std::log(s) - t / s);
  r.sample = sample;
  return r;
}

float temperature(double t_min, double t_max, int cur_step, int n_steps) {
  const float frac = float(cur_step) / float(n_steps);
  return float(t_min) + float(t_max - t_min) * frac;
}

void round_to_bf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    if ((u & 0x7F800000u) == 0x7F800000u) continue;  // inf / NaN unchanged
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    std::memcpy(&x[i], &u, 4);
  }
}

}  // namespace diffrt

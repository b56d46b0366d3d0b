// The per-row rules of a denoising loop: acceptance by entropy and renoising (the CPU session's
// step), and, shared by generate() (rows in lockstep, one SamplerParams) and BatchEngine (each row
// its own request), the adaptive stopping rule and the EOS -> pad rewrite of a committed canvas.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "diffrt/sampler.h"

namespace diffrt::rowstep {

// canvas[j] = sampled[j] where accepted by entropy (spec §10.2), else noise(j). Returns the
// row's mean entropy. accepted: [L] out; order: [L] scratch.
template <class Noise>
float accept_and_renoise(const float* H, const int32_t* sampled, int L, double bound, uint8_t* accepted, int* order,
                         int32_t* canvas, Noise&& noise) {
  accept_by_entropy(H, L, bound, accepted, order);
  double sum = 0;
  for (int j = 0; j < L; ++j) {
    canvas[j] = accepted[j] ? sampled[j] : noise(j);
    sum += H[j];
  }
  return float(sum / L);
}

// Adaptive stopping: this step's argmax equals each of the last s_hist argmax canvases and the mean
// entropy is below conf. history: s_hist canvases of L ints, `stride` apart, oldest first; it is
// rolled (oldest out, amax in).
inline bool stops(const int32_t* amax, int L, int32_t* history, int s_hist, size_t stride, float mean_H, float conf) {
  bool stable = true;
  for (int h = 0; h < s_hist && stable; ++h) stable = std::equal(amax, amax + L, history + h * stride);
  for (int h = 0; h + 1 < s_hist; ++h) std::copy_n(history + (h + 1) * stride, L, history + h * stride);
  if (s_hist > 0) std::copy_n(amax, L, history + (s_hist - 1) * stride);
  return stable && mean_H < conf;
}

// Index of the first EOS in a committed row, or -1.
inline int first_eos(const int32_t* row, int L, const std::vector<int32_t>& eos_ids) {
  for (int j = 0; j < L; ++j)
    if (std::find(eos_ids.begin(), eos_ids.end(), row[j]) != eos_ids.end()) return j;
  return -1;
}

// Keep the first EOS at `eos_at`, pad everything after it (pad_id >= 0).
inline void pad_after(int32_t* row, int L, int eos_at, int32_t pad_id) { std::fill(row + eos_at + 1, row + L, pad_id); }

}  // namespace diffrt::rowstep

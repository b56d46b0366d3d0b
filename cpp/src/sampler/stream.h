// Internal: how a draw address maps onto a Philox counter (shared by the CPU sampler and, later,
// the GPU one). Counter words: [element block, row, purpose<<28 | step<<16 | position, canvas].
// Limits: step < 4096, position < 65536 (checked by SamplerParams / the loop).
#pragma once
#include <cmath>
#include <cstdint>

#include "diffrt/sampler.h"

namespace diffrt {

void stream_counter(int canvas, int step, DrawPurpose purpose, int row, int pos, uint32_t block,
                    uint32_t ctr[4]);

// Exp(1) from 23 random bits: u = (k + 0.5) / 2^23 is exact in fp32 and strictly inside (0, 1).
inline float exp1_from_bits(uint32_t x) {
  const float u = (float(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
  return -std::log(u);
}

}  // namespace diffrt

// Internal: how a draw address maps onto a Philox counter. The generator itself and the counter
// layout live in sampler/philox.h, shared with the CUDA kernels; these are the CPU-side spellings.
#pragma once
#include <cstdint>

#include "diffrt/sampler.h"
#include "sampler/philox.h"

namespace diffrt {

inline void stream_counter(int canvas, int step, DrawPurpose purpose, int row, int pos, uint32_t block,
                           uint32_t ctr[4]) {
  philox::stream_counter(canvas, step, uint32_t(purpose), row, pos, block, ctr);
}

using philox::exp1_from_bits;

}  // namespace diffrt

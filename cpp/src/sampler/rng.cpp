// Counter-based random draws (Philox4x32-10) addressed by (canvas, step, purpose, row, position).
#include <vector>

#include "diffrt/sampler.h"
#include "sampler/stream.h"

namespace diffrt {

static_assert(uint32_t(DrawPurpose::Init) == philox::kPurposeInit &&
                  uint32_t(DrawPurpose::Sample) == philox::kPurposeSample &&
                  uint32_t(DrawPurpose::Renoise) == philox::kPurposeRenoise,
              "DrawPurpose must match the words in sampler/philox.h");

void philox4x32(const uint32_t ctr[4], uint64_t key, uint32_t out[4]) { philox::philox4x32(ctr, key, out); }

int32_t rng_randint(uint64_t seed, int canvas, int step, DrawPurpose purpose, int row, int pos, int32_t n) {
  return philox::randint(seed, canvas, step, uint32_t(purpose), row, pos, n);
}

int32_t rng_multinomial(uint64_t seed, int canvas, int step, int row, int pos, const float* logits, int V) {
  std::vector<float> pl(size_t(V), 0.0f);
  SampleStream s{seed, canvas, step, row, pos};
  return token_stats(logits, 1.0f, pl.data(), V, &s).sample;
}

}  // namespace diffrt

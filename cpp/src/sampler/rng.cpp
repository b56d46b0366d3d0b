// Counter-based random draws (Philox4x32-10) addressed by (canvas, step, purpose, row, position).
#include <cmath>

#include "diffrt/sampler.h"
#include "sampler/stream.h"

namespace diffrt {

void philox4x32(const uint32_t ctr[4], uint64_t key, uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = uint32_t(p1);
    c2 = n2;
    c3 = uint32_t(p0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void stream_counter(int canvas, int step, DrawPurpose purpose, int row, int pos, uint32_t block,
                    uint32_t ctr[4]) {
  ctr[0] = block;
  ctr[1] = uint32_t(row);
  ctr[2] = (uint32_t(purpose) << 28) | ((uint32_t(step) & 0xFFFu) << 16) | (uint32_t(pos) & 0xFFFFu);
  ctr[3] = uint32_t(canvas);
}

int32_t rng_randint(uint64_t seed, int canvas, int step, DrawPurpose purpose, int row, int pos,
                    int32_t n) {
  uint32_t ctr[4], out[4];
  stream_counter(canvas, step, purpose, row, pos, 0, ctr);
  philox4x32(ctr, seed, out);
  // Lemire's multiply-shift: unbiased enough for n << 2^32 (bias < n / 2^32).
  return int32_t((uint64_t(out[0]) * uint64_t(n)) >> 32);
}

int32_t rng_multinomial(uint64_t seed, int canvas, int step, int row, int pos, const float* logits,
                        int V) {
  std::vector<float> pl(size_t(V), 0.0f);
  SampleStream s{seed, canvas, step, row, pos};
  return token_stats(logits, 1.0f, pl.data(), V, &s).sample;
}

}  // namespace diffrt

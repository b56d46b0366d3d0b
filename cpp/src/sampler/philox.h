// Philox4x32-10 and the draw conversions, written once for the CPU sampler (cpp/src/sampler/) and
// the CUDA kernels (cpp/src/kernels/cuda/): both include this header so their draws cannot drift.
// Counter words of a draw address: [element block, row, purpose<<28 | step<<16 | position, canvas].
// Limits: step < 4096, position < 65536 (checked by SamplerParams / the loop).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace diffrt::philox {

// Values of diffrt::DrawPurpose (diffrt/sampler.h), as plain words for device code.
enum : uint32_t { kPurposeInit = 0, kPurposeSample = 1, kPurposeRenoise = 2 };

// Four 32-bit words of Philox4x32-10 for counter ctr and 64-bit key.
DIFFRT_HD inline void philox4x32(const uint32_t ctr[4], uint64_t key, uint32_t out[4]) {
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
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// The counter of one draw address; `block` selects the group of four words (element i >> 2).
DIFFRT_HD inline void stream_counter(int canvas, int step, uint32_t purpose, int row, int pos, uint32_t block,
                                     uint32_t ctr[4]) {
  ctr[0] = block;
  ctr[1] = uint32_t(row);
  ctr[2] = (purpose << 28) | ((uint32_t(step) & 0xFFFu) << 16) | (uint32_t(pos) & 0xFFFFu);
  ctr[3] = uint32_t(canvas);
}

// Integer in [0, n) from one word by Lemire's multiply-shift (bias < n / 2^32, fine for n << 2^32).
DIFFRT_HD inline int32_t randint_from_bits(uint32_t x, int32_t n) { return int32_t((uint64_t(x) * uint64_t(n)) >> 32); }

// Uniform int in [0, n) for one (canvas, step, purpose, row, position) address: word 0 of block 0.
DIFFRT_HD inline int32_t randint(uint64_t seed, int canvas, int step, uint32_t purpose, int row, int pos, int32_t n) {
  uint32_t ctr[4], out[4];
  stream_counter(canvas, step, purpose, row, pos, 0, ctr);
  philox4x32(ctr, seed, out);
  return randint_from_bits(out[0], n);
}

// Uniform in (0, 1) from the top 23 bits: (k + 0.5) / 2^23 is exact in fp32 and never 0 or 1.
DIFFRT_HD inline float uniform23_from_bits(uint32_t x) { return (float(x >> 9) + 0.5f) * (1.0f / 8388608.0f); }

// Uniform in (0, 1) from the top 24 bits (the device test fills; not a sampler draw).
DIFFRT_HD inline float uniform24_from_bits(uint32_t x) { return (float(x >> 8) + 0.5f) * (1.0f / 16777216.0f); }

// Exp(1) = -log(u). The device rounds the double log (CUDA's logf is not the host's); the host uses
// the f32 libm log. Both are within an ulp, so the draws agree except for keys tied to the last bit.
DIFFRT_HD inline float exp1_from_bits(uint32_t x) {
  const float u = uniform23_from_bits(x);
#ifdef __CUDA_ARCH__
  return -float(log(double(u)));
#else
  return -std::log(u);
#endif
}

}  // namespace diffrt::philox

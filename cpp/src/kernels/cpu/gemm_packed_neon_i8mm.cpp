// NEON int8 (W8A8) block kernel with SMMLA (FEAT_I8MM: -march=armv8.2-a+i8mm for this file only;
// chosen at run time by packed_kernels_neon). One SMMLA multiplies a 2 x 8 block of activations
// (two rows, 8 K values) by an 8 x 2 block of weights (two outputs) into 2 x 2 exact int32 sums:
// twice the multiply-adds of an SDOT.
//
// The packed layout holds 4 K values of an output per group, two groups 64 bytes apart; zipping
// the same 16 bytes of two consecutive groups (32-bit lanes) gives exactly SMMLA's operand for two
// outputs (8 K values each). Tile: 2 row pairs x 8 output pairs = 16 accumulators.
#include <algorithm>

#include "kernels/cpu/gemm_packed_loops.h"
#include "kernels/cpu/gemm_packed_neon.h"

namespace diffrt::kernels::cpu {
namespace {

// P row pairs; `rows` (2P - 1 or 2P) rows are real: an odd last row is paired with itself, its
// twin computed and not stored (so nothing past the activations is read).
template <int P>
void tile(const PackedMatrix& w, const int8_t* a, int64_t lda, int rows, const float* a_scale, int64_t nb, int64_t g0,
          int64_t g1, float* y, int64_t ldy) {
  const int8_t* ar[2 * P];
  for (int i = 0; i < 2 * P; ++i) ar[i] = a + std::min(i, rows - 1) * lda;
  // acc[p][2q]: rows (2p, 2p+1) x outputs (4q, 4q+1); acc[p][2q+1]: outputs (4q+2, 4q+3)
  int32x4_t acc[P][8];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[p][j] = vdupq_n_s32(0);
  const int8_t* b = w.int8_block(nb);
  // g1 - g0 is even: k_pad is a multiple of 64 (16 groups) and so is kKBlockGroups.
  for (int64_t g = g0; g < g1; g += 2) {
    int8x16_t ap[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) ap[p] = vcombine_s8(vld1_s8(ar[2 * p] + 4 * g), vld1_s8(ar[2 * p + 1] + 4 * g));
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const int32x4_t k03 = vreinterpretq_s32_s8(vld1q_s8(b + g * 64 + 16 * q));  // outputs 4q.., K 0-3
      const int32x4_t k47 = vreinterpretq_s32_s8(vld1q_s8(b + (g + 1) * 64 + 16 * q));
      const int8x16_t c01 = vreinterpretq_s8_s32(vzip1q_s32(k03, k47));
      const int8x16_t c23 = vreinterpretq_s8_s32(vzip2q_s32(k03, k47));
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        acc[p][2 * q] = vmmlaq_s32(acc[p][2 * q], ap[p], c01);
        acc[p][2 * q + 1] = vmmlaq_s32(acc[p][2 * q + 1], ap[p], c23);
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    int32x4_t r0[4], r1[4];  // rows 2p and 2p+1, outputs 4q..4q+3
    for (int q = 0; q < 4; ++q) {
      const int64x2_t lo = vreinterpretq_s64_s32(acc[p][2 * q]), hi = vreinterpretq_s64_s32(acc[p][2 * q + 1]);
      r0[q] = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
      r1[q] = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
    }
    neon_int8_store(w, nb, r0, a_scale[2 * p], y + 2 * p * ldy, g0 > 0);
    if (2 * p + 1 < rows) neon_int8_store(w, nb, r1, a_scale[2 * p + 1], y + (2 * p + 1) * ldy, g0 > 0);
  }
}

}  // namespace

void int8_block_neon_i8mm(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* s, int64_t nb0,
                          int64_t nb1, float* y, int64_t ldy) {
  // Row tiles of up to 4 rows run as 1 or 2 row pairs.
  for_tiles<4>(M, w.k_pad / 4, nb0, nb1, [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
    constexpr int rows = decltype(R)::value;
    tile<(rows + 1) / 2>(w, a + m * lda, lda, rows, s + m, nb, g0, g1, y + m * ldy, ldy);
  });
}

}  // namespace diffrt::kernels::cpu

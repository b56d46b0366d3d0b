// NEON int8 (W8A8) block kernel with SDOT (FEAT_DotProd: -march=armv8.2-a+dotprod for this file
// only; chosen at run time by packed_kernels_neon). One SDOT multiplies 16 outputs' worth of a K
// group — 4 outputs x 4 K values — by one row's 4 activations and adds the exact int32 sums.
//
// Tile: 4 rows x 16 outputs = 16 accumulators. Each row's activations for 4 K groups are one
// 16-byte load, used by lane (SDOT by element), so the inner step loads 4 weight vectors and no
// activations.
#include <algorithm>

#include "kernels/cpu/gemm_packed_loops.h"
#include "kernels/cpu/gemm_packed_neon.h"

namespace diffrt::kernels::cpu {
namespace {

constexpr int kMR = 4;

template <int MR, int U>
inline void step(int32x4_t (&acc)[MR][4], const int8x16_t (&av)[MR], const int8_t* b) {
  int8x16_t bq[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) bq[q] = vld1q_s8(b + 16 * q);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) acc[i][q] = vdotq_laneq_s32(acc[i][q], bq[q], av[i], U);
}

template <int MR>
void tile(const PackedMatrix& w, const int8_t* a, int64_t lda, const float* a_scale, int64_t nb, int64_t g0, int64_t g1,
          float* y, int64_t ldy) {
  int32x4_t acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = vdupq_n_s32(0);
  const int8_t* b = w.int8_block(nb);
  // g1 - g0 is a multiple of 4: k_pad is a multiple of 64 (16 groups) and so is kKBlockGroups.
  for (int64_t g = g0; g < g1; g += 4) {
    int8x16_t av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = vld1q_s8(a + i * lda + 4 * g);
    step<MR, 0>(acc, av, b + g * 64);
    step<MR, 1>(acc, av, b + (g + 1) * 64);
    step<MR, 2>(acc, av, b + (g + 2) * 64);
    step<MR, 3>(acc, av, b + (g + 3) * 64);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) neon_int8_store(w, nb, acc[i], a_scale[i], y + i * ldy, g0 > 0);
}

}  // namespace

void int8_block_neon_dotprod(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* s,
                             int64_t nb0, int64_t nb1, float* y, int64_t ldy) {
  for_tiles<kMR>(M, w.k_pad / 4, nb0, nb1, [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
    tile<decltype(R)::value>(w, a + m * lda, lda, s + m, nb, g0, g1, y + m * ldy, ldy);
  });
}

}  // namespace diffrt::kernels::cpu

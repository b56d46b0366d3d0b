// NEON packed-GEMM kernels (ARM64), on the same packed layout as the x86 kernels (pack.h).
//
// bf16: both operands widened to f32 (exact: a bf16 is the top half of an f32) and multiplied with
// FMA, as on AVX2. A task widens its rows' activations for one K block once (into a per-thread
// buffer); the weights of a K group (16 outputs x 2) are four 16-byte vectors, widened in registers
// by a shift and a mask. (BFDOT/BFMMLA would be faster where FEAT_BF16 exists, but round
// differently from every other path; not used.)
//
// int8 (W8A8, signed activations): SMMLA where the CPU has FEAT_I8MM, SDOT where it has
// FEAT_DotProd (gemm_packed_neon_{i8mm,dotprod}.cpp), else SMULL + SADALP here: the int8 x int8
// products are exact in int16 and pairwise added into int32, so every variant's sums are exact and
// equal to the other paths'.
#include "kernels/cpu/gemm_packed_neon.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kernels/cpu/gemm_packed_loops.h"

namespace diffrt::kernels::cpu {
namespace {

constexpr int kMR = 4;
constexpr int64_t kBf16KBlock = kKBlockGroups * 2;  // bf16 values of one K block

// af: MR rows of f32 activations for groups [g0, g1), row stride kBf16KBlock, indexed from g0.
template <int MR>
void bf16_tile(const PackedMatrix& w, const float* af, int64_t nb, int64_t g0, int64_t g1, float* y, int64_t ldy) {
  float32x4_t acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = vdupq_n_f32(0.f);
  const uint32x4_t hi_mask = vdupq_n_u32(0xffff0000u);
  const uint16_t* b = w.bf16_block(nb, g0);
  for (int64_t g = 0; g < g1 - g0; ++g) {
    // u32 lane j of vector q: (W[4q + j][2g], W[4q + j][2g + 1]), the first in the low half
    float32x4_t e[4], o[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const uint32x4_t v = vreinterpretq_u32_u16(vld1q_u16(b + g * 32 + 8 * q));
      e[q] = vreinterpretq_f32_u32(vshlq_n_u32(v, 16));
      o[q] = vreinterpretq_f32_u32(vandq_u32(v, hi_mask));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const float32x2_t a = vld1_f32(af + i * kBf16KBlock + 2 * g);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        acc[i][q] = vfmaq_lane_f32(acc[i][q], e[q], a, 0);
        acc[i][q] = vfmaq_lane_f32(acc[i][q], o[q], a, 1);
      }
    }
  }
  const int64_t n0 = nb * 16;
  const int nvalid = int(std::min<int64_t>(16, w.n - n0));
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (!w.scale.empty())
      for (int q = 0; q < 4; ++q) acc[i][q] = vmulq_f32(acc[i][q], vld1q_f32(w.scale.data() + n0 + 4 * q));
    neon_store16(y + i * ldy + n0, acc[i], nvalid, g0 > 0);
  }
}

// Rows [m, m + rows) of the bf16 activations, groups [g0, g1), widened into af.
void widen_rows(const uint16_t* a, int64_t lda, int rows, int64_t g0, int64_t g1, float* af) {
  const int64_t n = (g1 - g0) * 2;
  for (int i = 0; i < rows; ++i) {
    const uint16_t* src = a + i * lda + g0 * 2;
    float* dst = af + i * kBf16KBlock;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
      const uint16x8_t v = vld1q_u16(src + k);
      vst1q_f32(dst + k, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16)));
      vst1q_f32(dst + k + 4, vreinterpretq_f32_u32(vshll_high_n_u16(v, 16)));
    }
    for (; k < n; ++k) dst[k] = bf16_to_f32(src[k]);
  }
}

void bf16_block(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1, float* y,
                int64_t ldy) {
  alignas(16) thread_local float af[kMR * kBf16KBlock];
  for_tiles_rows_outer<kMR>(
      M, w.k_pad / 2, nb0, nb1,
      [&](int64_t m, int rows, int64_t g0, int64_t g1) { widen_rows(a + m * lda, lda, rows, g0, g1, af); },
      [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
        bf16_tile<decltype(R)::value>(w, af, nb, g0, g1, y + m * ldy, ldy);
      });
}

// MR rows x 16 outputs with SMULL/SADALP: acc[i][2q] sums outputs (4q, 4q+1) and acc[i][2q+1]
// outputs (4q+2, 4q+3), two partial sums each; 8 accumulators a row, so MR = 2.
template <int MR>
void int8_tile(const PackedMatrix& w, const int8_t* a, int64_t lda, const float* a_scale, int64_t nb, int64_t g0,
               int64_t g1, float* y, int64_t ldy) {
  int32x4_t acc[MR][8];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[i][j] = vdupq_n_s32(0);
  const int8_t* b = w.int8_block(nb);
  for (int64_t g = g0; g < g1; ++g) {
    int8x16_t bq[4];  // outputs 4q..4q+3, 4 K values each
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) bq[q] = vld1q_s8(b + g * 64 + 16 * q);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t quad;
      std::memcpy(&quad, a + i * lda + 4 * g, 4);
      const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(quad));
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        acc[i][2 * q] = vpadalq_s16(acc[i][2 * q], vmull_s8(vget_low_s8(bq[q]), vget_low_s8(av)));
        acc[i][2 * q + 1] = vpadalq_s16(acc[i][2 * q + 1], vmull_high_s8(bq[q], av));
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    int32x4_t s[4];
    for (int q = 0; q < 4; ++q) s[q] = vpaddq_s32(acc[i][2 * q], acc[i][2 * q + 1]);
    neon_int8_store(w, nb, s, a_scale[i], y + i * ldy, g0 > 0);
  }
}

void int8_block(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* s, int64_t nb0,
                int64_t nb1, float* y, int64_t ldy) {
  for_tiles<2>(M, w.k_pad / 4, nb0, nb1, [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
    int8_tile<decltype(R)::value>(w, a + m * lda, lda, s + m, nb, g0, g1, y + m * ldy, ldy);
  });
}

// Round to nearest even, as f32_to_bf16 (core/dtype.h): NaN stays a (quiet) NaN.
void to_bf16(const float* x, int64_t k, int64_t k_pad, uint16_t* out) {
  const uint32x4_t one = vdupq_n_u32(1), bias = vdupq_n_u32(0x7fff), quiet = vdupq_n_u32(0x400000);
  auto round4 = [&](float32x4_t v) {
    const uint32x4_t u = vreinterpretq_u32_f32(v);
    const uint32x4_t r = vaddq_u32(u, vaddq_u32(bias, vandq_u32(vshrq_n_u32(u, 16), one)));
    return vshrn_n_u32(vbslq_u32(vceqq_f32(v, v), r, vorrq_u32(u, quiet)), 16);  // v != v: NaN
  };
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) vst1q_u16(out + i, vcombine_u16(round4(vld1q_f32(x + i)), round4(vld1q_f32(x + i + 4))));
  for (; i < k; ++i) out[i] = f32_to_bf16(x[i]);
  std::fill(out + k, out + k_pad, uint16_t(0));
}

void quant(const float* x, int64_t k, int64_t k_pad, bool shift, int8_t* out, float* scale) {
  float32x4_t vmax = vdupq_n_f32(0.f);
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) vmax = vmaxq_f32(vmax, vabsq_f32(vld1q_f32(x + i)));
  float amax = vmaxvq_f32(vmax);
  for (; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
  *scale = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const int off = shift ? 128 : 0;
  const int32x4_t lo = vdupq_n_s32(-127), hi = vdupq_n_s32(127);
  // q + 128 as a byte is q with its top bit flipped (|q| <= 127)
  const int8x8_t flip = vdup_n_s8(shift ? int8_t(-128) : 0);
  auto q4 = [&](const float* p) {  // FCVTNS: round to nearest, ties to even
    return vqmovn_s32(vminq_s32(vmaxq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p), inv)), lo), hi));
  };
  for (i = 0; i + 8 <= k; i += 8) vst1_s8(out + i, veor_s8(vqmovn_s16(vcombine_s16(q4(x + i), q4(x + i + 4))), flip));
  for (; i < k; ++i) {
    int q = int(std::nearbyint(x[i] * inv));
    out[i] = int8_t(uint8_t(std::min(127, std::max(-127, q)) + off));
  }
  std::fill(out + k, out + k_pad, int8_t(uint8_t(off)));
}

}  // namespace

PackedKernels packed_kernels_neon() {
  const CpuFeatures& f = cpu_features();
  const Int8BlockFn int8 = f.i8mm ? int8_block_neon_i8mm : f.dotprod ? int8_block_neon_dotprod : int8_block;
  return {to_bf16, quant, bf16_block, int8, false};
}

}  // namespace diffrt::kernels::cpu

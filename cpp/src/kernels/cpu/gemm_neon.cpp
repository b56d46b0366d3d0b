// NEON f32 GEMM panel kernel (ARM64): MR x 16 register tile, MR = 4. Each row's activations are
// loaded 4 K values at a time and used by lane (FMLA by element), so a K step loads only the 4
// vectors of the panel row: 16 accumulators + 4 activation vectors + 4 panel vectors. (GCC 12's
// inner loop: 64 FMLA in 86 instructions, nothing on the stack; with MR = 5 it spilled and
// reloaded, with MR = 6 and broadcast loads it stored two accumulators every K step.)
#include <arm_neon.h>

#include "core/dtype.h"
#include "diffrt/gguf.h"
#include "kernels/cpu/gemm_panel.h"

namespace diffrt::kernels::cpu {
namespace {

template <int MR, int U>
inline void step(float32x4_t (&c)[MR][4], const float32x4_t (&a)[MR], const float* b) {
  const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c[i][0] = vfmaq_laneq_f32(c[i][0], b0, a[i], U);
    c[i][1] = vfmaq_laneq_f32(c[i][1], b1, a[i], U);
    c[i][2] = vfmaq_laneq_f32(c[i][2], b2, a[i], U);
    c[i][3] = vfmaq_laneq_f32(c[i][3], b3, a[i], U);
  }
}

template <int MR>
inline void tile(int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid, bool acc) {
  // Rows unrolled everywhere, as in gemm_avx2.cpp: a rolled loop lets GCC keep the accumulators in
  // memory as well.
  float32x4_t c[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = vdupq_n_f32(0.f);
  int k = 0;
  for (; k + 4 <= kc; k += 4) {
    float32x4_t a[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a[i] = vld1q_f32(A + i * lda + k);
    step<MR, 0>(c, a, Bp + k * 16);
    step<MR, 1>(c, a, Bp + (k + 1) * 16);
    step<MR, 2>(c, a, Bp + (k + 2) * 16);
    step<MR, 3>(c, a, Bp + (k + 3) * 16);
  }
  for (; k < kc; ++k) {  // kc not a multiple of 4 (the last K block of an odd K)
    float32x4_t a[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a[i] = vld1q_dup_f32(A + i * lda + k);
    step<MR, 0>(c, a, Bp + k * 16);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* y = C + i * ldc;
    if (nvalid == 16) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) vst1q_f32(y + 4 * j, acc ? vaddq_f32(c[i][j], vld1q_f32(y + 4 * j)) : c[i][j]);
    } else {
      float t[16];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) vst1q_f32(t + 4 * j, c[i][j]);
      for (int j = 0; j < nvalid; ++j) y[j] = acc ? y[j] + t[j] : t[j];
    }
  }
}

// r[i] = row i of a 4 x 4 block -> r[c] = column c.
inline void transpose4(float32x4_t r[4]) {
  const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);  // (r0c0 r1c0 r0c2 r1c2), (.. c1 .. c3)
  const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
  auto lo = [](float32x4_t a, float32x4_t b) {
    return vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
  };
  auto hi = [](float32x4_t a, float32x4_t b) {
    return vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
  };
  r[0] = lo(t0, t2);
  r[1] = lo(t1, t3);
  r[2] = hi(t0, t2);
  r[3] = hi(t1, t3);
}

// 4 consecutive elements of a stored row as f32 (T: F32, BF16 or F16; the F16 conversion, FCVTL,
// is in every AArch64 CPU), and the same for one element.
template <GGMLType T>
inline float32x4_t load4(const uint8_t* row, int64_t k) {
  if constexpr (T == GGMLType::F32) return vld1q_f32(reinterpret_cast<const float*>(row) + k);
  const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row) + k);
  if constexpr (T == GGMLType::BF16) return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  return vcvt_f32_f16(vreinterpret_f16_u16(h));
}
template <GGMLType T>
inline float load1(const uint8_t* row, int64_t k) {
  if constexpr (T == GGMLType::F32) return reinterpret_cast<const float*>(row)[k];
  const uint16_t h = reinterpret_cast<const uint16_t*>(row)[k];
  return T == GGMLType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

template <GGMLType T>
void pack_nk(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  auto row = [&](int j) { return base + (n0 + j) * row_bytes; };
  for (int j0 = 0; j0 < 16; j0 += 4) {
    int c0 = 0;
    for (; c0 + 4 <= kc; c0 += 4) {
      float32x4_t r[4];
      for (int i = 0; i < 4; ++i) r[i] = j0 + i < nvalid ? load4<T>(row(j0 + i), k0 + c0) : vdupq_n_f32(0.f);
      transpose4(r);  // r[c] = column c0 + c of the 4 rows
      for (int c = 0; c < 4; ++c) vst1q_f32(bp + (c0 + c) * 16 + j0, r[c]);
    }
    for (; c0 < kc; ++c0)  // the last K columns of W (kc not a multiple of 4)
      for (int i = 0; i < 4; ++i) bp[c0 * 16 + j0 + i] = j0 + i < nvalid ? load1<T>(row(j0 + i), k0 + c0) : 0.f;
  }
}

}  // namespace

void pack_f32_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::F32>(base, row_bytes, n0, nvalid, k0, kc, bp);
}
void pack_bf16_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::BF16>(base, row_bytes, n0, nvalid, k0, kc, bp);
}
void pack_f16_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::F16>(base, row_bytes, n0, nvalid, k0, kc, bp);
}

void gemm_panel_neon(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid,
                     bool accumulate) {
  constexpr int MR = 4;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate);
  switch (M - m) {
    case 3: tile<3>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 2: tile<2>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 1: tile<1>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    default: break;
  }
}

}  // namespace diffrt::kernels::cpu

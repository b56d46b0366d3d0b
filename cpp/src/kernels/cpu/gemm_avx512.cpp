// AVX-512 f32 GEMM panel kernel: MR x 32 register tile (MR = 8: 16 accumulators).
#include <immintrin.h>

#include "kernels/cpu/gemm_panel.h"

namespace diffrt::kernels::cpu {
namespace {

template <int MR>
inline void tile(int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, __mmask16 m0,
                 __mmask16 m1, bool acc) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(Bp + k * 32);
    __m512 b1 = _mm512_load_ps(Bp + k * 32 + 16);
    for (int i = 0; i < MR; ++i) {
      __m512 a = _mm512_set1_ps(A[i * lda + k]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = C + i * ldc;
    if (acc) {
      c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, c));
      c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, c0[i]);
    _mm512_mask_storeu_ps(c + 16, m1, c1[i]);
  }
}

}  // namespace

void gemm_panel_avx512(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                       int nvalid, bool accumulate) {
  __mmask16 m0 = nvalid >= 16 ? __mmask16(0xffff) : __mmask16((1u << nvalid) - 1);
  __mmask16 m1 = nvalid >= 32 ? __mmask16(0xffff) : nvalid <= 16 ? __mmask16(0) : __mmask16((1u << (nvalid - 16)) - 1);
  constexpr int MR = 8;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate);
  switch (M - m) {
    case 7: tile<7>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 6: tile<6>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 5: tile<5>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 4: tile<4>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 3: tile<3>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 2: tile<2>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    case 1: tile<1>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, m0, m1, accumulate); break;
    default: break;
  }
}

}  // namespace diffrt::kernels::cpu

namespace diffrt::kernels::cpu {
namespace {

// In-register transpose of a 16 x 16 block of floats (r[i] = row i in, column i out).
// GCC 12 warns about an undefined operand inside its own unpack intrinsics (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#pragma GCC diagnostic pop

}  // namespace

void pack_f32_nk_avx512(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  for (int j0 = 0; j0 < 32; j0 += 16) {
    for (int c0 = 0; c0 < kc; c0 += 16) {
      const int cols = kc - c0 < 16 ? kc - c0 : 16;
      const __mmask16 m = cols == 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const int j = j0 + i;
        r[i] = j < nvalid
                   ? _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(base + (n0 + j) * row_bytes) + k0 + c0)
                   : _mm512_setzero_ps();
      }
      transpose16(r);  // r[c] = column c0 + c of the 16 rows
      for (int c = 0; c < cols; ++c) _mm512_store_ps(bp + (c0 + c) * 32 + j0, r[c]);
    }
  }
}

}  // namespace diffrt::kernels::cpu

// AVX2/FMA f32 GEMM panel kernel: MR x 16 register tile (MR = 6: 12 accumulators).
#include <immintrin.h>

#include "kernels/cpu/gemm_panel.h"

namespace diffrt::kernels::cpu {
namespace {

template <int MR>
inline void tile(int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid, bool acc) {
  __m256 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_load_ps(Bp + k * 16);
    __m256 b1 = _mm256_load_ps(Bp + k * 16 + 8);
    for (int i = 0; i < MR; ++i) {
      __m256 a = _mm256_broadcast_ss(A + i * lda + k);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = C + i * ldc;
    if (nvalid == 16) {
      if (acc) {
        c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(c));
        c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, c0[i]);
      _mm256_storeu_ps(c + 8, c1[i]);
    } else {
      alignas(32) float t[16];
      _mm256_store_ps(t, c0[i]);
      _mm256_store_ps(t + 8, c1[i]);
      for (int j = 0; j < nvalid; ++j) c[j] = acc ? c[j] + t[j] : t[j];
    }
  }
}

}  // namespace

void gemm_panel_avx2(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                     int nvalid, bool accumulate) {
  constexpr int MR = 6;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate);
  switch (M - m) {
    case 5: tile<5>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 4: tile<4>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 3: tile<3>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 2: tile<2>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    case 1: tile<1>(kc, A + m * lda, lda, Bp, C + m * ldc, ldc, nvalid, accumulate); break;
    default: break;
  }
}

}  // namespace diffrt::kernels::cpu

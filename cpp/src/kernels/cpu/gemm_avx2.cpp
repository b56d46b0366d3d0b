// AVX2/FMA f32 GEMM panel kernel: MR x 16 register tile (MR = 6: 12 accumulators).
#include <immintrin.h>

#include "core/dtype.h"
#include "diffrt/gguf.h"
#include "kernels/cpu/gemm_panel.h"

namespace diffrt::kernels::cpu {
namespace {

template <int MR>
inline void tile(int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid, bool acc) {
  // Every loop over the MR rows is unrolled: a rolled epilogue loop makes GCC keep the
  // accumulators in memory as well, storing them on every k step (measured 27% of FMA peak).
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_load_ps(Bp + k * 16);
    __m256 b1 = _mm256_load_ps(Bp + k * 16 + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 a = _mm256_broadcast_ss(A + i * lda + k);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
#pragma GCC unroll 8
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

// r[i] = row i of an 8 x 8 block -> r[c] = column c.
inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

}  // namespace

namespace {

// 8 consecutive elements of a stored row as f32 (exact for every type here).
template <GGMLType T>
inline __m256 load8(const uint8_t* row, int64_t e) {
  if constexpr (T == GGMLType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + e);
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + e));
    if constexpr (T == GGMLType::F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));  // bf16: the top half
  }
}

// Elements [e0, e0 + count) of a stored row as f32 (count < 8: a panel's last K columns).
void decode_row_tail(GGMLType t, const uint8_t* row, int64_t e0, int count, float* out) {
  for (int i = 0; i < count; ++i) {
    const int64_t e = e0 + i;
    if (t == GGMLType::F32) {
      out[i] = reinterpret_cast<const float*>(row)[e];
    } else {
      const uint16_t h = reinterpret_cast<const uint16_t*>(row)[e];
      out[i] = t == GGMLType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
}

template <GGMLType T>
void pack_nk(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  for (int j0 = 0; j0 < 16; j0 += 8) {
    int c0 = 0;
    for (; c0 + 8 <= kc; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        const int j = j0 + i;
        r[i] = j < nvalid ? load8<T>(base + (n0 + j) * row_bytes, k0 + c0) : _mm256_setzero_ps();
      }
      transpose8(r);  // r[c] = column c0 + c of the 8 rows
      for (int c = 0; c < 8; ++c) _mm256_store_ps(bp + (c0 + c) * 16 + j0, r[c]);
    }
    if (c0 < kc) {  // the last K columns of W (kc not a multiple of 8)
      float tail[8];
      for (int i = 0; i < 8; ++i) {
        const int j = j0 + i;
        if (j < nvalid) decode_row_tail(T, base + (n0 + j) * row_bytes, k0 + c0, kc - c0, tail);
        for (int c = c0; c < kc; ++c) bp[c * 16 + j] = j < nvalid ? tail[c - c0] : 0.f;
      }
    }
  }
}

}  // namespace

void pack_f32_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::F32>(base, row_bytes, n0, nvalid, k0, kc, bp);
}
void pack_bf16_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::BF16>(base, row_bytes, n0, nvalid, k0, kc, bp);
}
void pack_f16_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp) {
  pack_nk<GGMLType::F16>(base, row_bytes, n0, nvalid, k0, kc, bp);
}

void gemm_panel_avx2(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid,
                     bool accumulate) {
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

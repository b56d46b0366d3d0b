// AVX-512 packed-GEMM kernels: bf16 with vdpbf16ps (AVX512_BF16), int8 with vpdpbusd (AVX512_VNNI).
//
// Register tile MR rows x NB blocks of 16 outputs (at most 6 x 4: 24 accumulators + 4 weight
// vectors + 1 broadcast of 32 zmm). Per K group the weights of 16 outputs are one 64-byte load and
// each row's activation pair/quad is a 32-bit broadcast.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm_packed_kernels.h"

// GCC 12 reports its own _mm512_undefined_* helpers as "maybe uninitialized" here; they are not.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace diffrt::kernels::cpu {
namespace {

constexpr int kMR = 6, kNB = 4;

// acc += u8(a) · s8(b) by quads. GCC 12's own vpdpbusd pattern keeps the accumulator in zmm0-15,
// which cannot hold this tile's 24 accumulators (it spills them around every instruction).
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

__mmask16 cols_mask(const PackedMatrix& w, int64_t nb) {
  int64_t v = std::min<int64_t>(16, std::max<int64_t>(0, w.n - nb * 16));
  return __mmask16((1u << v) - 1);
}

template <int MR, int NB>
void bf16_tile(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t nb, int64_t g0, int64_t g1, float* y,
               int64_t ldy) {
  __m512 acc[MR][NB];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  const uint16_t* b[NB];
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) b[j] = w.bf16_block(nb + j);
  for (int64_t g = g0; g < g1; ++g) {
    __m512bh bv[NB];
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) bv[j] = (__m512bh)_mm512_load_si512(b[j] + g * 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * lda + 2 * g, 4);
      __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    __mmask16 mk = cols_mask(w, nb + j);
    __m512 s = w.scale.empty() ? _mm512_set1_ps(1.f) : _mm512_loadu_ps(w.scale.data() + (nb + j) * 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      float* yi = y + i * ldy + (nb + j) * 16;
      __m512 v = _mm512_mul_ps(acc[i][j], s);
      if (g0 > 0) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yi));  // a later K block
      _mm512_mask_storeu_ps(yi, mk, v);
    }
  }
}

template <int MR, int NB>
void int8_tile(const PackedMatrix& w, const int8_t* a, int64_t lda, const float* a_scale, int64_t nb, int64_t g0,
               int64_t g1, float* y, int64_t ldy) {
  __m512i acc[MR][NB];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_si512();
  const int8_t* b[NB];
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) b[j] = w.int8_block(nb + j);
  for (int64_t g = g0; g < g1; ++g) {
    __m512i bv[NB];
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) bv[j] = _mm512_load_si512(b[j] + g * 64);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t quad;
      std::memcpy(&quad, a + i * lda + 4 * g, 4);
      __m512i av = _mm512_set1_epi32(quad);  // u8 = q + 128
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[i][j] = dpbusd(acc[i][j], av, bv[j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    int64_t n0 = (nb + j) * 16;
    __mmask16 mk = cols_mask(w, nb + j);
    // Σ (q + 128)·b = Σ q·b + 128·Σ b, taken off once, with the first K block
    __m512i corr = g0 > 0 ? _mm512_setzero_si512() : _mm512_slli_epi32(_mm512_loadu_si512(w.row_sum.data() + n0), 7);
    __m512 ws = _mm512_loadu_ps(w.scale.data() + n0);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][j], corr));
      v = _mm512_mul_ps(v, _mm512_mul_ps(ws, _mm512_set1_ps(a_scale[i])));
      if (g0 > 0) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, y + i * ldy + n0));
      _mm512_mask_storeu_ps(y + i * ldy + n0, mk, v);
    }
  }
}

// Dispatch the (rows, blocks) remainder to the matching template instance.
template <int MR>
void bf16_rows(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t nb, int nbw, int64_t g0, int64_t g1,
               float* y, int64_t ldy) {
  switch (nbw) {
    case 4: return bf16_tile<MR, 4>(w, a, lda, nb, g0, g1, y, ldy);
    case 3: return bf16_tile<MR, 3>(w, a, lda, nb, g0, g1, y, ldy);
    case 2: return bf16_tile<MR, 2>(w, a, lda, nb, g0, g1, y, ldy);
    default: return bf16_tile<MR, 1>(w, a, lda, nb, g0, g1, y, ldy);
  }
}

template <int MR>
void int8_rows(const PackedMatrix& w, const int8_t* a, int64_t lda, const float* s, int64_t nb, int nbw, int64_t g0,
               int64_t g1, float* y, int64_t ldy) {
  switch (nbw) {
    case 4: return int8_tile<MR, 4>(w, a, lda, s, nb, g0, g1, y, ldy);
    case 3: return int8_tile<MR, 3>(w, a, lda, s, nb, g0, g1, y, ldy);
    case 2: return int8_tile<MR, 2>(w, a, lda, s, nb, g0, g1, y, ldy);
    default: return int8_tile<MR, 1>(w, a, lda, s, nb, g0, g1, y, ldy);
  }
}

void bf16_block(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1, float* y,
                int64_t ldy) {
  const int64_t groups = w.k_pad / 2;
  for (int64_t nb = nb0; nb < nb1; nb += kNB) {
    int nbw = int(std::min<int64_t>(kNB, nb1 - nb));
    for (int64_t g0 = 0; g0 < groups; g0 += kKBlockGroups) {
      const int64_t g1 = std::min(groups, g0 + kKBlockGroups);
      for (int64_t m = 0; m < M; m += kMR) {
        const uint16_t* am = a + m * lda;
        float* ym = y + m * ldy;
        switch (std::min<int64_t>(kMR, M - m)) {
          case 6: bf16_rows<6>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
          case 5: bf16_rows<5>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
          case 4: bf16_rows<4>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
          case 3: bf16_rows<3>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
          case 2: bf16_rows<2>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
          default: bf16_rows<1>(w, am, lda, nb, nbw, g0, g1, ym, ldy); break;
        }
      }
    }
  }
}

void int8_block(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* s, int64_t nb0,
                int64_t nb1, float* y, int64_t ldy) {
  const int64_t groups = w.k_pad / 4;
  for (int64_t nb = nb0; nb < nb1; nb += kNB) {
    int nbw = int(std::min<int64_t>(kNB, nb1 - nb));
    for (int64_t g0 = 0; g0 < groups; g0 += kKBlockGroups) {
      const int64_t g1 = std::min(groups, g0 + kKBlockGroups);
      for (int64_t m = 0; m < M; m += kMR) {
        const int8_t* am = a + m * lda;
        float* ym = y + m * ldy;
        switch (std::min<int64_t>(kMR, M - m)) {
          case 6: int8_rows<6>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
          case 5: int8_rows<5>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
          case 4: int8_rows<4>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
          case 3: int8_rows<3>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
          case 2: int8_rows<2>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
          default: int8_rows<1>(w, am, lda, s + m, nb, nbw, g0, g1, ym, ldy); break;
        }
      }
    }
  }
}

void to_bf16(const float* x, int64_t k, int64_t k_pad, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= k; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  if (i < k) {
    __mmask16 mk = __mmask16((1u << (k - i)) - 1);
    __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, x + i));
    _mm256_mask_storeu_epi16(out + i, mk, v);
    i = k;
  }
  std::fill(out + k, out + k_pad, uint16_t(0));
}

void quant(const float* x, int64_t k, int64_t k_pad, bool shift, int8_t* out, float* scale) {
  __m512 amax = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  if (i < k) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(__mmask16((1u << (k - i)) - 1), x + i)));
  float m = _mm512_reduce_max_ps(amax);
  *scale = m / 127.f;
  __m512 inv = _mm512_set1_ps(m > 0.f ? 127.f / m : 0.f);
  __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), off = _mm512_set1_epi32(shift ? 128 : 0);
  for (i = 0; i < k; i += 16) {
    __mmask16 mk = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + i), inv));  // round to nearest even
    q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
    _mm_mask_storeu_epi8(out + i, mk, _mm512_cvtepi32_epi8(q));
  }
  std::fill(out + k, out + k_pad, int8_t(uint8_t(shift ? 128 : 0)));
}

}  // namespace

PackedKernels packed_kernels_avx512() { return {to_bf16, quant, bf16_block, int8_block, true}; }

// The AMX file reuses the AVX-512 activation conversions.
ToBf16Fn avx512_to_bf16() { return to_bf16; }
QuantFn avx512_quant() { return quant; }

}  // namespace diffrt::kernels::cpu

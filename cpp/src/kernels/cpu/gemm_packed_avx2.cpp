// AVX2/FMA packed-GEMM kernels for CPUs without AVX-512 (Zen 2/3, Intel client chips since Alder
// Lake), on the same packed layout as the AVX-512 and AMX kernels (pack.h).
//
// bf16: AVX2 has no bf16 dot product, so both operands are widened to f32 (exact: a bf16 is the top
// half of an f32) and multiplied with FMA. A task widens its rows' activations for one K block once
// (into a per-thread buffer), so the tile's inner loop is two broadcasts per row; the weights of a
// K group (16 outputs x 2) are one 64-byte line, widened in registers by a shift and a mask.
//
// int8 (W8A8): vpmaddubsw multiplies u8 x s8, so the activations stay signed and the sign is moved
// onto the weights (|a| x sign(b, a)); pair sums are at most 2·127·127 = 32258, so the int16 step
// never saturates and the int32 sums are exact, as on the other paths.
//
// Register tile: 4 rows x 16 outputs (8 accumulators, 4 widened weight vectors or 2 int8 ones).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "kernels/cpu/gemm_packed_kernels.h"
#include "kernels/cpu/gemm_packed_loops.h"

namespace diffrt::kernels::cpu {
namespace {

constexpr int kMR = 4;
constexpr int64_t kBf16KBlock = kKBlockGroups * 2;  // bf16 values of one K block

// y[i][0:nvalid] = v (+ y if accumulate); the last 16-column block of W may be partial.
inline void store16(float* y, __m256 lo, __m256 hi, int nvalid, bool accumulate) {
  if (nvalid == 16) {
    if (accumulate) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(y));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(y + 8));
    }
    _mm256_storeu_ps(y, lo);
    _mm256_storeu_ps(y + 8, hi);
    return;
  }
  alignas(32) float t[16];
  _mm256_store_ps(t, lo);
  _mm256_store_ps(t + 8, hi);
  for (int j = 0; j < nvalid; ++j) y[j] = accumulate ? y[j] + t[j] : t[j];
}

// af: MR rows of f32 activations for groups [g0, g1), row stride kBf16KBlock, indexed from g0.
template <int MR>
void bf16_tile(const PackedMatrix& w, const float* af, int64_t nb, int64_t g0, int64_t g1, float* y, int64_t ldy) {
  __m256 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const __m256i hi_mask = _mm256_set1_epi32(int32_t(0xffff0000u));
  const uint16_t* b = w.bf16_block(nb, g0);
  for (int64_t g = 0; g < g1 - g0; ++g) {
    // lanes of b: (W[n][2g], W[n][2g+1]) for n = 0..7 and 8..15 of the block
    __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 32));
    __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 32 + 16));
    __m256 e0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), o0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask));
    __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), o1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m256 ae = _mm256_broadcast_ss(af + i * kBf16KBlock + 2 * g);
      __m256 ao = _mm256_broadcast_ss(af + i * kBf16KBlock + 2 * g + 1);
      acc[i][0] = _mm256_fmadd_ps(ae, e0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ae, e1, acc[i][1]);
      acc[i][0] = _mm256_fmadd_ps(ao, o0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ao, o1, acc[i][1]);
    }
  }
  const int64_t n0 = nb * 16;
  const int nvalid = int(std::min<int64_t>(16, w.n - n0));
  const __m256 s0 = w.scale.empty() ? _mm256_set1_ps(1.f) : _mm256_loadu_ps(w.scale.data() + n0);
  const __m256 s1 = w.scale.empty() ? _mm256_set1_ps(1.f) : _mm256_loadu_ps(w.scale.data() + n0 + 8);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
    store16(y + i * ldy + n0, _mm256_mul_ps(acc[i][0], s0), _mm256_mul_ps(acc[i][1], s1), nvalid, g0 > 0);
}

template <int MR>
void int8_tile(const PackedMatrix& w, const int8_t* a, int64_t lda, const float* a_scale, int64_t nb, int64_t g0,
               int64_t g1, float* y, int64_t ldy) {
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* b = w.int8_block(nb);
  for (int64_t g = g0; g < g1; ++g) {
    __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 64));
    __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 64 + 32));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t quad;
      std::memcpy(&quad, a + i * lda + 4 * g, 4);
      __m256i av = _mm256_set1_epi32(quad);
      __m256i au = _mm256_abs_epi8(av);
      __m256i p0 = _mm256_maddubs_epi16(au, _mm256_sign_epi8(b0, av));
      __m256i p1 = _mm256_maddubs_epi16(au, _mm256_sign_epi8(b1, av));
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones));
    }
  }
  const int64_t n0 = nb * 16;
  const int nvalid = int(std::min<int64_t>(16, w.n - n0));
  const __m256 s0 = _mm256_loadu_ps(w.scale.data() + n0), s1 = _mm256_loadu_ps(w.scale.data() + n0 + 8);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m256 as = _mm256_set1_ps(a_scale[i]);
    __m256 lo = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][0]), _mm256_mul_ps(s0, as));
    __m256 hi = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][1]), _mm256_mul_ps(s1, as));
    store16(y + i * ldy + n0, lo, hi, nvalid, g0 > 0);
  }
}

// Rows [m, m + rows) of the bf16 activations, groups [g0, g1), widened into af (zero past the
// real rows, so a short tile's extra rows are never read: the tile is instantiated for `rows`).
void widen_rows(const uint16_t* a, int64_t lda, int rows, int64_t g0, int64_t g1, float* af) {
  const int64_t n = (g1 - g0) * 2;
  for (int i = 0; i < rows; ++i) {
    const uint16_t* src = a + i * lda + g0 * 2;
    float* dst = af + i * kBf16KBlock;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
      __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)));
      _mm256_store_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; k < n; ++k) dst[k] = bf16_to_f32(src[k]);
  }
}

void bf16_block(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1, float* y,
                int64_t ldy) {
  alignas(32) thread_local float af[kMR * kBf16KBlock];
  for_tiles_rows_outer<kMR>(
      M, w.k_pad / 2, nb0, nb1,
      [&](int64_t m, int rows, int64_t g0, int64_t g1) { widen_rows(a + m * lda, lda, rows, g0, g1, af); },
      [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
        bf16_tile<decltype(R)::value>(w, af, nb, g0, g1, y + m * ldy, ldy);
      });
}

void int8_block(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* s, int64_t nb0,
                int64_t nb1, float* y, int64_t ldy) {
  for_tiles<kMR>(M, w.k_pad / 4, nb0, nb1, [&](auto R, int64_t m, int64_t nb, int64_t g0, int64_t g1) {
    int8_tile<decltype(R)::value>(w, a + m * lda, lda, s + m, nb, g0, g1, y + m * ldy, ldy);
  });
}

// Round to nearest even, as f32_to_bf16 (core/dtype.h): NaN stays a (quiet) NaN.
void to_bf16(const float* x, int64_t k, int64_t k_pad, uint16_t* out) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(0x400000);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256i u = _mm256_castps_si256(v);
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_srli_epi32(_mm256_blendv_epi8(r, _mm256_or_si256(u, quiet), nan), 16);
    // pack the 8 low halves: packus works per 128-bit lane, so gather the two lanes after it
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(p));
  }
  for (; i < k; ++i) out[i] = f32_to_bf16(x[i]);
  std::fill(out + k, out + k_pad, uint16_t(0));
}

void quant(const float* x, int64_t k, int64_t k_pad, bool shift, int8_t* out, float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.f;
  for (float v : lanes) amax = std::max(amax, v);
  for (; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
  *scale = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const int off = shift ? 128 : 0;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  // q + 128 as a byte is q with its top bit flipped (|q| <= 127)
  const __m256i flip = _mm256_set1_epi8(shift ? char(0x80) : 0);
  for (i = 0; i + 8 <= k; i += 8) {
    __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));  // round to nearest even
    q = _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
    __m256i p = _mm256_xor_si256(_mm256_packs_epi16(_mm256_packs_epi32(q, q), _mm256_packs_epi32(q, q)),
                                 flip);  // lane: q0..q3 | q4..q7
    int32_t w0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(p)), w1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(p, 1));
    std::memcpy(out + i, &w0, 4);
    std::memcpy(out + i + 4, &w1, 4);
  }
  for (; i < k; ++i) {
    int q = int(std::nearbyint(x[i] * inv));
    out[i] = int8_t(uint8_t(std::min(127, std::max(-127, q)) + off));
  }
  std::fill(out + k, out + k_pad, int8_t(uint8_t(off)));
}

}  // namespace

PackedKernels packed_kernels_avx2() { return {to_bf16, quant, bf16_block, int8_block, false}; }

}  // namespace diffrt::kernels::cpu

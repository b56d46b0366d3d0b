// AMX packed-GEMM kernels: bf16 (tdpbf16ps) and int8 (tdpbssd, s8 x s8, so no activation shift).
//
// Tiles: C0..C3 = tmm0..3 (16 rows x 16 f32), A0/A1 = tmm4/5 (16 rows x 64 bytes of activations),
// B0/B1 = tmm6/7 (16 K-groups x 64 bytes: exactly 16 lines of the packed layout). One pass
// computes a 32 x 32 block of y. The activation buffer is zero up to a multiple of 32 rows and the
// packed weights up to a multiple of 32 columns, so every tile load is in bounds.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/gemm_packed_kernels.h"

// GCC 12 reports its own _mm512_undefined_* helpers as "maybe uninitialized" here; they are not.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace diffrt::kernels::cpu {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void configure() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  _tile_loadconfig(&c);
}

// Writes (accumulate: adds) the valid rows x cols of a 32 x 32 block of accumulators (row stride
// 32) into y, times col_scale[j] (16-aligned reads are safe: scales are padded to n_pad) and
// row_scale[i].
// Vectorised: a scalar epilogue costs as much as the tile products of a K = 512 block.
template <class Acc>
void store_block(const Acc* c, int rows, int cols, const float* col_scale, const float* row_scale, bool accumulate,
                 float* y, int64_t ldy) {
  for (int h = 0; h * 16 < cols; ++h) {
    const int n = h * 16;
    const __mmask16 mk = cols - n >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - n)) - 1);
    const __m512 cs = col_scale ? _mm512_loadu_ps(col_scale + n) : _mm512_set1_ps(1.f);
    for (int i = 0; i < rows; ++i) {
      __m512 v;
      if constexpr (std::is_integral_v<Acc>)  // int32 accumulators
        v = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 32 + n));
      else
        v = _mm512_load_ps(c + i * 32 + n);
      v = _mm512_mul_ps(v, row_scale ? _mm512_mul_ps(cs, _mm512_set1_ps(row_scale[i])) : cs);
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, y + i * ldy + n));
      _mm512_mask_storeu_ps(y + i * ldy + n, mk, v);
    }
  }
}

void bf16_block(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1, float* y,
                int64_t ldy) {
  configure();
  alignas(64) float c[32 * 32];
  const int64_t stride = lda * 2;
  for (int64_t nb = nb0; nb < nb1; nb += 2) {  // n_pad is a multiple of 32: block nb + 1 exists
    int64_t n0 = nb * 16;
    int cols = int(std::min<int64_t>(32, w.n - n0));
    if (cols <= 0) break;
    // K in cache blocks (kKBlockGroups): the 32 columns' weights of a block stay in L2 over the rows.
    for (int64_t kb = 0; kb < w.k_pad; kb += 2 * kKBlockGroups) {
      const int64_t k_end = std::min(w.k_pad, kb + 2 * kKBlockGroups);
      for (int64_t m = 0; m < M; m += 32) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const uint16_t* a0 = a + m * lda;
        for (int64_t k = kb; k < k_end; k += 32) {
          _tile_loadd(4, a0 + k, stride);
          _tile_loadd(5, a0 + 16 * lda + k, stride);
          _tile_loadd(6, w.bf16_block(nb, k / 2), 64);
          _tile_loadd(7, w.bf16_block(nb + 1, k / 2), 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c, 128);
        _tile_stored(1, c + 16, 128);
        _tile_stored(2, c + 16 * 32, 128);
        _tile_stored(3, c + 16 * 32 + 16, 128);
        store_block(c, int(std::min<int64_t>(32, M - m)), cols, w.scale.empty() ? nullptr : w.scale.data() + n0,
                    nullptr, kb > 0, y + m * ldy + n0, ldy);
      }
    }
  }
  _tile_release();
}

void int8_block(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* a_scale, int64_t nb0,
                int64_t nb1, float* y, int64_t ldy) {
  configure();
  alignas(64) int32_t c[32 * 32];
  for (int64_t nb = nb0; nb < nb1; nb += 2) {
    int64_t n0 = nb * 16;
    int cols = int(std::min<int64_t>(32, w.n - n0));
    if (cols <= 0) break;
    // K in cache blocks (kKBlockGroups): the 32 columns' weights of a block stay in L2 over the rows.
    for (int64_t kb = 0; kb < w.k_pad; kb += 4 * kKBlockGroups) {
      const int64_t k_end = std::min(w.k_pad, kb + 4 * kKBlockGroups);
      for (int64_t m = 0; m < M; m += 32) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const int8_t* a0 = a + m * lda;
        for (int64_t k = kb; k < k_end; k += 64) {
          _tile_loadd(4, a0 + k, lda);
          _tile_loadd(5, a0 + 16 * lda + k, lda);
          _tile_loadd(6, w.int8_block(nb, k / 4), 64);
          _tile_loadd(7, w.int8_block(nb + 1, k / 4), 64);
          _tile_dpbssd(0, 4, 6);
          _tile_dpbssd(1, 4, 7);
          _tile_dpbssd(2, 5, 6);
          _tile_dpbssd(3, 5, 7);
        }
        _tile_stored(0, c, 128);
        _tile_stored(1, c + 16, 128);
        _tile_stored(2, c + 16 * 32, 128);
        _tile_stored(3, c + 16 * 32 + 16, 128);
        store_block(c, int(std::min<int64_t>(32, M - m)), cols, w.scale.data() + n0, a_scale + m, kb > 0,
                    y + m * ldy + n0, ldy);
      }
    }
  }
  _tile_release();
}

}  // namespace

PackedKernels packed_kernels_amx() { return {avx512_to_bf16(), avx512_quant(), bf16_block, int8_block, false}; }

}  // namespace diffrt::kernels::cpu

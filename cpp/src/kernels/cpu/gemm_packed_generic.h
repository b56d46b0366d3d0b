// Plain C++ packed-GEMM kernels, included by gemm_packed.cpp (baseline ISA) and
// gemm_packed_avx2.cpp (compiled with AVX2/FMA, where the compiler vectorises the same loops).
// Internal linkage on purpose: each including file gets its own copy built with its own flags.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "kernels/cpu/gemm_packed_kernels.h"

namespace diffrt::kernels::cpu {
namespace {

void generic_to_bf16(const float* x, int64_t k, int64_t k_pad, uint16_t* out) {
  for (int64_t i = 0; i < k; ++i) out[i] = f32_to_bf16(x[i]);
  std::fill(out + k, out + k_pad, uint16_t(0));
}

void generic_quant(const float* x, int64_t k, int64_t k_pad, bool shift, int8_t* out, float* scale) {
  float amax = 0.f;
  for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
  float s = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
  int off = shift ? 128 : 0;
  for (int64_t i = 0; i < k; ++i) {
    int q = int(std::nearbyint(x[i] * inv));
    q = std::min(127, std::max(-127, q));
    out[i] = int8_t(uint8_t(q + off));
  }
  std::fill(out + k, out + k_pad, int8_t(uint8_t(off)));
  *scale = s;
}

constexpr int kRows = 4;  // rows per pass: each packed block is read once per 4 rows

// The kRows row pointers of a pass; a short last pass repeats its last row (computed, not stored).
// The row loop always runs kRows times: GCC 12 at -O3 vectorised the earlier `i < rows` loop
// (with rows = min(4, M - m0)) into code that read up to 3 rows past the activations' end, which
// faulted when that end was the end of a mapping (issue: crashes on AVX2-only CPUs).
template <class T>
void row_pointers(const T* a, int64_t lda, int64_t m0, int rows, const T* (&ar)[kRows]) {
  for (int i = 0; i < kRows; ++i) ar[i] = a + (m0 + std::min(i, rows - 1)) * lda;
}

void generic_bf16_block(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1,
                        float* y, int64_t ldy) {
  const int64_t groups = w.k_pad / 2;
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const uint16_t* b = w.bf16_block(nb);
    int64_t n0 = nb * 16;
    int nvalid = int(std::min<int64_t>(16, w.n - n0));
    if (nvalid <= 0) continue;
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      int rows = int(std::min<int64_t>(kRows, M - m0));
      const uint16_t* ar[kRows];
      row_pointers(a, lda, m0, rows, ar);
      float acc[kRows][16] = {};
      for (int64_t g = 0; g < groups; ++g) {
        float bv[32];
        for (int j = 0; j < 32; ++j) bv[j] = bf16_to_f32(b[g * 32 + j]);
        for (int i = 0; i < kRows; ++i) {
          float a0 = bf16_to_f32(ar[i][2 * g]), a1 = bf16_to_f32(ar[i][2 * g + 1]);
          for (int j = 0; j < 16; ++j) acc[i][j] += a0 * bv[2 * j] + a1 * bv[2 * j + 1];
        }
      }
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < nvalid; ++j)
          y[(m0 + i) * ldy + n0 + j] = w.scale.empty() ? acc[i][j] : acc[i][j] * w.scale[n0 + j];
    }
  }
}

void generic_int8_block(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* a_scale,
                        int64_t nb0, int64_t nb1, float* y, int64_t ldy) {
  const int64_t groups = w.k_pad / 4;
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const int8_t* b = w.int8_block(nb);
    int64_t n0 = nb * 16;
    int nvalid = int(std::min<int64_t>(16, w.n - n0));
    if (nvalid <= 0) continue;
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      int rows = int(std::min<int64_t>(kRows, M - m0));
      const int8_t* ar[kRows];
      row_pointers(a, lda, m0, rows, ar);
      int32_t acc[kRows][16] = {};
      for (int64_t g = 0; g < groups; ++g) {
        const int8_t* bg = b + g * 64;
        for (int i = 0; i < kRows; ++i) {
          const int8_t* ag = ar[i] + 4 * g;
          for (int j = 0; j < 16; ++j)
            acc[i][j] += ag[0] * bg[4 * j] + ag[1] * bg[4 * j + 1] + ag[2] * bg[4 * j + 2] + ag[3] * bg[4 * j + 3];
        }
      }
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < nvalid; ++j)
          y[(m0 + i) * ldy + n0 + j] = float(acc[i][j]) * a_scale[m0 + i] * w.scale[n0 + j];
    }
  }
}

PackedKernels generic_kernels() {
  return {generic_to_bf16, generic_quant, generic_bf16_block, generic_int8_block, false};
}

}  // namespace
}  // namespace diffrt::kernels::cpu

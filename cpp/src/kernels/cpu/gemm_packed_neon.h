// Internal to the NEON packed GEMM (gemm_packed_neon*.cpp): the int8 block kernels of the optional
// instruction sets, and the epilogue every NEON kernel shares.
//
// The helpers have internal linkage on purpose: the dotprod and i8mm files are compiled with
// -march=armv8-a+dotprod / +i8mm, and a shared (weak) copy of a helper built with those flags could
// be the one the linker keeps for code that a CPU without them runs.
#pragma once
#include <arm_neon.h>

#include <cstdint>

#include "kernels/cpu/gemm_packed_kernels.h"

namespace diffrt::kernels::cpu {

// Int8BlockFn kernels for CPUs with FEAT_DotProd (SDOT) and FEAT_I8MM (SMMLA); gemm_packed_neon.cpp
// chooses one at run time.
void int8_block_neon_dotprod(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* a_scale,
                             int64_t nb0, int64_t nb1, float* y, int64_t ldy);
void int8_block_neon_i8mm(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* a_scale,
                          int64_t nb0, int64_t nb1, float* y, int64_t ldy);

namespace {

// y[0:nvalid] = v (+ y if accumulate); v[q] holds outputs 4q..4q+3. The last 16-column block of W
// may be partial.
inline void neon_store16(float* y, const float32x4_t v[4], int nvalid, bool accumulate) {
  if (nvalid == 16) {
    for (int q = 0; q < 4; ++q) vst1q_f32(y + 4 * q, accumulate ? vaddq_f32(v[q], vld1q_f32(y + 4 * q)) : v[q]);
    return;
  }
  float t[16];
  for (int q = 0; q < 4; ++q) vst1q_f32(t + 4 * q, v[q]);
  for (int j = 0; j < nvalid; ++j) y[j] = accumulate ? y[j] + t[j] : t[j];
}

// One row of an int8 tile: y[n0 .. n0 + 16) = acc · a_scale · w.scale[n] (as the x86 kernels:
// the int32 sum converted once, times the product of the two scales). w.scale has n_pad entries.
inline void neon_int8_store(const PackedMatrix& w, int64_t nb, const int32x4_t acc[4], float a_scale, float* y,
                            bool accumulate) {
  const int64_t n0 = nb * 16;
  const int nvalid = int(w.n - n0 < 16 ? w.n - n0 : 16);
  float32x4_t v[4];
  for (int q = 0; q < 4; ++q)
    v[q] = vmulq_f32(vcvtq_f32_s32(acc[q]), vmulq_n_f32(vld1q_f32(w.scale.data() + n0 + 4 * q), a_scale));
  neon_store16(y + n0, v, nvalid, accumulate);
}

}  // namespace
}  // namespace diffrt::kernels::cpu

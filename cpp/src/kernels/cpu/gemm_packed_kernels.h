// Internal to the packed GEMM: the per-ISA pieces that gemm_packed (gemm_packed.cpp) dispatches to.
//
// Block kernels compute y[0:M][16·nb0 : min(16·nb1, w.n)) from activations already converted to the
// kernel's type: `a` is [M rounded up to 32][lda = w.k_pad], zero past k (and past M), so AMX tiles
// may read whole 32-row, 32/64-column blocks. The epilogue applies the scales:
//   bf16: y = acc · (w.scale[n] if present)
//   int8: y = (acc − 128 · w.row_sum[n] if the activations were shifted to u8) · a_scale[m] · w.scale[n]
#pragma once
#include <cstdint>

#include "kernels/cpu/pack.h"

namespace diffrt::kernels::cpu {

using ToBf16Fn = void (*)(const float* x, int64_t k, int64_t k_pad, uint16_t* out);
// q = round(x / s), s = max|x| / 127 (s = 0 for an all-zero row); shift: store q + 128 as u8.
using QuantFn = void (*)(const float* x, int64_t k, int64_t k_pad, bool shift, int8_t* out, float* scale);
using Bf16BlockFn = void (*)(const PackedMatrix& w, const uint16_t* a, int64_t lda, int64_t M, int64_t nb0, int64_t nb1,
                             float* y, int64_t ldy);
using Int8BlockFn = void (*)(const PackedMatrix& w, const int8_t* a, int64_t lda, int64_t M, const float* a_scale,
                             int64_t nb0, int64_t nb1, float* y, int64_t ldy);

// K is cut into cache blocks of this many VNNI groups (4096 bf16 / 8192 int8 values): a task's
// 64 outputs x one block of weights is 512 KB, which stays in L2 while the task's rows stream past
// it. Blocks after the first add into y (f32), so very long K (the self-conditioning product
// probs · E has K = vocab) no longer re-reads its weights from memory for every 6 or 32 rows.
constexpr int64_t kKBlockGroups = 2048;

struct PackedKernels {
  ToBf16Fn to_bf16;
  QuantFn quant;
  Bf16BlockFn bf16_block;
  Int8BlockFn int8_block;
  bool int8_shifted;  // the int8 kernel takes u8 = q + 128 (AVX-512 VNNI's vpdpbusd is u8 x s8)
};

PackedKernels packed_kernels_portable();
PackedKernels packed_kernels_avx2();
PackedKernels packed_kernels_avx512();
PackedKernels packed_kernels_amx();
PackedKernels packed_kernels_neon();  // int8 by SMMLA, SDOT or SMULL, as this CPU has them
ToBf16Fn avx512_to_bf16();            // shared with the AMX path
QuantFn avx512_quant();

}  // namespace diffrt::kernels::cpu

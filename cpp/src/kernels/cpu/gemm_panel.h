// Internal to the CPU GEMM: the per-ISA panel kernels.
//
// A panel kernel computes C[0:M][0:nvalid] (+)= A[0:M][0:kc] · Bp for one packed panel
// Bp[kc][NR] (NR columns of W, zero-padded past nvalid). `accumulate` false: C is overwritten.
#pragma once
#include <cstddef>
#include <cstdint>

namespace diffrt::kernels::cpu {

constexpr int KC = 256;  // K block: A rows and the panel stay in L1/L2

using PanelFn = void (*)(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                         int nvalid, bool accumulate);

void gemm_panel_portable(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                         int nvalid, bool accumulate);  // NR = 16
void gemm_panel_avx2(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid,
                     bool accumulate);  // NR = 16
void gemm_panel_avx512(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                       int nvalid, bool accumulate);  // NR = 32
void gemm_panel_neon(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc, int nvalid,
                     bool accumulate);  // NR = 16

// Packs a [kc x 32] panel of an F32 NK matrix (rows n0 .. n0+nvalid of base, columns k0 ..) with
// in-register 16 x 16 transposes; bp as for the panel kernels (zero past nvalid).
void pack_f32_nk_avx512(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
// The same for a [kc x 16] panel with 8 x 8 transposes, from F32, BF16 or F16 rows.
void pack_f32_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
void pack_bf16_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
void pack_f16_nk_avx2(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
// The same for a [kc x 16] panel with 4 x 4 transposes, from F32, BF16 or F16 rows.
void pack_f32_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
void pack_bf16_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);
void pack_f16_nk_neon(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);

}  // namespace diffrt::kernels::cpu

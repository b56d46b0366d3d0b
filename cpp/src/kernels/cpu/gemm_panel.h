// Internal to the CPU GEMM: the per-ISA panel kernels.
//
// A panel kernel computes C[0:M][0:nvalid] (+)= A[0:M][0:kc] · Bp for one packed panel
// Bp[kc][NR] (NR columns of W, zero-padded past nvalid). `accumulate` false: C is overwritten.
#pragma once
#include <cstdint>

namespace diffrt::kernels::cpu {

constexpr int KC = 256;  // K block: A rows and the panel stay in L1/L2

using PanelFn = void (*)(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                         int nvalid, bool accumulate);

void gemm_panel_portable(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                         int nvalid, bool accumulate);  // NR = 16
void gemm_panel_avx2(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                     int nvalid, bool accumulate);      // NR = 16
void gemm_panel_avx512(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                       int nvalid, bool accumulate);    // NR = 32

}  // namespace diffrt::kernels::cpu

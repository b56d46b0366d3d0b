// The plain C++ packed-GEMM kernels compiled with AVX2/FMA (the compiler vectorises them).
#include "kernels/cpu/gemm_packed_generic.h"

namespace diffrt::kernels::cpu {
PackedKernels packed_kernels_avx2() { return generic_kernels(); }
}  // namespace diffrt::kernels::cpu

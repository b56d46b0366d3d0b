// The vectorisable row loops of vec_math.h compiled for AVX-512.
#define DIFFRT_VEC_MATH_IMPL avx512
#include "kernels/cpu/vec_math.h"

namespace diffrt::kernels::cpu {
const RowOps& row_ops_avx512() { return avx512::kOps; }
}  // namespace diffrt::kernels::cpu

// The vectorisable row loops of vec_math.h compiled for AVX2/FMA.
#define DIFFRT_VEC_MATH_IMPL avx2
#include "kernels/cpu/vec_math.h"

namespace diffrt::kernels::cpu {
const RowOps& row_ops_avx2() { return avx2::kOps; }
}  // namespace diffrt::kernels::cpu

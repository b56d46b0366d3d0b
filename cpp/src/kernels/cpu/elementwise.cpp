// Row-wise and element-wise CPU ops: RMSNorm, gated GELU-tanh, soft-cap, softmax.
#include <algorithm>
#include <cmath>

#include "core/cpu_features.h"
#include "kernels/kernels.h"
#define DIFFRT_VEC_MATH_IMPL portable
#include "kernels/cpu/vec_math.h"

namespace diffrt::kernels {
namespace cpu {
const RowOps& row_ops_portable() { return portable::kOps; }
const RowOps& row_ops() {
#if defined(DIFFRT_X86)
  static const RowOps& ops = cpu_path() >= CpuPath::Avx512 ? row_ops_avx512()
                             : cpu_path() == CpuPath::Avx2 ? row_ops_avx2()
                                                           : row_ops_portable();
#else
  // ARM64's baseline is NEON (ASIMD is in every AArch64 CPU), so this file is already the NEON
  // build of the row loops, for the neon path and the portable one alike.
  static const RowOps& ops = row_ops_portable();
#endif
  return ops;
}
}  // namespace cpu
namespace {

// Rows per task: enough work per task to amortise the dispatch.
template <class F>
void for_rows(ThreadPool& pool, int64_t rows, int64_t row_cost, F&& f) {
  int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_cost, 1));
  int64_t tasks = (rows + per - 1) / per;
  pool.parallel_for(int(tasks), [&](int t, int) {
    int64_t r1 = std::min(rows, (t + 1) * per);
    for (int64_t r = t * per; r < r1; ++r) f(r);
  });
}

}  // namespace

void rms_norm(ThreadPool& pool, const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y,
              int64_t ldy) {
  const auto& ops = cpu::row_ops();
  for_rows(pool, rows, n, [&](int64_t r) { ops.rms_row(x + r * ldx, y + r * ldy, n, w, eps); });
}

void gelu_tanh_mul(ThreadPool& pool, const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n,
                   float* h, int64_t ldh) {
  const auto& ops = cpu::row_ops();
  for_rows(pool, rows, 8 * int64_t(n), [&](int64_t r) { ops.gelu_mul(g + r * ldg, u + r * ldu, h + r * ldh, n); });
}

void soft_cap(ThreadPool& pool, float* x, int64_t n, float cap) {
  constexpr int64_t chunk = 4096;
  const auto& ops = cpu::row_ops();
  pool.parallel_for(int((n + chunk - 1) / chunk), [&](int t, int) {
    int64_t i0 = t * chunk, i1 = std::min(n, i0 + chunk);
    ops.soft_cap(x + i0, i1 - i0, cap);
  });
}

void softmax_rows(ThreadPool& pool, float* x, int64_t ld, int64_t rows, int64_t n) {
  softmax_rows(pool, x, ld, x, ld, rows, n);
}

void softmax_rows(ThreadPool& pool, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t n) {
  const auto& ops = cpu::row_ops();
  for_rows(pool, rows, 4 * n, [&](int64_t r) { ops.softmax_row(src + r * lds, dst + r * ldd, n, 0, n); });
}

void rope(ThreadPool& pool, float* x, int64_t ldx, int64_t tokens, int n_head, int hd, const int32_t* pos,
          const float* cos, const float* sin) {
  const int half = hd / 2;
  for_rows(pool, tokens, int64_t(n_head) * hd * 4, [&](int64_t t) {
    const float* c = cos + int64_t(pos[t]) * half;
    const float* s = sin + int64_t(pos[t]) * half;
    for (int h = 0; h < n_head; ++h) {
      float* v = x + t * ldx + int64_t(h) * hd;
      for (int j = 0; j < half; ++j) {
        float a = v[j], b = v[j + half];
        v[j] = a * c[j] - b * s[j];
        v[j + half] = b * c[j] + a * s[j];
      }
    }
  });
}

}  // namespace diffrt::kernels

// Attention over [cached prefix | new tokens] on the CPU: per (row, head, query block) task,
// scores = Q·Kᵀ and out = P·V both run through the serial GEMM; softmax in f32 between them.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/vec_math.h"
#include "kernels/kernels.h"

namespace diffrt::kernels {
namespace {
constexpr int QB = 64;  // queries per task
}

int64_t attention_scratch_floats(int64_t max_keys) { return int64_t(QB) * std::max<int64_t>(max_keys, 1); }

void attention(ThreadPool& pool, const AttentionArgs& a) {
  const int hd = a.head_dim;
  const int group = a.n_head / a.n_kv_head;
  const int qblocks = (a.n_q + QB - 1) / QB;
  const int n_tasks = a.n_rows * a.n_head * qblocks;
  pool.parallel_for(n_tasks, [&](int task, int thread) {
    const int qb = task % qblocks;
    const int h = (task / qblocks) % a.n_head;
    const int b = task / (qblocks * a.n_head);
    const int kvh = h / group;
    const int nk = a.n_keys[b];
    const int s0 = qb * QB, ns = std::min(QB, a.n_q - s0);
    const float* q = a.q + (int64_t(b) * a.n_q + s0) * a.ldq + int64_t(h) * hd;
    const float* k = a.k + b * a.kv_row_stride + kvh * a.kv_head_stride;
    const float* v = a.v + b * a.kv_row_stride + kvh * a.kv_head_stride;
    float* p = a.scratch + int64_t(thread) * a.scratch_per_thread;  // [ns][nk]

    gemm_serial(q, a.ldq, ns, f32_matrix(k, nk, hd, hd), p, nk);  // scores, scaling 1.0

    // The visible keys of a query form one contiguous range [lo, hi) (causal and window masks are
    // both bounds on the key position); the rest get probability 0.
    const auto& ops = cpu::row_ops();
    for (int i = 0; i < ns; ++i) {
      float* row = p + int64_t(i) * nk;
      const int qpos = a.q_pos0[b] + s0 + i;
      int lo = 0, hi = nk;
      if (a.causal) hi = std::min(nk, qpos - a.key_pos0[b] + 1);
      if (a.window > 0) lo = std::max(0, qpos - a.window + 1 - a.key_pos0[b]);
      lo = std::min(lo, nk);
      ops.softmax_row(row, row, nk, lo, std::max(lo, hi));
    }

    Matrix vm = f32_matrix(v, hd, nk, hd);  // V [nk][hd] read as B[k = key][n = dim]
    vm.kn = true;
    gemm_serial(p, nk, ns, vm, a.out + (int64_t(b) * a.n_q + s0) * a.ldo + int64_t(h) * hd, a.ldo);
  });
}

}  // namespace diffrt::kernels

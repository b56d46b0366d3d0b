// Mixture-of-experts on the CPU: the router (spec §6 op order) and the grouped expert GEMM
// (tokens gathered per expert, one GEMM per expert as transformers' grouped_mm does).
#include <algorithm>
#include <cmath>

#include "diffrt/error.h"
#include "kernels/cpu/pack.h"
#include "kernels/kernels.h"

namespace diffrt::kernels {

void router_topk(ThreadPool& pool, const float* r, int64_t ldr, int64_t M, int H, const RouterSpec& spec,
                 const Matrix& proj, float* z, float* scores, int32_t* idx, float* weight) {
  const int E = int(proj.n);
  if (spec.norm)
    rms_norm(pool, r, ldr, M, H, nullptr, spec.eps, z, H);
  else
    for (int64_t t = 0; t < M; ++t) std::copy(r + t * ldr, r + t * ldr + H, z + t * H);
  for (int64_t t = 0; t < M; ++t)
    for (int i = 0; i < H; ++i) z[t * H + i] = (z[t * H + i] * (spec.in_scale ? spec.in_scale[i] : 1.f)) * spec.in_mul;
  gemm(pool, z, H, M, proj, scores, E);
  softmax_rows(pool, scores, E, M, E);
  for (int64_t t = 0; t < M; ++t)
    select_experts(scores + t * E, E, spec, idx + t * spec.top_k, weight + t * spec.top_k);
}

void grouped_experts(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, int H, const int32_t* idx,
                     const float* weight, int top_k, int E, int I_e, const Matrix& gate_up, const Matrix& down,
                     Activation act, const MoeScratch& s, float* out, int64_t ldo) {
  if (act != Activation::GeluTanh) throw InvalidArgument("grouped_experts: unsupported activation");
  const int64_t n_slots = M * top_k;
  // Counting sort of the (token, slot) pairs by expert.
  std::fill(s.count, s.count + E + 1, 0);
  for (int64_t i = 0; i < n_slots; ++i) ++s.count[idx[i] + 1];
  for (int e = 0; e < E; ++e) s.count[e + 1] += s.count[e];
  // slot_of is filled in expert order, token order within an expert (stable).
  for (int e = 0, pos = 0; e < E; ++e)
    for (int64_t i = 0; i < n_slots; ++i)
      if (idx[i] == e) s.slot_of[pos++] = int32_t(i);

  // One expert's work: gather its rows, gate|up GEMM, gelu(gate)*up, down GEMM.
  auto run_expert = [&](int e) {
    const int64_t r0 = s.count[e], rows = s.count[e + 1] - r0;
    if (rows == 0) return;
    for (int64_t j = r0; j < r0 + rows; ++j) {
      const float* src = x + (s.slot_of[j] / top_k) * ldx;
      std::copy(src, src + H, s.xg + j * H);
    }
    gemm(pool, s.xg + r0 * H, H, rows, gate_up.rows(int64_t(e) * 2 * I_e, 2 * I_e), s.hg + r0 * 2 * I_e, 2 * I_e);
    gelu_tanh_mul(pool, s.hg + r0 * 2 * I_e, 2 * I_e, s.hg + r0 * 2 * I_e + I_e, 2 * I_e, rows, I_e,
                  s.hg + r0 * 2 * I_e, 2 * I_e);
    gemm(pool, s.hg + r0 * 2 * I_e, 2 * I_e, rows, down.rows(int64_t(e) * H, H), s.yg + r0 * H, H);
  };
  constexpr int kMaxOrdered = 1024;
  if (E >= 4 * pool.size() && E <= kMaxOrdered) {
    // Many experts per thread: one task per expert, its GEMMs run serially inside the task (a
    // nested parallel_for is serial). One pool wake-up per layer instead of ~3 per expert; tasks
    // go out largest first so the last ones to finish are small.
    int order[kMaxOrdered];
    int n = 0;
    for (int e = 0; e < E; ++e) {
      if (s.count[e + 1] == s.count[e]) continue;
      int i = n++;
      for (; i > 0 && s.count[order[i - 1] + 1] - s.count[order[i - 1]] < s.count[e + 1] - s.count[e]; --i)
        order[i] = order[i - 1];
      order[i] = e;
    }
    pool.parallel_for(n, [&](int t, int) {
      NestedPackedGemm nested;  // packed GEMMs here use the thread's expert-sized buffer
      run_expert(order[t]);
    });
  } else {
    for (int e = 0; e < E; ++e) run_expert(e);  // few experts: each GEMM uses every thread
  }
  // Weighted sum over the k slots of each token, in f32 (the grouped_mm numerics).
  for (int64_t t = 0; t < M; ++t) std::fill(out + t * ldo, out + t * ldo + H, 0.f);
  for (int64_t j = 0; j < n_slots; ++j) {
    const int32_t slot = s.slot_of[j];
    const float w = weight[slot];
    const float* y = s.yg + j * H;
    float* o = out + (slot / top_k) * ldo;
    for (int i = 0; i < H; ++i) o[i] += w * y[i];
  }
}

}  // namespace diffrt::kernels

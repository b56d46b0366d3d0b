// DiffusionGemma's passes (models/diffusion_gemma_passes.h) on the CPU kernels: the encoder pass
// (prefill / commit) that extends the KV cache, and the decoder pass (one denoising step).
#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "models/diffusion_gemma.h"

namespace diffrt::dg {

using namespace kernels;

namespace {

// The CPU kernels as the op set of diffusion_gemma_passes.h, on a Session's workspace and cache.
struct CpuOps {
  using Mat = Matrix;
  ThreadPool& pool;
  const ModelConfig& c;
  Workspace& ws;
  KVCache& cache;
  const float* const* rope_cos;  // [sliding]
  const float* const* rope_sin;
  const DebugHook* hook;

  void gemm(const float* x, int64_t ldx, int64_t M, const Matrix& w, float* y, int64_t ldy) {
    kernels::gemm(pool, x, ldx, M, w, y, ldy);
  }
  void rms_norm(const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y, int64_t ldy) {
    kernels::rms_norm(pool, x, ldx, rows, n, w, eps, y, ldy);
  }
  void gelu_tanh_mul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n, float* h,
                     int64_t ldh) {
    kernels::gelu_tanh_mul(pool, g, ldg, u, ldu, rows, n, h, ldh);
  }
  void copy(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, sizeof(float) * size_t(n)); }
  void add(float* x, const float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
  }
  void add_rows(float* x, const float* y, int64_t row_elems, int n_rows, const uint8_t* mask) {
    for (int r = 0; r < n_rows; ++r)
      if (mask[r]) add(x + r * row_elems, y + r * row_elems, row_elems);
  }
  void add_scale(float* x, const float* y, int64_t n, float s) {
    for (int64_t i = 0; i < n; ++i) x[i] = (x[i] + y[i]) * s;
  }
  void scale(float* x, int64_t n, float s) {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
  }
  void soft_cap(float* x, int64_t n, float cap) { kernels::soft_cap(pool, x, n, cap); }
  void softmax_rows(const float* src, float* dst, int64_t ld, int64_t rows, int64_t n) {
    kernels::softmax_rows(pool, src, ld, dst, ld, rows, n);
  }
  void round_to_bf16(float* x, int64_t n) {  // [M, V] probabilities: worth the pool
    const int64_t chunk = 1 << 16, tasks = (n + chunk - 1) / chunk;
    pool.parallel_for(int(tasks), [&](int t, int) {
      const int64_t end = std::min(n, (t + 1) * chunk);
      for (int64_t i = t * chunk; i < end; ++i) x[i] = diffrt::round_to_bf16(x[i]);
    });
  }
  void embed(const Matrix& E, const int32_t* ids, int64_t n, float scale, float* out) {
    const int64_t H = E.k;
    pool.parallel_for(int(n), [&](int t, int) {
      float* o = out + int64_t(t) * H;
      decode_row(E, ids[t], 0, H, o);
      for (int64_t i = 0; i < H; ++i) o[i] *= scale;  // E[id] * sqrt(H) (rounded to dt for bf16 files)
    });
  }
  void norm_rope(float* x, int64_t tokens, int n_head, int hd, const float* w, float eps, const int32_t* pos,
                 bool sliding) {
    kernels::rms_norm(pool, x, hd, tokens * n_head, hd, w, eps, x, hd);
    kernels::rope(pool, x, int64_t(n_head) * hd, tokens, n_head, hd, pos, rope_cos[sliding], rope_sin[sliding]);
  }
  void router_topk(const float* x, int64_t ldx, int64_t M, const Matrix& proj, const kernels::RouterSpec& spec,
                   int32_t* idx, float* w) {
    kernels::router_topk(pool, x, ldx, M, c.n_embd, spec, proj, ws.z, ws.scores, idx, w);
  }
  void grouped_experts(const float* x, int64_t ldx, int64_t M, const int32_t* idx, const float* w,
                       const LayerWeights& L, kernels::Activation act, float* out, int64_t ldo) {
    kernels::grouped_experts(pool, x, ldx, M, c.n_embd, idx, w, c.n_expert_used, c.n_expert, c.n_ff_exp, L.gate_up_exps,
                             L.down_exps, act, ws.moe, out, ldo);
  }
  void positions(const int* rows, int n_rows, int S, int32_t* pos) {
    for (int r = 0; r < n_rows; ++r)
      for (int s = 0; s < S; ++s) pos[r * S + s] = cache.n_cached[rows ? rows[r] : r] + s;
  }
  bool dumping() const { return hook != nullptr; }
  void dump(const std::string& name, const float* data, int64_t rows, int64_t cols) { (*hook)(name, data, rows, cols); }

  // Per row: K/V of the new tokens go into the cache after the row's held entries; attention over
  // them; the encoder then cuts a sliding cache back to its last W-1 entries.
  void attend(int il, const LayerWeights& L, bool encoder, const int* rows, int n_rows, int S, Activations& a) {
    const int nh = c.n_head, hd = L.head_dim, kv = L.n_kv, W = c.sliding_window;
    const int qw = nh * hd, kvw = kv * hd;
    const int cap = cache.cap[il];
    const int64_t rstride = cache.row_stride(il, L);
    for (int r = 0; r < n_rows; ++r) {
      const int row = rows ? rows[r] : r;
      const int T = cache.n_cached[row];
      const int held = L.sliding ? std::min(T, W - 1) : T;  // entries in the cache before this pass
      float* kc = cache.k[il] + row * rstride;              // [kv][cap][hd]
      float* vc = cache.v[il] + row * rstride;
      for (int s = 0; s < S; ++s)
        for (int j = 0; j < kv; ++j) {
          const int64_t src = (int64_t(r) * S + s) * kvw + int64_t(j) * hd;
          const int64_t dst = (int64_t(j) * cap + held + s) * hd;
          std::memcpy(kc + dst, a.k + src, sizeof(float) * hd);
          std::memcpy(vc + dst, a.v + src, sizeof(float) * hd);
        }
      const int n_keys = held + S, key_pos0 = T - held;
      AttentionArgs at;
      at.n_rows = 1;
      at.n_q = S;
      at.n_head = nh;
      at.n_kv_head = kv;
      at.head_dim = hd;
      at.q = a.q + int64_t(r) * S * qw;
      at.ldq = qw;
      at.k = kc;
      at.v = vc;
      at.kv_head_stride = int64_t(cap) * hd;
      at.n_keys = &n_keys;
      at.key_pos0 = &key_pos0;
      at.q_pos0 = &T;
      at.causal = encoder;                       // §5.2; the decoder sees every key (§5.4)
      at.window = encoder && L.sliding ? W : 0;  // p - W < k <= p
      at.out = a.attn + int64_t(r) * S * qw;
      at.ldo = qw;
      at.scratch = ws.att_scratch;
      at.scratch_per_thread = ws.att_scratch_per_thread;
      kernels::attention(pool, at);
      if (encoder && L.sliding) {  // the dynamic cache keeps the last W-1 entries
        const int keep = std::min(T + S, W - 1), drop = n_keys - keep;
        if (drop > 0)
          for (int j = 0; j < kv; ++j) {
            std::memmove(kc + int64_t(j) * cap * hd, kc + (int64_t(j) * cap + drop) * hd, sizeof(float) * keep * hd);
            std::memmove(vc + int64_t(j) * cap * hd, vc + (int64_t(j) * cap + drop) * hd, sizeof(float) * keep * hd);
          }
      }
    }
  }
};

}  // namespace

void DiffusionGemma::encode(Workspace& ws, KVCache& cache, const float* const* rope_cos, const float* const* rope_sin,
                            const int32_t* ids, const int* rows, int n_rows, int S, const DebugHook* hook) const {
  CpuOps ops{*pool_, cfg_, ws, cache, rope_cos, rope_sin, hook};
  encode_pass(ops, cfg_, w_, ws, ids, rows, n_rows, S);
  for (int r = 0; r < n_rows; ++r) cache.n_cached[rows ? rows[r] : r] += S;
}

void DiffusionGemma::denoise(Workspace& ws, KVCache& cache, const float* const* rope_cos, const float* const* rope_sin,
                             const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows,
                             const DebugHook* hook) const {
  CpuOps ops{*pool_, cfg_, ws, cache, rope_cos, rope_sin, hook};
  denoise_pass(ops, cfg_, w_, ws, canvas, self_cond, sc_rows, nullptr, cache.batch);
}

}  // namespace diffrt::dg

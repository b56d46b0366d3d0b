// DiffusionGemma forward passes (spec §5-8): the encoder pass (prefill / commit) that extends the
// KV cache, and the decoder pass (one denoising step) that reads it. Token m of a pass is
// (row r = m / S, offset s = m % S); every buffer below is [M = n_rows * S][width].
#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "models/diffusion_gemma.h"

namespace diffrt::dg {

using namespace kernels;

void DiffusionGemma::embed(const int32_t* ids, int64_t n, float* out) const {
  const int H = cfg_.n_embd;
  pool_->parallel_for(int(n), [&](int t, int) {
    float* o = out + int64_t(t) * H;
    decode_row(embd_, ids[t], 0, H, o);
    for (int i = 0; i < H; ++i) o[i] *= embed_scale_;  // E[id] * sqrt(H) (rounded to dt for bf16 files)
  });
}

// One layer (§7) over n_rows x S tokens in ws.x; K/V of the new tokens go into the cache after the
// row's held entries. Encoder: causal (+ window W on sliding layers), then the sliding cache is cut
// back to its last W-1 entries. Decoder: no mask, and the cache's logical contents do not change.
void DiffusionGemma::layer_forward(Workspace& ws, KVCache& cache, int il, bool encoder, const float* rope_cos,
                                   const float* rope_sin, const int* rows, int n_rows, int S) const {
  ThreadPool& pool = *pool_;
  const LayerWeights& L = layers_[il];
  const ModelConfig& c = cfg_;
  const int H = c.n_embd, nh = c.n_head, hd = L.head_dim, kv = L.n_kv, W = c.sliding_window;
  const int qw = nh * hd, kvw = kv * hd, I = c.n_ff;
  const int64_t M = int64_t(n_rows) * S;
  const float eps = c.rms_eps;

  // ---- attention (§5.1) ----
  rms_norm(pool, ws.x, H, M, H, L.attn_norm, eps, ws.xn, H);  // xn [M, H]
  gemm(pool, ws.xn, H, M, L.q, ws.q, qw);                      // q  [M, nh*hd]
  gemm(pool, ws.xn, H, M, L.k, ws.k, kvw);                     // k  [M, kv*hd] (raw)
  if (L.sliding)
    gemm(pool, ws.xn, H, M, L.v, ws.v, kvw);                   // v  [M, kv*hd]
  else
    std::memcpy(ws.v, ws.k, sizeof(float) * M * kvw);          // full layers: V = raw K
  rms_norm(pool, ws.q, hd, M * nh, hd, L.q_norm, eps, ws.q, hd);
  rms_norm(pool, ws.k, hd, M * kv, hd, L.k_norm, eps, ws.k, hd);
  rms_norm(pool, ws.v, hd, M * kv, hd, nullptr, eps, ws.v, hd);  // v_norm: no scale
  rope(pool, ws.q, qw, M, nh, hd, ws.pos, rope_cos, rope_sin);
  rope(pool, ws.k, kvw, M, kv, hd, ws.pos, rope_cos, rope_sin);

  const int cap = cache.cap[il];
  const int64_t rstride = cache.row_stride(il, L);
  for (int r = 0; r < n_rows; ++r) {
    const int row = rows ? rows[r] : r;
    const int T = cache.n_cached[row];
    const int held = L.sliding ? std::min(T, W - 1) : T;  // entries in the cache before this pass
    float* kc = cache.k[il] + row * rstride;                // [kv][cap][hd]
    float* vc = cache.v[il] + row * rstride;
    for (int s = 0; s < S; ++s)
      for (int j = 0; j < kv; ++j) {
        const int64_t src = (int64_t(r) * S + s) * kvw + int64_t(j) * hd;
        const int64_t dst = (int64_t(j) * cap + held + s) * hd;
        std::memcpy(kc + dst, ws.k + src, sizeof(float) * hd);
        std::memcpy(vc + dst, ws.v + src, sizeof(float) * hd);
      }
    const int n_keys = held + S, key_pos0 = T - held;
    AttentionArgs a;
    a.n_rows = 1;
    a.n_q = S;
    a.n_head = nh;
    a.n_kv_head = kv;
    a.head_dim = hd;
    a.q = ws.q + int64_t(r) * S * qw;
    a.ldq = qw;
    a.k = kc;
    a.v = vc;
    a.kv_head_stride = int64_t(cap) * hd;
    a.n_keys = &n_keys;
    a.key_pos0 = &key_pos0;
    a.q_pos0 = &T;
    a.causal = encoder;                       // §5.2; the decoder sees every key (§5.4)
    a.window = encoder && L.sliding ? W : 0;  // p - W < k <= p
    a.out = ws.attn + int64_t(r) * S * qw;
    a.ldo = qw;
    a.scratch = ws.att_scratch;
    a.scratch_per_thread = ws.att_scratch_per_thread;
    attention(pool, a);                       // attn [M, nh*hd]
    if (encoder && L.sliding) {               // the dynamic cache keeps the last W-1 entries
      const int keep = std::min(T + S, W - 1), drop = n_keys - keep;
      if (drop > 0)
        for (int j = 0; j < kv; ++j) {
          std::memmove(kc + int64_t(j) * cap * hd, kc + (int64_t(j) * cap + drop) * hd, sizeof(float) * keep * hd);
          std::memmove(vc + int64_t(j) * cap * hd, vc + (int64_t(j) * cap + drop) * hd, sizeof(float) * keep * hd);
        }
    }
  }
  gemm(pool, ws.attn, qw, M, L.o, ws.h, H);                       // h [M, H]
  rms_norm(pool, ws.h, H, M, H, L.post_attn_norm, eps, ws.h, H);
  for (int64_t i = 0; i < M * H; ++i) ws.x[i] += ws.h[i];         // x = x_in + post_attention_norm(h)

  // ---- dense MLP || MoE (§6) ----
  rms_norm(pool, ws.x, H, M, H, L.ffn_norm, eps, ws.xn, H);       // a = pre_feedforward_layernorm(x)
  gemm(pool, ws.xn, H, M, L.ffn_gate, ws.g, I);                   // g [M, I]
  gemm(pool, ws.xn, H, M, L.ffn_up, ws.u, I);                     // u [M, I]
  gelu_tanh_mul(pool, ws.g, I, ws.u, I, M, I, ws.g, I);
  gemm(pool, ws.g, I, M, L.ffn_down, ws.h1, H);                   // h1 [M, H]
  rms_norm(pool, ws.h1, H, M, H, L.post_ffw_norm_1, eps, ws.h1, H);

  const int K = c.n_expert_used;
  router_topk(pool, ws.x, H, M, H, L.router_scale, L.router, L.per_expert_scale, K, eps, ws.z, ws.scores,
              ws.idx_topk, ws.w_topk);                            // router reads the residual x
  rms_norm(pool, ws.x, H, M, H, L.pre_ffw_norm_2, eps, ws.xn, H);  // xe
  grouped_experts(pool, ws.xn, H, M, H, ws.idx_topk, ws.w_topk, K, c.n_expert, c.n_ff_exp, L.gate_up_exps,
                  L.down_exps, ws.moe, ws.h2, H);                 // moe [M, H]
  rms_norm(pool, ws.h2, H, M, H, L.post_ffw_norm_2, eps, ws.h2, H);
  for (int64_t i = 0; i < M * H; ++i) ws.h1[i] += ws.h2[i];
  rms_norm(pool, ws.h1, H, M, H, L.post_ffw_norm, eps, ws.h1, H);
  const float scalar = encoder ? L.enc_scalar : L.dec_scalar;    // each stack's own layer_scalar
  for (int64_t i = 0; i < M * H; ++i) ws.x[i] = (ws.x[i] + ws.h1[i]) * scalar;
}

void DiffusionGemma::encode(Workspace& ws, KVCache& cache, const float* const* rope_cos,
                            const float* const* rope_sin, const int32_t* ids, const int* rows, int n_rows, int S,
                            const DebugHook* hook) const {
  const int H = cfg_.n_embd;
  const int64_t M = int64_t(n_rows) * S;
  for (int r = 0; r < n_rows; ++r)
    for (int s = 0; s < S; ++s) ws.pos[r * S + s] = cache.n_cached[rows ? rows[r] : r] + s;
  embed(ids, M, ws.x);  // x [M, H]
  if (hook) (*hook)("enc.embed", ws.x, M, H);
  for (int il = 0; il < cfg_.n_layer; ++il) {
    const int kind = layers_[il].sliding ? 1 : 0;
    layer_forward(ws, cache, il, true, rope_cos[kind], rope_sin[kind], rows, n_rows, S);
    if (hook) (*hook)("enc.layer" + std::to_string(il) + ".out", ws.x, M, H);
  }
  for (int r = 0; r < n_rows; ++r) cache.n_cached[rows ? rows[r] : r] += S;
}

void DiffusionGemma::denoise(Workspace& ws, KVCache& cache, const float* const* rope_cos,
                             const float* const* rope_sin, const int32_t* canvas, const float* self_cond,
                             const DebugHook* hook) const {
  ThreadPool& pool = *pool_;
  const ModelConfig& c = cfg_;
  const int H = c.n_embd, V = c.n_vocab, I = c.n_ff, Lc = c.canvas_length, B = cache.batch;
  const int64_t M = int64_t(B) * Lc;
  const float eps = c.rms_eps;
  for (int r = 0; r < B; ++r)
    for (int s = 0; s < Lc; ++s) ws.pos[r * Lc + s] = cache.n_cached[r] + s;

  embed(canvas, M, ws.x);  // e [M, H]
  if (self_cond) {         // §8: soft = softmax(s) @ E * sqrt(H) -> pre_norm -> gated MLP, added to e
    softmax_rows(pool, self_cond, V, ws.probs, V, M, V);  // probs [M, V]
    if (bf16_)
      for (int64_t i = 0; i < M * V; ++i) ws.probs[i] = round_to_bf16(ws.probs[i]);
    gemm(pool, ws.probs, V, M, embd_kn_, ws.h, H);  // soft [M, H] = probs · E
    for (int64_t i = 0; i < M * H; ++i) ws.h[i] *= embed_scale_;
    rms_norm(pool, ws.h, H, M, H, sc_pre_norm_, eps, ws.xn, H);
    gemm(pool, ws.xn, H, M, sc_gate_, ws.g, I);
    gemm(pool, ws.xn, H, M, sc_up_, ws.u, I);
    gelu_tanh_mul(pool, ws.g, I, ws.u, I, M, I, ws.g, I);
    gemm(pool, ws.g, I, M, sc_down_, ws.h, H);  // sc [M, H]
    for (int64_t i = 0; i < M * H; ++i) ws.x[i] += ws.h[i];
  }
  rms_norm(pool, ws.x, H, M, H, nullptr, eps, ws.x, H);  // self_conditioning.post_norm: decoder input
  if (hook) (*hook)("dec.input", ws.x, M, H);

  for (int il = 0; il < c.n_layer; ++il) {
    const int kind = layers_[il].sliding ? 1 : 0;
    layer_forward(ws, cache, il, false, rope_cos[kind], rope_sin[kind], nullptr, B, Lc);
    if (hook) (*hook)("dec.layer" + std::to_string(il) + ".out", ws.x, M, H);
  }
  rms_norm(pool, ws.x, H, M, H, output_norm_, eps, ws.xn, H);  // decoder.norm
  if (hook) (*hook)("dec.norm", ws.xn, M, H);
  gemm(pool, ws.xn, H, M, embd_, ws.logits, V);  // tied LM head: logits [M, V]
  soft_cap(pool, ws.logits, M * V, c.final_logit_softcapping);
}

}  // namespace diffrt::dg

// DiffusionGemma's forward passes (spec §5-8), written once against a backend's op set and
// instantiated for the CPU (models/diffusion_gemma.cpp) and CUDA (kernels/cuda/cuda_session.cu).
// Token m of a pass is (row r = m / S, offset s = m % S); every activation is [M = n_rows * S][width].
//
// An Ops type provides, on its own device and scratch (nothing allocates):
//   using Mat;                                         weight matrix type (kernels::Matrix, cuda DMatrix)
//   gemm(x, ldx, M, w, y, ldy), rms_norm(x, ldx, rows, n, w, eps, y, ldy), gelu_tanh_mul(...),
//   copy(dst, src, n), add(x, y, n), add_rows(x, y, row_elems, n_rows, mask) (x += y where mask[row]),
//   add_scale(x, y, n, s), scale(x, n, s), soft_cap(x, n, cap),
//   softmax_rows(src, dst, ld, rows, n), round_to_bf16(x, n), embed(E, ids, n, scale, out),
//   norm_rope(x, tokens, n_head, hd, w, eps, pos, sliding)  per-head RMSNorm then RoPE in place on
//                                                      x [tokens][n_head * hd] (one fused kernel on CUDA),
//   router_topk(x, ldx, M, proj, spec, idx, w)         kernels::router_topk on the backend (moe_spec.h)
//   grouped_experts(x, ldx, M, idx, w, layer, act, out, ldo),
//   positions(rows, n_rows, S, pos)                    pos[r*S+s] = cached length of row + s
//   attend(il, layer, encoder, rows, n_rows, S, acts)  append the new K/V after what each row holds,
//                                                      attention into acts.attn, trim sliding caches
//   dumping(), dump(name, data, rows, cols)            parity dumps (a backend may ignore them)
// `rows` is the backend's list of cache rows of the pass rows, opaque here (host or device).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "diffrt/model.h"
#include "format/gguf_names.h"
#include "kernels/moe_spec.h"

namespace diffrt::dg {

template <class Mat>
struct Layer {
  bool sliding = false;
  int head_dim = 0, n_kv = 0;
  Mat q, k, v, o;                  // v: sliding layers only (full layers: V = raw K)
  Mat ffn_gate, ffn_up, ffn_down;  // dense MLP
  Mat router;                      // [E][H], always f32 (near-tied scores must not flip)
  Mat gate_up_exps, down_exps;     // [E*2I_e][H], [E*H][I_e]
  const float *attn_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr, *post_attn_norm = nullptr;
  const float *ffn_norm = nullptr, *post_ffw_norm_1 = nullptr, *pre_ffw_norm_2 = nullptr;
  const float *router_scale = nullptr, *per_expert_scale = nullptr;
  const float *post_ffw_norm_2 = nullptr, *post_ffw_norm = nullptr;
  float enc_scalar = 1.f, dec_scalar = 1.f;  // layer_scalar of each stack (not tied)
};

template <class Mat>
struct Weights {
  Mat embd;                     // E [V][H], also the tied LM head
  Mat embd_kn;                  // E read as B[k = vocab][n = hidden] (self-conditioning)
  Mat sc_gate, sc_up, sc_down;  // self-conditioning MLP
  const float *output_norm = nullptr, *sc_pre_norm = nullptr;
  std::vector<Layer<Mat>> layers;
  float embed_scale = 1.f;  // sqrt(H), rounded to bf16 for a bf16 checkpoint
  bool bf16 = false;        // model dtype bf16: the self-conditioning softmax is rounded too
};

// The weight table, written once (spec §3 in the community GGUF names, format/gguf_names.h): every
// loader (the CPU model from its file, the CUDA model from the same file or at random) and the CPU
// repacker visit it. For each weight, in this order:
//   v.matrix(Mat& m, const std::string& name, std::vector<int64_t> ne, WeightRole role)
//       ne in ggml order: [k (in), out, (experts)]: the logical NK matrix is [prod(ne[1:])][ne[0]]
//   v.vector(const float*& p, const std::string& name, int64_t n)
//   v.scalar(float& s, const std::string& name)
// It first sizes w.layers to c.n_layer and sets each layer's geometry (sliding, head_dim, n_kv) from
// c, which shapes the table; weights already in w are kept.
enum class WeightRole { Dense, Router, Experts, Embedding };

inline std::string layer_tensor(const char* pattern, int il) {
  std::string s = pattern;
  const size_t at = s.find("{bid}");
  if (at != std::string::npos) s.replace(at, 5, std::to_string(il));
  return s;
}

template <class Mat, class V>
void visit_weights(const ModelConfig& c, Weights<Mat>& w, V&& v) {
  namespace N = names;
  const int64_t H = c.n_embd, I = c.n_ff, Ie = c.n_ff_exp, E = c.n_expert, nh = c.n_head;
  w.layers.resize(size_t(c.n_layer));
  for (int il = 0; il < c.n_layer; ++il) {
    w.layers[size_t(il)].sliding = c.is_sliding[size_t(il)] != 0;
    w.layers[size_t(il)].head_dim = c.head_dim[size_t(il)];
    w.layers[size_t(il)].n_kv = c.n_kv_head[size_t(il)];
  }
  v.matrix(w.embd, N::TENSOR_TOKEN_EMBD, {H, c.n_vocab}, WeightRole::Embedding);
  v.vector(w.output_norm, N::TENSOR_OUTPUT_NORM, H);
  v.vector(w.sc_pre_norm, N::TENSOR_SELF_COND_PRE_NORM, H);
  v.matrix(w.sc_gate, N::TENSOR_SELF_COND_GATE, {H, I}, WeightRole::Dense);
  v.matrix(w.sc_up, N::TENSOR_SELF_COND_UP, {H, I}, WeightRole::Dense);
  v.matrix(w.sc_down, N::TENSOR_SELF_COND_DOWN, {I, H}, WeightRole::Dense);
  for (int il = 0; il < c.n_layer; ++il) {
    Layer<Mat>& L = w.layers[size_t(il)];
    const int64_t hd = L.head_dim, kv = L.n_kv;
    auto nm = [&](const char* pattern) { return layer_tensor(pattern, il); };
    v.vector(L.attn_norm, nm(N::TENSOR_ATTN_NORM), H);
    v.matrix(L.q, nm(N::TENSOR_ATTN_Q), {H, nh * hd}, WeightRole::Dense);
    v.matrix(L.k, nm(N::TENSOR_ATTN_K), {H, kv * hd}, WeightRole::Dense);
    if (L.sliding) v.matrix(L.v, nm(N::TENSOR_ATTN_V), {H, kv * hd}, WeightRole::Dense);
    v.vector(L.q_norm, nm(N::TENSOR_ATTN_Q_NORM), hd);
    v.vector(L.k_norm, nm(N::TENSOR_ATTN_K_NORM), hd);
    v.matrix(L.o, nm(N::TENSOR_ATTN_OUT), {nh * hd, H}, WeightRole::Dense);
    v.vector(L.post_attn_norm, nm(N::TENSOR_POST_ATTN_NORM), H);
    v.vector(L.ffn_norm, nm(N::TENSOR_FFN_NORM), H);
    v.matrix(L.ffn_gate, nm(N::TENSOR_FFN_GATE), {H, I}, WeightRole::Dense);
    v.matrix(L.ffn_up, nm(N::TENSOR_FFN_UP), {H, I}, WeightRole::Dense);
    v.matrix(L.ffn_down, nm(N::TENSOR_FFN_DOWN), {I, H}, WeightRole::Dense);
    v.vector(L.post_ffw_norm_1, nm(N::TENSOR_POST_FFW_NORM_1), H);
    v.vector(L.pre_ffw_norm_2, nm(N::TENSOR_PRE_FFW_NORM_2), H);
    v.matrix(L.router, nm(N::TENSOR_FFN_GATE_INP), {H, E}, WeightRole::Router);
    v.vector(L.router_scale, nm(N::TENSOR_FFN_GATE_INP_SCALE), H);
    v.matrix(L.gate_up_exps, nm(N::TENSOR_FFN_GATE_UP_EXPS), {H, 2 * Ie, E}, WeightRole::Experts);
    v.matrix(L.down_exps, nm(N::TENSOR_FFN_DOWN_EXPS), {Ie, H, E}, WeightRole::Experts);
    v.vector(L.per_expert_scale, nm(N::TENSOR_FFN_DOWN_EXPS_SCALE), E);
    v.vector(L.post_ffw_norm_2, nm(N::TENSOR_POST_FFW_NORM_2), H);
    v.vector(L.post_ffw_norm, nm(N::TENSOR_POST_FFW_NORM), H);
    v.scalar(L.dec_scalar, nm(N::TENSOR_LAYER_OUT_SCALE));
    v.scalar(L.enc_scalar, nm(N::TENSOR_ENC_LAYER_OUT_SCALE));
  }
}

// Activation buffers for up to batch * canvas_length tokens, on the backend's device.
struct Activations {
  float *x = nullptr, *xn = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr;
  float *h = nullptr, *g = nullptr, *u = nullptr, *h1 = nullptr, *h2 = nullptr, *w_topk = nullptr;
  int32_t *idx_topk = nullptr, *pos = nullptr;
  float* probs = nullptr;   // [M][V] self-conditioning softmax
  float* logits = nullptr;  // [M][V]
};

// Gemma's router (§6): rmsnorm_noscale(r) * router.scale * H^-0.5 (a Python float, used as f32),
// softmax over all experts, top-k, renormalised over the k, times per_expert_scale.
template <class Mat>
kernels::RouterSpec router_spec(const ModelConfig& c, const Layer<Mat>& L) {
  kernels::RouterSpec s;
  s.norm = true;
  s.eps = c.rms_eps;
  s.in_scale = L.router_scale;
  s.in_mul = float(std::pow(double(c.n_embd), -0.5));
  s.top_k = c.n_expert_used;
  s.renormalize = true;
  s.per_expert_scale = L.per_expert_scale;
  return s;
}

// One layer (§7) over n_rows x S tokens in a.x. Encoder: causal (+ window on sliding layers).
// Decoder: no mask, and the cache's logical contents do not change.
template <class Ops>
void layer_forward(Ops& ops, const ModelConfig& c, const Layer<typename Ops::Mat>& L, int il, bool encoder,
                   Activations& a, const int* rows, int n_rows, int S) {
  const int H = c.n_embd, nh = c.n_head, hd = L.head_dim, kv = L.n_kv, I = c.n_ff;
  const int qw = nh * hd, kvw = kv * hd;
  const int64_t M = int64_t(n_rows) * S;
  const float eps = c.rms_eps;

  // ---- attention (§5.1) ----
  ops.rms_norm(a.x, H, M, H, L.attn_norm, eps, a.xn, H);  // xn [M, H]
  ops.gemm(a.xn, H, M, L.q, a.q, qw);                     // q  [M, nh*hd]
  ops.gemm(a.xn, H, M, L.k, a.k, kvw);                    // k  [M, kv*hd] (raw)
  if (L.sliding)
    ops.gemm(a.xn, H, M, L.v, a.v, kvw);  // v  [M, kv*hd]
  else
    ops.copy(a.v, a.k, M * kvw);                                   // full layers: V = raw K
  ops.norm_rope(a.q, M, nh, hd, L.q_norm, eps, a.pos, L.sliding);  // q_norm, then RoPE
  ops.norm_rope(a.k, M, kv, hd, L.k_norm, eps, a.pos, L.sliding);  // k_norm, then RoPE
  ops.rms_norm(a.v, hd, M * kv, hd, nullptr, eps, a.v, hd);        // v_norm: no scale, no RoPE
  ops.attend(il, L, encoder, rows, n_rows, S, a);                  // attn [M, nh*hd] (§5.2; decoder §5.4)
  ops.gemm(a.attn, qw, M, L.o, a.h, H);                            // h [M, H]
  ops.rms_norm(a.h, H, M, H, L.post_attn_norm, eps, a.h, H);
  ops.add(a.x, a.h, M * H);  // x = x_in + post_attention_norm(h)

  // ---- dense MLP || MoE (§6) ----
  ops.rms_norm(a.x, H, M, H, L.ffn_norm, eps, a.xn, H);  // pre_feedforward_layernorm(x)
  ops.gemm(a.xn, H, M, L.ffn_gate, a.g, I);              // g [M, I]
  ops.gemm(a.xn, H, M, L.ffn_up, a.u, I);                // u [M, I]
  ops.gelu_tanh_mul(a.g, I, a.u, I, M, I, a.g, I);
  ops.gemm(a.g, I, M, L.ffn_down, a.h1, H);  // h1 [M, H]
  ops.rms_norm(a.h1, H, M, H, L.post_ffw_norm_1, eps, a.h1, H);
  ops.router_topk(a.x, H, M, L.router, router_spec(c, L), a.idx_topk, a.w_topk);  // reads the residual x
  ops.rms_norm(a.x, H, M, H, L.pre_ffw_norm_2, eps, a.xn, H);                     // xe
  ops.grouped_experts(a.xn, H, M, a.idx_topk, a.w_topk, L, kernels::Activation::GeluTanh, a.h2, H);  // moe [M, H]
  ops.rms_norm(a.h2, H, M, H, L.post_ffw_norm_2, eps, a.h2, H);
  ops.add(a.h1, a.h2, M * H);
  ops.rms_norm(a.h1, H, M, H, L.post_ffw_norm, eps, a.h1, H);
  ops.add_scale(a.x, a.h1, M * H, encoder ? L.enc_scalar : L.dec_scalar);  // each stack's own scalar
}

// Encoder pass over S new tokens of each of n_rows rows (ids [n_rows][S]) at positions
// cached(row)...; appends their K/V. The caller then advances the rows' cached lengths by S.
template <class Ops>
void encode_pass(Ops& ops, const ModelConfig& c, const Weights<typename Ops::Mat>& w, Activations& a,
                 const int32_t* ids, const int* rows, int n_rows, int S) {
  const int H = c.n_embd;
  const int64_t M = int64_t(n_rows) * S;
  ops.positions(rows, n_rows, S, a.pos);
  ops.embed(w.embd, ids, M, w.embed_scale, a.x);  // x [M, H]
  if (ops.dumping()) ops.dump("enc.embed", a.x, M, H);
  for (int il = 0; il < c.n_layer; ++il) {
    layer_forward(ops, c, w.layers[il], il, true, a, rows, n_rows, S);
    if (ops.dumping()) ops.dump("enc.layer" + std::to_string(il) + ".out", a.x, M, H);
  }
}

// Decoder pass (one denoising step) over the canvas [n_rows][L]; self_cond [n_rows][L][V] (the
// previous step's processed logits) or nullptr; sc_rows [n_rows] (backend memory): which rows add
// it (nullptr: all). Writes soft-capped logits [n_rows][L][V] to a.logits.
template <class Ops>
void denoise_pass(Ops& ops, const ModelConfig& c, const Weights<typename Ops::Mat>& w, Activations& a,
                  const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, const int* rows, int n_rows) {
  const int H = c.n_embd, V = c.n_vocab, I = c.n_ff, Lc = c.canvas_length;
  const int64_t M = int64_t(n_rows) * Lc;
  const float eps = c.rms_eps;
  ops.positions(rows, n_rows, Lc, a.pos);
  ops.embed(w.embd, canvas, M, w.embed_scale, a.x);  // e [M, H]
  if (self_cond) {  // §8: soft = softmax(s) @ E * sqrt(H) -> pre_norm -> gated MLP, added to e
    ops.softmax_rows(self_cond, a.probs, V, M, V);  // probs [M, V]
    if (w.bf16) ops.round_to_bf16(a.probs, M * V);
    ops.gemm(a.probs, V, M, w.embd_kn, a.h, H);  // soft [M, H] = probs · E
    ops.scale(a.h, M * H, w.embed_scale);
    ops.rms_norm(a.h, H, M, H, w.sc_pre_norm, eps, a.xn, H);
    ops.gemm(a.xn, H, M, w.sc_gate, a.g, I);
    ops.gemm(a.xn, H, M, w.sc_up, a.u, I);
    ops.gelu_tanh_mul(a.g, I, a.u, I, M, I, a.g, I);
    ops.gemm(a.g, I, M, w.sc_down, a.h, H);  // sc [M, H]
    if (sc_rows)
      ops.add_rows(a.x, a.h, int64_t(Lc) * H, n_rows, sc_rows);  // only the rows that take it
    else
      ops.add(a.x, a.h, M * H);
  }
  ops.rms_norm(a.x, H, M, H, nullptr, eps, a.x, H);  // self_conditioning.post_norm: decoder input
  if (ops.dumping()) ops.dump("dec.input", a.x, M, H);
  for (int il = 0; il < c.n_layer; ++il) {
    layer_forward(ops, c, w.layers[il], il, false, a, rows, n_rows, Lc);
    if (ops.dumping()) ops.dump("dec.layer" + std::to_string(il) + ".out", a.x, M, H);
  }
  ops.rms_norm(a.x, H, M, H, w.output_norm, eps, a.xn, H);  // decoder.norm
  if (ops.dumping()) ops.dump("dec.norm", a.xn, M, H);
  ops.gemm(a.xn, H, M, w.embd, a.logits, V);  // tied LM head: logits [M, V]
  ops.soft_cap(a.logits, M * V, c.final_logit_softcapping);
}

}  // namespace diffrt::dg

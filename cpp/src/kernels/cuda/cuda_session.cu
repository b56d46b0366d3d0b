// CUDA Session: buffers at creation, then the passes of models/diffusion_gemma_passes.h as kernel
// launches on one stream (Ops below). The denoising step is cuda_step.cu.
#include <algorithm>
#include <string>

#include "diffrt/error.h"
#include "kernels/cuda/cuda_session.h"
#include "runtime/session_args.h"

namespace diffrt::cuda {

namespace kc = kernels::cuda;

template <class T>
T* CudaSession::take(size_t n) {
  void* p = nullptr;
  const size_t bytes = std::max<size_t>(sizeof(T) * n, 16);
  DIFFRT_CUDA_CHECK(cudaMalloc(&p, bytes));
  allocs_.push_back(p);
  bytes_ += bytes;
  return static_cast<T*>(p);
}

template <class T>
T* CudaSession::take_host(size_t n) {
  void* p = nullptr;
  DIFFRT_CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(sizeof(T) * n, 16)));
  host_allocs_.push_back(p);
  return static_cast<T*>(p);
}

CudaSession::CudaSession(std::shared_ptr<const DeviceModel> model, int batch, int max_context)
    : model_(std::move(model)), batch_(batch), max_context_(max_context) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length;
  check_session_args(batch, max_context, L);
  if (L > 1024) throw InvalidArgument("CUDA session: canvas_length > 1024 is not supported");
  const size_t M = size_t(batch) * L;
  const int H = c.n_embd, V = c.n_vocab, I = c.n_ff, E = c.n_expert, K = c.n_expert_used, Ie = c.n_ff_exp;
  const int qw = model_->max_q_width(), kvw = model_->max_kv_width(), W = c.sliding_window;
  max_keys_ = std::max(max_context, W - 1 + L);
  n_cached_.assign(size_t(batch), 0);
  try {
    DIFFRT_CUDA_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking));
    a_.x = take<float>(M * H);
    a_.xn = take<float>(M * H);
    a_.q = take<float>(M * qw);
    a_.k = take<float>(M * kvw);
    a_.v = take<float>(M * kvw);
    a_.attn = take<float>(M * qw);
    a_.h = take<float>(M * H);
    a_.g = take<float>(M * I);
    a_.u = take<float>(M * I);
    a_.h1 = take<float>(M * H);
    a_.h2 = take<float>(M * H);
    a_.w_topk = take<float>(M * K);
    a_.idx_topk = take<int32_t>(M * K);
    a_.pos = take<int32_t>(M);
    scores_ = take<float>(M * size_t(c.n_head) * max_keys_);
    const size_t slots = M * K;
    moe_.count = take<int32_t>(E);
    moe_.offset = take<int32_t>(E + 1);
    moe_.cursor = take<int32_t>(E);
    moe_.slot_of = take<int32_t>(slots);
    moe_.pos_of = take<int32_t>(slots);
    moe_.tiles = take<int32_t>(2 * size_t(kc::moe_max_tiles(int64_t(slots), E)) + 1);
    moe_.xg = take<float>(slots * H);
    moe_.hg = take<float>(slots * 2 * Ie);
    moe_.yg = take<float>(slots * H);
    moe_.amax = gemm_scratch_.act_amax = take<float>(slots);  // W8A8 row scales: dense GEMMs and experts
    // Split-K parts of the self-conditioning product (N = H, 8 parts): all rows at once, or chunks
    // of rows when that would pass 256 MB.
    gemm_scratch_.splitk_floats = std::min<int64_t>(8 * int64_t(M) * H, int64_t(1) << 26);
    gemm_scratch_.splitk = take<float>(size_t(gemm_scratch_.splitk_floats));
    a_.probs = take<float>(M * V);
    a_.logits = take<float>(M * V);
    sc_ = take<float>(M * V);
    const auto& layers = model_->w.layers;
    int64_t max_row = 0;
    int hd_of[2] = {0, 0};
    for (size_t il = 0; il < layers.size(); ++il) {
      const DLayer& l = layers[il];
      const int cap = l.sliding ? W - 1 + L : max_context;
      cap_.push_back(cap);
      row_stride_.push_back(int64_t(l.n_kv) * cap * l.head_dim);
      max_row = std::max(max_row, row_stride_.back());
      kc_.push_back(take<float>(size_t(batch) * row_stride_.back()));
      vc_.push_back(take<float>(size_t(batch) * row_stride_.back()));
      hd_of[l.sliding ? 1 : 0] = l.head_dim;
    }
    kv_tmp_ = take<float>(size_t(batch) * 2 * max_row);
    for (int kind = 0; kind < 2; ++kind) {
      if (!hd_of[kind]) continue;
      const size_t n = size_t(max_context) * hd_of[kind] / 2;
      std::vector<float> cs(n), sn(n);
      model_->rope_tables(kind == 1, max_context, cs.data(), sn.data());
      rope_cos_[kind] = take<float>(n);
      rope_sin_[kind] = take<float>(n);
      DIFFRT_CUDA_CHECK(cudaMemcpy(rope_cos_[kind], cs.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
      DIFFRT_CUDA_CHECK(cudaMemcpy(rope_sin_[kind], sn.data(), sizeof(float) * n, cudaMemcpyHostToDevice));
    }
    d_n_cached_ = take<int>(batch);
    d_rows_ = take<int>(batch);
    d_enc_rows_ = take<int>(batch);
    d_n_keys_ = take<int>(batch);
    d_key_pos0_ = take<int>(batch);
    d_q_pos0_ = take<int>(batch);
    tok_ = take<int32_t>(M);
    canvas_ = take<int32_t>(M);
    amax_ = take<int32_t>(M);
    sampled_ = take<int32_t>(M);
    H_ = take<float>(M);
    mean_H_ = take<float>(batch);
    accepted_ = take<uint8_t>(M);
    sc_rows_ = take<uint8_t>(batch);
    tape_ = take<int32_t>(2 * M);
    params_ = take<kc::RowParams>(batch);
    h_params_ = take_host<kc::RowParams>(batch);
    h_sc_rows_ = take_host<uint8_t>(batch);
    h_tape_ = take_host<int32_t>(2 * M);
    h_canvas_ = take_host<int32_t>(M);
    h_amax_ = take_host<int32_t>(M);
    h_accepted_ = take_host<uint8_t>(M);
    h_mean_H_ = take_host<float>(batch);
    all_rows_.resize(size_t(batch));
    h_rows_ = take_host<int32_t>(batch);
    h_chunk_ = take_host<int32_t>(M);
    graph_exec_.assign(2 * size_t(batch), nullptr);
    // Views of a step with no active row read these before any step wrote them.
    std::fill_n(h_canvas_, M, 0);
    std::fill_n(h_amax_, M, 0);
    std::fill_n(h_accepted_, M, 0);
    std::fill_n(h_mean_H_, batch, 0.f);
    std::vector<int> ident(static_cast<size_t>(batch));
    for (int r = 0; r < batch; ++r) ident[r] = r;
    DIFFRT_CUDA_CHECK(cudaMemcpy(d_rows_, ident.data(), sizeof(int) * batch, cudaMemcpyHostToDevice));
    upload_n_cached();
    // Self-conditioning input starts as zeros (uniform softmax), canvases as token 0: rows that
    // never started a canvas are computed (and ignored) on valid data.
    DIFFRT_CUDA_CHECK(cudaMemsetAsync(sc_, 0, sizeof(float) * M * V, st_));
    for (int32_t* p : {tok_, canvas_, amax_, sampled_, tape_})
      DIFFRT_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(int32_t) * (p == tape_ ? 2 * M : M), st_));
    DIFFRT_CUDA_CHECK(cudaMemsetAsync(H_, 0, sizeof(float) * M, st_));
    DIFFRT_CUDA_CHECK(cudaMemsetAsync(mean_H_, 0, sizeof(float) * batch, st_));
    DIFFRT_CUDA_CHECK(cudaMemsetAsync(accepted_, 0, M, st_));
    // Zero the caches: unused entries are never read, but a defined state makes dumps comparable.
    for (size_t il = 0; il < layers.size(); ++il) {
      DIFFRT_CUDA_CHECK(cudaMemsetAsync(kc_[il], 0, sizeof(float) * batch * row_stride_[il], st_));
      DIFFRT_CUDA_CHECK(cudaMemsetAsync(vc_[il], 0, sizeof(float) * batch * row_stride_[il], st_));
    }
    // The table copies above ran on the legacy stream, which st_ (non-blocking) does not wait for.
    DIFFRT_CUDA_CHECK(cudaDeviceSynchronize());
  } catch (...) {
    for (void* p : allocs_) cudaFree(p);
    for (void* p : host_allocs_) cudaFreeHost(p);
    if (h_logits_) cudaFreeHost(h_logits_);
    if (st_) cudaStreamDestroy(st_);
    throw;
  }
}

CudaSession::~CudaSession() {
  if (st_) cudaStreamSynchronize(st_);
  for (auto& g : graph_exec_)
    if (g) cudaGraphExecDestroy(g);
  for (void* p : allocs_) cudaFree(p);
  for (void* p : host_allocs_) cudaFreeHost(p);
  if (h_logits_) cudaFreeHost(h_logits_);
  if (st_) cudaStreamDestroy(st_);
}

void CudaSession::sync() { DIFFRT_CUDA_CHECK(cudaStreamSynchronize(st_)); }

void CudaSession::upload_n_cached() {
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(d_n_cached_, n_cached_.data(), sizeof(int) * batch_, cudaMemcpyHostToDevice, st_));
  sync();  // the host mirror may change again before the copy would run
}

int CudaSession::n_cached(int row) const {
  if (row < 0 || row >= batch_)
    throw InvalidArgument("row " + std::to_string(row) + " out of range [0, " + std::to_string(batch_) + ")");
  return n_cached_[row];
}

void CudaSession::reset() {
  std::fill(n_cached_.begin(), n_cached_.end(), 0);
  upload_n_cached();
}

void CudaSession::reset_row(int row) {
  n_cached(row);
  n_cached_[row] = 0;
  upload_n_cached();
}

struct CudaSession::Ops {
  using Mat = DMatrix;
  CudaSession& s;
  const ModelConfig& c;
  cudaStream_t st;
  bool tc;  // bf16 activations in the tensor-core GEMMs

  void gemm(const float* x, int64_t ldx, int64_t M, const DMatrix& w, float* y, int64_t ldy) {
    Timed t(s, "gemm", w.n, w.k);
    kc::gemm(st, x, ldx, M, w, y, ldy, tc, &s.gemm_scratch_);
  }
  void rms_norm(const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y, int64_t ldy) {
    Timed t(s, "rms_norm");
    kc::rms_norm(st, x, ldx, rows, n, w, eps, y, ldy);
  }
  void gelu_tanh_mul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n, float* h,
                     int64_t ldh) {
    Timed t(s, "gelu_tanh_mul");
    kc::gelu_tanh_mul(st, g, ldg, u, ldu, rows, n, h, ldh);
  }
  void copy(float* dst, const float* src, int64_t n) {
    Timed t(s, "copy");
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * size_t(n), cudaMemcpyDeviceToDevice, st));
  }
  void add(float* x, const float* y, int64_t n) {
    Timed t(s, "add");
    kc::add(st, x, y, n);
  }
  void add_rows(float* x, const float* y, int64_t row_elems, int n_rows, const uint8_t* mask) {
    Timed t(s, "add");
    kc::add_rows(st, x, y, row_elems, n_rows, mask);
  }
  void add_scale(float* x, const float* y, int64_t n, float v) {
    Timed t(s, "add");
    kc::add_scale(st, x, y, n, v);
  }
  void scale(float* x, int64_t n, float v) {
    Timed t(s, "scale");
    kc::scale(st, x, n, v);
  }
  void soft_cap(float* x, int64_t n, float cap) {
    Timed t(s, "soft_cap");
    kc::soft_cap(st, x, n, cap);
  }
  void softmax_rows(const float* src, float* dst, int64_t ld, int64_t rows, int64_t n) {
    Timed t(s, "softmax_rows");
    kc::softmax_rows(st, src, dst, ld, rows, n);
  }
  void round_to_bf16(float* x, int64_t n) {
    Timed t(s, "round_to_bf16");
    kc::round_to_bf16(st, x, n);
  }
  void embed(const DMatrix& E, const int32_t* ids, int64_t n, float v, float* out) {
    Timed t(s, "embed");
    kc::embed(st, E, ids, n, v, out);
  }
  void norm_rope(float* x, int64_t tokens, int n_head, int hd, const float* w, float eps, const int32_t* pos,
                 bool sliding) {
    Timed t(s, "norm_rope");
    kc::rms_norm_rope(st, x, tokens, n_head, hd, w, eps, pos, s.rope_cos_[sliding], s.rope_sin_[sliding]);
  }
  void router_topk(const float* x, int64_t ldx, int64_t M, const DMatrix& proj, const kernels::RouterSpec& spec,
                   int32_t* idx, float* w) {
    Timed t(s, "router_topk");
    kc::router_topk(st, x, ldx, M, c.n_embd, spec, static_cast<const float*>(proj.data), int(proj.n), idx, w);
  }
  void grouped_experts(const float* x, int64_t ldx, int64_t M, const int32_t* idx, const float* w, const DLayer& L,
                       kernels::Activation act, float* out, int64_t ldo) {
    Timed t(s, "grouped_experts", 2 * c.n_ff_exp, c.n_embd);
    kc::grouped_experts(st, x, ldx, M, c.n_embd, idx, w, c.n_expert_used, c.n_expert, c.n_ff_exp, L.gate_up_exps,
                        L.down_exps, act, s.moe_, out, ldo, tc);
  }
  void positions(const int* rows, int n_rows, int S, int32_t* pos) {
    Timed t(s, "positions");
    kc::positions(st, rows, s.d_n_cached_, n_rows, S, pos);
  }
  bool dumping() const { return false; }
  void dump(const std::string&, const float*, int64_t, int64_t) {}

  // K/V of the new tokens after each row's held entries (also n_keys/key_pos0/q_pos0 per row),
  // attention over them, then the encoder trims sliding caches to their last W-1 entries.
  void attend(int il, const DLayer& L, bool encoder, const int* d_rows, int n_rows, int S, dg::Activations& a) {
    Timed t(s, L.sliding ? "attention (sliding)" : "attention (full)");
    const int nh = c.n_head, hd = L.head_dim, kv = L.n_kv, W = c.sliding_window;
    const int qw = nh * hd, kvw = kv * hd;
    kc::kv_append(st, a.k, a.v, kvw, d_rows, s.d_n_cached_, n_rows, S, kv, hd, L.sliding, W, s.cap_[il],
                  s.row_stride_[il], s.kc_[il], s.vc_[il], s.d_n_keys_, s.d_key_pos0_, s.d_q_pos0_);
    kc::AttentionArgs at;
    at.n_rows = n_rows;
    at.n_q = S;
    at.n_head = nh;
    at.n_kv_head = kv;
    at.head_dim = hd;
    at.q = a.q;
    at.ldq = qw;
    at.k = s.kc_[il];
    at.v = s.vc_[il];
    at.kv_row_stride = s.row_stride_[il];
    at.kv_head_stride = int64_t(s.cap_[il]) * hd;
    at.kv_rows = d_rows;
    at.n_keys = s.d_n_keys_;
    at.key_pos0 = s.d_key_pos0_;
    at.q_pos0 = s.d_q_pos0_;
    at.causal = encoder;                       // §5.2; the decoder sees every key (§5.4)
    at.window = encoder && L.sliding ? W : 0;  // p - W < k <= p
    at.out = a.attn;
    at.ldo = qw;
    at.scores = s.scores_;
    at.max_keys = s.max_keys_;
    kc::attention(st, at);
    if (encoder && L.sliding)
      kc::kv_compact(st, d_rows, s.d_n_cached_, n_rows, S, kv, hd, W, s.cap_[il], s.row_stride_[il], s.kc_[il],
                     s.vc_[il], s.kv_tmp_);
  }
};

void CudaSession::encode(const int32_t* ids, int n_rows, int T, const int* rows) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  check_encode_args(ids, n_rows, T, rows, batch_, max_context_, n_cached_.data(), V);
  if (T == 0) return;
  sync();  // the pinned staging below may still feed an earlier copy
  for (int r = 0; r < n_rows; ++r) h_rows_[r] = rows ? rows[r] : r;
  // On the session's (non-blocking) stream: a legacy-stream copy would not be ordered before its kernels.
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(d_enc_rows_, h_rows_, sizeof(int) * n_rows, cudaMemcpyHostToDevice, st_));
  for (int t0 = 0; t0 < T; t0 += L) {  // chunks of at most L tokens (the workspace holds batch x L)
    const int S = std::min(L, T - t0);
    for (int r = 0; r < n_rows; ++r)
      std::copy(ids + int64_t(r) * T + t0, ids + int64_t(r) * T + t0 + S, h_chunk_ + int64_t(r) * S);
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(tok_, h_chunk_, sizeof(int32_t) * n_rows * S, cudaMemcpyHostToDevice, st_));
    Ops ops{*this, c, st_, model_->tensor_cores()};
    dg::encode_pass(ops, c, model_->w, a_, tok_, d_enc_rows_, n_rows, S);
    sync();
    for (int r = 0; r < n_rows; ++r) n_cached_[h_rows_[r]] += S;
    upload_n_cached();
  }
}

void CudaSession::decoder_pass(const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, int n_rows) {
  Ops ops{*this, model_->config(), st_, model_->tensor_cores()};
  dg::denoise_pass(ops, model_->config(), model_->w, a_, canvas, self_cond, sc_rows, d_rows_, n_rows);
}

// The canvas goes to tok_ and self_cond to the probs buffer (softmax in place), so the step state
// (canvas_, sc_) is left as it is.
const float* CudaSession::denoise(const int32_t* canvas, const float* self_cond) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  const size_t M = size_t(batch_) * L;
  check_denoise_args(canvas, batch_, L, V, max_context_, n_cached_.data(), "denoise");
  if (!h_logits_)  // only denoise() brings [B, L, V] logits to the host: pinned on first use
    DIFFRT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_logits_), sizeof(float) * M * V));
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(tok_, canvas, sizeof(int32_t) * M, cudaMemcpyHostToDevice, st_));
  if (self_cond)
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(a_.probs, self_cond, sizeof(float) * M * V, cudaMemcpyHostToDevice, st_));
  decoder_pass(tok_, self_cond ? a_.probs : nullptr, nullptr, batch_);
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_logits_, a_.logits, sizeof(float) * M * V, cudaMemcpyDeviceToHost, st_));
  sync();
  return h_logits_;
}

}  // namespace diffrt::cuda

// CUDA Session: buffers at creation, then the passes of spec §8 as kernel launches on one stream.
// layer_forward() reads like DiffusionGemma::layer_forward (models/diffusion_gemma.cpp); keep the two
// in step until the layer is shared between backends.
#include <algorithm>
#include <string>

#include "diffrt/error.h"
#include "kernels/cuda/cuda_session.h"
#include "runtime/session_args.h"

namespace diffrt::cuda {

namespace kc = kernels::cuda;

namespace {
__global__ void set_step_params_kernel(float* temp, int32_t* info, float T, int canvas, int step) {
  *temp = T;
  info[0] = canvas;
  info[1] = step;
}
}  // namespace

template <class T>
T* CudaSession::take(size_t n) {
  void* p = nullptr;
  const size_t bytes = std::max<size_t>(sizeof(T) * n, 16);
  DIFFRT_CUDA_CHECK(cudaMalloc(&p, bytes));
  allocs_.push_back(p);
  bytes_ += bytes;
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
    x_ = take<float>(M * H);
    xn_ = take<float>(M * H);
    q_ = take<float>(M * qw);
    k_ = take<float>(M * kvw);
    v_ = take<float>(M * kvw);
    attn_ = take<float>(M * qw);
    h_ = take<float>(M * H);
    g_ = take<float>(M * I);
    u_ = take<float>(M * I);
    h1_ = take<float>(M * H);
    h2_ = take<float>(M * H);
    w_topk_ = take<float>(M * K);
    idx_topk_ = take<int32_t>(M * K);
    pos_ = take<int32_t>(M);
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
    probs_ = take<float>(M * V);
    logits_ = take<float>(M * V);
    sc_ = take<float>(M * V);
    DIFFRT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_logits_), sizeof(float) * M * V));
    const auto& layers = model_->layers;
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
    temp_ = take<float>(1);
    step_info_ = take<int32_t>(2);
    accepted_ = take<uint8_t>(M);
    std::vector<int> ident(static_cast<size_t>(batch));
    for (int r = 0; r < batch; ++r) ident[r] = r;
    DIFFRT_CUDA_CHECK(cudaMemcpy(d_rows_, ident.data(), sizeof(int) * batch, cudaMemcpyHostToDevice));
    upload_n_cached();
    // Self-conditioning input starts as zeros (uniform softmax), never as uninitialised memory.
    DIFFRT_CUDA_CHECK(cudaMemsetAsync(sc_, 0, sizeof(float) * M * V, st_));
    // Zero the caches: unused entries are never read, but a defined state makes dumps comparable.
    for (size_t il = 0; il < layers.size(); ++il) {
      DIFFRT_CUDA_CHECK(cudaMemsetAsync(kc_[il], 0, sizeof(float) * batch * row_stride_[il], st_));
      DIFFRT_CUDA_CHECK(cudaMemsetAsync(vc_[il], 0, sizeof(float) * batch * row_stride_[il], st_));
    }
    sync();
  } catch (...) {
    for (void* p : allocs_) cudaFree(p);
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
  if (h_logits_) cudaFreeHost(h_logits_);
  if (st_) cudaStreamDestroy(st_);
}

void CudaSession::sync() { DIFFRT_CUDA_CHECK(cudaStreamSynchronize(st_)); }

void CudaSession::upload_n_cached() {
  DIFFRT_CUDA_CHECK(
      cudaMemcpyAsync(d_n_cached_, n_cached_.data(), sizeof(int) * batch_, cudaMemcpyHostToDevice, st_));
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

// One layer (spec §7) over n_rows x S tokens in x_. d_rows: cache row of each pass row (device).
void CudaSession::layer_forward(int il, bool encoder, const int* d_rows, int n_rows, int S) {
  const DLayer& L = model_->layers[il];
  const ModelConfig& c = model_->config();
  const int H = c.n_embd, nh = c.n_head, hd = L.head_dim, kv = L.n_kv, W = c.sliding_window, I = c.n_ff;
  const int qw = nh * hd, kvw = kv * hd;
  const int64_t M = int64_t(n_rows) * S;
  const float eps = c.rms_eps;
  const bool tc = model_->tensor_cores();
  const int kind = L.sliding ? 1 : 0;

  // ---- attention (§5.1) ----
  kc::rms_norm(st_, x_, H, M, H, L.attn_norm, eps, xn_, H);
  kc::gemm(st_, xn_, H, M, L.q, q_, qw, tc);
  kc::gemm(st_, xn_, H, M, L.k, k_, kvw, tc);
  if (L.sliding)
    kc::gemm(st_, xn_, H, M, L.v, v_, kvw, tc);
  else  // full layers: V = raw K
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(v_, k_, sizeof(float) * M * kvw, cudaMemcpyDeviceToDevice, st_));
  kc::rms_norm(st_, q_, hd, M * nh, hd, L.q_norm, eps, q_, hd);
  kc::rms_norm(st_, k_, hd, M * kv, hd, L.k_norm, eps, k_, hd);
  kc::rms_norm(st_, v_, hd, M * kv, hd, nullptr, eps, v_, hd);
  kc::rope(st_, q_, qw, M, nh, hd, pos_, rope_cos_[kind], rope_sin_[kind]);
  kc::rope(st_, k_, kvw, M, kv, hd, pos_, rope_cos_[kind], rope_sin_[kind]);
  kc::kv_append(st_, k_, v_, kvw, d_rows, d_n_cached_, n_rows, S, kv, hd, L.sliding, W, cap_[il], row_stride_[il],
                kc_[il], vc_[il], d_n_keys_, d_key_pos0_, d_q_pos0_);
  kc::AttentionArgs a;
  a.n_rows = n_rows;
  a.n_q = S;
  a.n_head = nh;
  a.n_kv_head = kv;
  a.head_dim = hd;
  a.q = q_;
  a.ldq = qw;
  a.k = kc_[il];
  a.v = vc_[il];
  a.kv_row_stride = row_stride_[il];
  a.kv_head_stride = int64_t(cap_[il]) * hd;
  a.kv_rows = d_rows;
  a.n_keys = d_n_keys_;
  a.key_pos0 = d_key_pos0_;
  a.q_pos0 = d_q_pos0_;
  a.causal = encoder;                       // §5.2; the decoder sees every key (§5.4)
  a.window = encoder && L.sliding ? W : 0;  // p - W < k <= p
  a.out = attn_;
  a.ldo = qw;
  a.scores = scores_;
  a.max_keys = max_keys_;
  kc::attention(st_, a);
  if (encoder && L.sliding)  // the dynamic cache keeps the last W-1 entries
    kc::kv_compact(st_, d_rows, d_n_cached_, n_rows, S, kv, hd, W, cap_[il], row_stride_[il], kc_[il], vc_[il],
                   kv_tmp_);
  kc::gemm(st_, attn_, qw, M, L.o, h_, H, tc);
  kc::rms_norm(st_, h_, H, M, H, L.post_attn_norm, eps, h_, H);
  kc::add(st_, x_, h_, M * H);  // x = x_in + post_attention_norm(h)

  // ---- dense MLP || MoE (§6) ----
  kc::rms_norm(st_, x_, H, M, H, L.ffn_norm, eps, xn_, H);
  kc::gemm(st_, xn_, H, M, L.ffn_gate, g_, I, tc);
  kc::gemm(st_, xn_, H, M, L.ffn_up, u_, I, tc);
  kc::gelu_tanh_mul(st_, g_, I, u_, I, M, I, g_, I);
  kc::gemm(st_, g_, I, M, L.ffn_down, h1_, H, tc);
  kc::rms_norm(st_, h1_, H, M, H, L.post_ffw_norm_1, eps, h1_, H);
  kc::router_topk(st_, x_, H, M, H, L.router_scale, L.router, c.n_expert, L.per_expert_scale, c.n_expert_used, eps,
                  idx_topk_, w_topk_);  // the router reads the residual x
  kc::rms_norm(st_, x_, H, M, H, L.pre_ffw_norm_2, eps, xn_, H);
  kc::grouped_experts(st_, xn_, H, M, H, idx_topk_, w_topk_, c.n_expert_used, c.n_expert, c.n_ff_exp, L.gate_up_exps,
                      L.down_exps, moe_, h2_, H, tc);
  kc::rms_norm(st_, h2_, H, M, H, L.post_ffw_norm_2, eps, h2_, H);
  kc::add(st_, h1_, h2_, M * H);
  kc::rms_norm(st_, h1_, H, M, H, L.post_ffw_norm, eps, h1_, H);
  kc::add_scale(st_, x_, h1_, M * H, encoder ? L.enc_scalar : L.dec_scalar);  // each stack's layer_scalar
}

void CudaSession::encode(const int32_t* ids, int n_rows, int T, const int* rows) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab, H = c.n_embd;
  if (n_rows < 1 || n_rows > batch_)
    throw InvalidArgument("encode: " + std::to_string(n_rows) + " rows for a session of batch " + std::to_string(batch_));
  if (T < 0) throw InvalidArgument("encode: negative token count");
  if (T == 0) return;
  std::vector<int> row_list(static_cast<size_t>(n_rows));
  std::vector<uint8_t> seen(static_cast<size_t>(batch_), 0);
  for (int r = 0; r < n_rows; ++r) {
    const int row = rows ? rows[r] : r;
    if (row < 0 || row >= batch_) throw InvalidArgument("encode: row " + std::to_string(row) + " out of range");
    if (seen[row]++) throw InvalidArgument("encode: row " + std::to_string(row) + " given twice");
    if (int64_t(n_cached_[row]) + T > max_context_)
      throw InvalidArgument("encode: row " + std::to_string(row) + " would hold " +
                            std::to_string(n_cached_[row] + int64_t(T)) + " tokens, beyond max_context " +
                            std::to_string(max_context_));
    row_list[r] = row;
  }
  for (int64_t i = 0; i < int64_t(n_rows) * T; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw InvalidArgument("encode: token id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(V) + ")");
  DIFFRT_CUDA_CHECK(cudaMemcpy(d_enc_rows_, row_list.data(), sizeof(int) * n_rows, cudaMemcpyHostToDevice));
  std::vector<int32_t> chunk(size_t(n_rows) * L);
  for (int t0 = 0; t0 < T; t0 += L) {  // chunks of at most L tokens (the workspace holds batch x L)
    const int S = std::min(L, T - t0);
    for (int r = 0; r < n_rows; ++r)
      std::copy(ids + int64_t(r) * T + t0, ids + int64_t(r) * T + t0 + S, chunk.data() + int64_t(r) * S);
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(tok_, chunk.data(), sizeof(int32_t) * n_rows * S, cudaMemcpyHostToDevice, st_));
    kc::positions(st_, d_enc_rows_, d_n_cached_, n_rows, S, pos_);
    kc::embed(st_, model_->embd, tok_, int64_t(n_rows) * S, model_->embed_scale(), x_);
    (void)H;
    for (int il = 0; il < c.n_layer; ++il) layer_forward(il, true, d_enc_rows_, n_rows, S);
    sync();
    for (int r = 0; r < n_rows; ++r) n_cached_[row_list[r]] += S;
    upload_n_cached();
  }
}

void CudaSession::decoder_pass(bool self_cond) {
  const ModelConfig& c = model_->config();
  const int H = c.n_embd, V = c.n_vocab, I = c.n_ff, L = c.canvas_length;
  const int64_t M = int64_t(batch_) * L;
  const float eps = c.rms_eps;
  const bool tc = model_->tensor_cores();
  kc::positions(st_, d_rows_, d_n_cached_, batch_, L, pos_);
  kc::embed(st_, model_->embd, canvas_, M, model_->embed_scale(), x_);  // e [M, H]
  if (self_cond) {  // §8: soft = softmax(s) @ E * sqrt(H) -> pre_norm -> gated MLP, added to e
    kc::softmax_rows(st_, sc_, probs_, V, M, V);
    if (model_->bf16_model()) kc::round_to_bf16(st_, probs_, M * V);
    DMatrix e_kn = model_->embd;  // E [V][H] read as B[k = vocab][n = hidden]
    e_kn.n = H;
    e_kn.k = V;
    e_kn.ld = H;
    e_kn.kn = true;
    kc::gemm(st_, probs_, V, M, e_kn, h_, H, tc);
    kc::scale(st_, h_, M * H, model_->embed_scale());
    kc::rms_norm(st_, h_, H, M, H, model_->sc_pre_norm, eps, xn_, H);
    kc::gemm(st_, xn_, H, M, model_->sc_gate, g_, I, tc);
    kc::gemm(st_, xn_, H, M, model_->sc_up, u_, I, tc);
    kc::gelu_tanh_mul(st_, g_, I, u_, I, M, I, g_, I);
    kc::gemm(st_, g_, I, M, model_->sc_down, h_, H, tc);
    kc::add(st_, x_, h_, M * H);
  }
  kc::rms_norm(st_, x_, H, M, H, nullptr, eps, x_, H);  // self_conditioning.post_norm
  for (int il = 0; il < c.n_layer; ++il) layer_forward(il, false, d_rows_, batch_, L);
  kc::rms_norm(st_, x_, H, M, H, model_->output_norm, eps, xn_, H);  // decoder.norm
  kc::gemm(st_, xn_, H, M, model_->embd, logits_, V, tc);           // tied LM head
  kc::soft_cap(st_, logits_, M * V, c.final_logit_softcapping);
}

const float* CudaSession::denoise(const int32_t* canvas, const float* self_cond) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  const size_t M = size_t(batch_) * L;
  for (int r = 0; r < batch_; ++r)
    if (int64_t(n_cached_[r]) + L > max_context_)
      throw InvalidArgument("denoise: row " + std::to_string(r) + " has " + std::to_string(n_cached_[r]) +
                            " cached tokens; a canvas of " + std::to_string(L) + " would exceed max_context " +
                            std::to_string(max_context_));
  for (size_t i = 0; i < M; ++i)
    if (canvas[i] < 0 || canvas[i] >= V)
      throw InvalidArgument("denoise: canvas id " + std::to_string(canvas[i]) + " out of range [0, " +
                            std::to_string(V) + ")");
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(canvas_, canvas, sizeof(int32_t) * M, cudaMemcpyHostToDevice, st_));
  if (self_cond)
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(sc_, self_cond, sizeof(float) * M * V, cudaMemcpyHostToDevice, st_));
  decoder_pass(self_cond != nullptr);
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_logits_, logits_, sizeof(float) * M * V, cudaMemcpyDeviceToHost, st_));
  sync();
  return h_logits_;
}

// ---- device-resident steps ----------------------------------------------------------------------

void CudaSession::set_canvas(const int32_t* canvas) {
  const ModelConfig& c = model_->config();
  const size_t M = size_t(batch_) * c.canvas_length;
  for (size_t i = 0; i < M; ++i)
    if (canvas[i] < 0 || canvas[i] >= c.n_vocab)
      throw InvalidArgument("set_canvas: id " + std::to_string(canvas[i]) + " out of range");
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(canvas_, canvas, sizeof(int32_t) * M, cudaMemcpyHostToDevice, st_));
  sync();
}

void CudaSession::random_canvas(int canvas_index, uint64_t seed) {
  const ModelConfig& c = model_->config();
  set_step_params_kernel<<<1, 1, 0, st_>>>(temp_, step_info_, 1.0f, canvas_index, 0);
  DIFFRT_CUDA_LAUNCHED("set_step_params");
  kc::init_canvas(st_, canvas_, int64_t(batch_) * c.canvas_length, c.canvas_length, c.n_vocab, step_info_, seed);
  sync();
}

void CudaSession::launch_step(const StepParams& p) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  const int64_t M = int64_t(batch_) * L;
  decoder_pass(p.self_cond);
  kc::token_stats(st_, logits_, sc_, M, V, L, temp_, step_info_, p.seed, true, p.round_sc_bf16, nullptr, amax_, H_,
                  sampled_);
  kc::accept_renoise(st_, H_, sampled_, batch_, L, V, p.entropy_bound, step_info_, p.seed, nullptr, nullptr,
                     accepted_, canvas_, mean_H_);
}

void CudaSession::step(const StepParams& p, bool use_graph) {
  const ModelConfig& c = model_->config();
  for (int r = 0; r < batch_; ++r)
    if (int64_t(n_cached_[r]) + c.canvas_length > max_context_)
      throw InvalidArgument("step: row " + std::to_string(r) + " has no room for a canvas");
  if (!(p.temperature > 0.f)) throw InvalidArgument("step: temperature must be > 0");
  if (!(p.entropy_bound > 0.0)) throw InvalidArgument("step: entropy_bound must be > 0");
  // Per-step values go to device memory through a launch argument (no host buffer to race with).
  set_step_params_kernel<<<1, 1, 0, st_>>>(temp_, step_info_, p.temperature, p.canvas, p.step);
  DIFFRT_CUDA_LAUNCHED("set_step_params");
  const int g = p.self_cond ? 1 : 0;
  if (use_graph && !graph_broken_) {
    cudaGraphExec_t& ex = graph_exec_[g];
    if (ex && (graph_seed_[g] != p.seed || graph_bound_[g] != p.entropy_bound || graph_round_[g] != p.round_sc_bf16)) {
      DIFFRT_CUDA_CHECK(cudaGraphExecDestroy(ex));
      ex = nullptr;
    }
    if (!ex) {
      cudaGraph_t graph = nullptr;
      DIFFRT_CUDA_CHECK(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal));
      try {
        launch_step(p);
      } catch (...) {
        cudaStreamEndCapture(st_, &graph);
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        graph_broken_ = true;
        throw;
      }
      DIFFRT_CUDA_CHECK(cudaStreamEndCapture(st_, &graph));
      const cudaError_t e = cudaGraphInstantiate(&ex, graph, 0);
      cudaGraphDestroy(graph);
      if (e != cudaSuccess) {
        cudaGetLastError();
        ex = nullptr;
        graph_broken_ = true;
        throw kc::CudaError(std::string("cudaGraphInstantiate failed: ") + cudaGetErrorString(e));
      }
      graph_seed_[g] = p.seed;
      graph_bound_[g] = p.entropy_bound;
      graph_round_[g] = p.round_sc_bf16;
    }
    DIFFRT_CUDA_CHECK(cudaGraphLaunch(ex, st_));
    graph_used_ = true;
  } else {
    launch_step(p);
  }
}

void CudaSession::read_step(int32_t* canvas, int32_t* argmax, float* entropy, uint8_t* accepted, int32_t* sampled,
                            float* logits) {
  const ModelConfig& c = model_->config();
  const size_t M = size_t(batch_) * c.canvas_length;
  auto get = [&](void* dst, const void* src, size_t bytes) {
    if (dst) DIFFRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st_));
  };
  get(canvas, canvas_, sizeof(int32_t) * M);
  get(argmax, amax_, sizeof(int32_t) * M);
  get(entropy, H_, sizeof(float) * M);
  get(accepted, accepted_, M);
  get(sampled, sampled_, sizeof(int32_t) * M);
  get(logits, logits_, sizeof(float) * M * c.n_vocab);
  sync();
}

float CudaSession::time_steps(int n, const StepParams& p, bool use_graph) {
  if (n < 1) throw InvalidArgument("time_steps: n must be >= 1");
  StepParams q = p;
  step(q, use_graph);  // warm-up (and graph capture)
  sync();
  cudaEvent_t e0, e1;
  DIFFRT_CUDA_CHECK(cudaEventCreate(&e0));
  DIFFRT_CUDA_CHECK(cudaEventCreate(&e1));
  float ms = 0.f;
  try {
    DIFFRT_CUDA_CHECK(cudaEventRecord(e0, st_));
    for (int i = 0; i < n; ++i) {
      q.step = p.step + 1 + i;
      step(q, use_graph);
    }
    DIFFRT_CUDA_CHECK(cudaEventRecord(e1, st_));
    DIFFRT_CUDA_CHECK(cudaEventSynchronize(e1));
    DIFFRT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  } catch (...) {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    throw;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / float(n);
}

}  // namespace diffrt::cuda

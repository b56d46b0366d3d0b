// CPU Session: allocates the KV cache and every activation buffer at creation (one arena), then
// runs encoder chunks and denoising steps on them without allocating.
#include <algorithm>
#include <string>

#include "diffrt/error.h"
#include "format/gguf_names.h"
#include "models/architectures.h"
#include "runtime/cpu_session.h"
#include "runtime/session_args.h"

namespace diffrt {

std::shared_ptr<Model> Model::load(const std::string& path, const LoadOptions& opt) {
  std::string arch;
  {
    auto f = GGUFFile::open(path);  // only its architecture key here; the model opens and checks the rest
    const GGUFValue* v = f->find(names::KEY_ARCHITECTURE);
    arch = v ? v->as_string(names::KEY_ARCHITECTURE) : "";
  }
  return find_architecture(arch, path).open(path, opt);
}

std::unique_ptr<Session> Session::create(std::shared_ptr<const Model> model, int batch, int max_context) {
  if (!model) throw InvalidArgument("Session::create: no model");
  return find_architecture(model->architecture(), model->file().path())
      .cpu_session(std::move(model), batch, max_context);
}

CpuSession::CpuSession(std::shared_ptr<const dg::DiffusionGemma> model, int batch, int max_context)
    : model_(std::move(model)), batch_(batch), max_context_(max_context) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length;
  check_session_args(batch, max_context, L);
  const int64_t Mt = int64_t(batch) * L;
  // bf16/int8: the packed GEMMs' activation buffers (one per calling thread) get their full size
  // on first use instead of growing inside a step.
  const int H = c.n_embd, V = c.n_vocab, I = c.n_ff, E = c.n_expert, K = c.n_expert_used, Ie = c.n_ff_exp;
  if (model_->packed_max_k() > 0) {
    kernels::reserve_packed_gemm_scratch(Mt, model_->packed_max_k());
    kernels::reserve_nested_packed_gemm_scratch(model_->pool(), Mt, std::max(H, Ie));  // MoE experts' GEMMs
  }
  const int qw = model_->max_q_width(), kvw = model_->max_kv_width();
  const int W = c.sliding_window;
  const int max_keys = std::max(max_context, W - 1 + L);
  const int threads = model_->pool().size();
  const auto& layers = model_->layers();

  cache_.batch = batch;
  cache_.max_context = max_context;
  cache_.n_cached.assign(size_t(batch), 0);
  cache_.cap.resize(layers.size());
  cache_.k.resize(layers.size());
  cache_.v.resize(layers.size());
  for (size_t il = 0; il < layers.size(); ++il) cache_.cap[il] = layers[il].sliding ? W - 1 + L : max_context;

  int hd_of[2] = {0, 0};  // head dim per layer kind: [0] full, [1] sliding
  for (const auto& l : layers) hd_of[l.sliding ? 1 : 0] = l.head_dim;

  arena_.layout([&](Arena& a) {
    dg::Workspace& w = ws_;
    w.max_tokens = int(Mt);
    w.x = a.take<float>(Mt * H);
    w.xn = a.take<float>(Mt * H);
    w.q = a.take<float>(Mt * qw);
    w.k = a.take<float>(Mt * kvw);
    w.v = a.take<float>(Mt * kvw);
    w.attn = a.take<float>(Mt * qw);
    w.h = a.take<float>(Mt * H);
    w.g = a.take<float>(Mt * I);
    w.u = a.take<float>(Mt * I);
    w.h1 = a.take<float>(Mt * H);
    w.h2 = a.take<float>(Mt * H);
    w.z = a.take<float>(Mt * H);
    w.scores = a.take<float>(Mt * E);
    w.w_topk = a.take<float>(Mt * K);
    w.idx_topk = a.take<int32_t>(Mt * K);
    w.pos = a.take<int32_t>(Mt);
    w.moe.slot_of = a.take<int32_t>(Mt * K);
    w.moe.count = a.take<int32_t>(E + 1);
    w.moe.xg = a.take<float>(Mt * K * H);
    w.moe.hg = a.take<float>(Mt * K * 2 * Ie);
    w.moe.yg = a.take<float>(Mt * K * H);
    w.att_scratch_per_thread = kernels::attention_scratch_floats(max_keys);
    w.att_scratch = a.take<float>(size_t(threads) * w.att_scratch_per_thread);
    w.probs = a.take<float>(Mt * V);
    w.logits = a.take<float>(Mt * V);
    for (size_t il = 0; il < layers.size(); ++il) {
      const size_t n = size_t(batch) * cache_.row_stride(int(il), layers[il]);
      cache_.k[il] = a.take<float>(n);
      cache_.v[il] = a.take<float>(n);
    }
    for (int kind = 0; kind < 2; ++kind) {
      rope_cos_[kind] = a.take<float>(size_t(max_context) * hd_of[kind] / 2);
      rope_sin_[kind] = a.take<float>(size_t(max_context) * hd_of[kind] / 2);
    }
    chunk_ids_ = a.take<int32_t>(Mt);
    canvas_ = a.take<int32_t>(Mt);
    amax_ = a.take<int32_t>(Mt);
    sampled_ = a.take<int32_t>(Mt);
    H_ = a.take<float>(Mt);
    mean_H_ = a.take<float>(batch);
    sc_ = a.take<float>(Mt * V);  // zeros: finite in rows that never stepped
    accepted_ = a.take<uint8_t>(Mt);
    sc_rows_ = a.take<uint8_t>(batch);
    order_ = a.take<int>(Mt);
  });
  for (int kind = 0; kind < 2; ++kind)
    if (hd_of[kind]) model_->rope_tables(kind == 1, max_context, rope_cos_[kind], rope_sin_[kind]);
}

int CpuSession::n_cached(int row) const {
  if (row < 0 || row >= batch_)
    throw InvalidArgument("row " + std::to_string(row) + " out of range [0, " + std::to_string(batch_) + ")");
  return cache_.n_cached[row];
}

void CpuSession::encode(const int32_t* ids, int n_rows, int T, const int* rows) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  check_encode_args(ids, n_rows, T, rows, batch_, max_context_, cache_.n_cached.data(), V);
  if (T == 0) return;
  const dg::DebugHook* hook = hook_ ? &hook_ : nullptr;
  // Chunks of at most L tokens: the workspace holds batch x L tokens, and a causal pass over
  // consecutive chunks equals one pass over the whole sequence.
  for (int t0 = 0; t0 < T; t0 += L) {
    const int S = std::min(L, T - t0);
    for (int r = 0; r < n_rows; ++r)
      std::copy(ids + int64_t(r) * T + t0, ids + int64_t(r) * T + t0 + S, chunk_ids_ + r * S);
    model_->encode(ws_, cache_, rope_cos_, rope_sin_, chunk_ids_, rows, n_rows, S, hook);
  }
}

const float* CpuSession::denoise(const int32_t* canvas, const float* self_cond) {
  const ModelConfig& c = model_->config();
  check_denoise_args(canvas, batch_, c.canvas_length, c.n_vocab, max_context_, cache_.n_cached.data(), "denoise");
  return pass(canvas, self_cond, nullptr, batch_);
}

const float* CpuSession::pass(const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, int n_rows) {
  // The model's pass covers rows 0..cache.batch-1 (row strides do not depend on it): shrink it
  // for this pass only.
  struct Restore {
    dg::KVCache& cache;
    int batch;
    ~Restore() { cache.batch = batch; }
  } restore{cache_, cache_.batch};
  cache_.batch = n_rows;
  model_->denoise(ws_, cache_, rope_cos_, rope_sin_, canvas, self_cond, sc_rows, hook_ ? &hook_ : nullptr);
  return ws_.logits;
}

void CpuSession::load_cache(int layer, int row, int T, const float* k, const float* v) {
  const auto& layers = model_->layers();
  if (layer < 0 || layer >= int(layers.size())) throw InvalidArgument("load_cache: layer out of range");
  n_cached(row);  // range check
  if (T < 0 || T + model_->config().canvas_length > max_context_) throw InvalidArgument("load_cache: T out of range");
  const auto& L = layers[layer];
  const int n = L.sliding ? std::min(T, model_->config().sliding_window - 1) : T;
  const int64_t hd = L.head_dim, cap = cache_.cap[layer];
  for (int j = 0; j < L.n_kv; ++j) {
    const int64_t dst = row * cache_.row_stride(layer, L) + j * cap * hd;
    std::copy(k + j * n * hd, k + (j + 1) * n * hd, cache_.k[layer] + dst);
    std::copy(v + j * n * hd, v + (j + 1) * n * hd, cache_.v[layer] + dst);
  }
  cache_.n_cached[row] = T;
}

void CpuSession::reset() { std::fill(cache_.n_cached.begin(), cache_.n_cached.end(), 0); }

void CpuSession::reset_row(int row) {
  n_cached(row);  // range check
  cache_.n_cached[row] = 0;
}

}  // namespace diffrt

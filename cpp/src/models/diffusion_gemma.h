// DiffusionGemma (spec §4-8): hyper-parameters, weight table and the two model passes.
//
// The Model holds the mmap'd file and Matrix views of its weights (no copies, except the small
// norm/scale vectors decoded to f32 at load). The passes run on a Session's buffers (Workspace)
// and KV cache (KVCache); they allocate nothing.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "diffrt/model.h"
#include "kernels/cpu/pack.h"
#include "kernels/kernels.h"
#include "models/diffusion_gemma_passes.h"

namespace diffrt::dg {

using kernels::Matrix;

using LayerWeights = Layer<Matrix>;

// The CPU session's buffers: the activations of the passes plus the CPU kernels' scratch.
struct Workspace : Activations {
  int max_tokens = 0;
  float *z = nullptr, *scores = nullptr;  // router scratch
  kernels::MoeScratch moe;
  float* att_scratch = nullptr;
  int64_t att_scratch_per_thread = 0;
};

// KV cache: per layer, per session row, K and V as [kv][cap][hd]. Full layers: cap = max_context
// (entries = absolute positions). Sliding layers: cap = W-1 + canvas_length; entries 0..n-1 hold
// the last n = min(T, W-1) positions T-n..T-1; the room after them takes the new tokens of a pass.
struct KVCache {
  int batch = 0, max_context = 0;
  std::vector<int> cap;       // per layer
  std::vector<float*> k, v;   // per layer: base of row 0; row stride = kv*cap*hd
  std::vector<int> n_cached;  // per row: tokens seen (T)
  int64_t row_stride(int layer, const LayerWeights& lw) const { return int64_t(lw.n_kv) * cap[layer] * lw.head_dim; }
};

// Optional per-layer dump for parity debugging: name ("enc.layer3.out", "dec.input", ...), data
// [rows][cols] (row stride cols).
using DebugHook = std::function<void(const std::string& name, const float* data, int64_t rows, int64_t cols)>;

class DiffusionGemma final : public Model {
 public:
  static std::shared_ptr<DiffusionGemma> open(const std::string& path, const LoadOptions& opt);
  const ModelConfig& config() const override { return cfg_; }
  const GGUFFile& file() const override { return *file_; }
  ComputeType compute_type() const override { return compute_type_; }
  const char* architecture() const override { return names::ARCH; }
  // The stored type of the layer weights ("auto" compute types follow it): the first layer's q.
  GGMLType layer_weight_type() const { return w_.layers.empty() ? w_.embd.type : w_.layers[0].q.type; }
  // Largest k of a packed weight (0 for f32): a Session reserves the packed GEMM's activation
  // buffer for (its tokens, this k) so that no step allocates.
  int64_t packed_max_k() const { return packed_max_k_; }

  ThreadPool& pool() const { return *pool_; }
  const std::vector<LayerWeights>& layers() const { return w_.layers; }
  const Weights<Matrix>& weights() const { return w_; }
  bool bf16_model() const { return w_.bf16; }  // model dtype bf16: embed scale / rope tables rounded
  float embed_scale() const { return w_.embed_scale; }
  int max_head_dim() const;
  int max_kv_width() const;  // max over layers of n_kv * head_dim
  int max_q_width() const;   // max over layers of n_head * head_dim

  // RoPE tables [max_pos][hd/2] for one layer kind (sliding or full), per spec §4.1.
  void rope_tables(bool sliding, int max_pos, float* cos, float* sin) const;

  // Encoder pass over S <= canvas_length new tokens for each of n_rows session rows (ids [n_rows][S]),
  // at positions n_cached(row) ...; appends K/V to the cache and advances n_cached.
  void encode(Workspace& ws, KVCache& cache, const float* const* rope_cos, const float* const* rope_sin,
              const int32_t* ids, const int* rows, int n_rows, int S, const DebugHook* hook) const;
  // Decoder pass over the canvas [batch][L] of every row; self_cond [batch][L][V] or nullptr, added
  // to the rows with sc_rows[row] != 0 (sc_rows nullptr: all). Leaves the cache logically
  // unchanged; writes logits [batch][L][V] into ws.logits.
  void denoise(Workspace& ws, KVCache& cache, const float* const* rope_cos, const float* const* rope_sin,
               const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, const DebugHook* hook) const;

 private:
  void load_weights();
  void pack_weights(ComputeType requested);  // diffusion_gemma_pack.cpp

  std::unique_ptr<GGUFFile> file_;
  ModelConfig cfg_;
  std::unique_ptr<ThreadPool> pool_;
  Weights<Matrix> w_;
  std::vector<std::vector<float>> vectors_;  // f32 copies of the small vectors
  ComputeType compute_type_ = ComputeType::F32;
  std::vector<std::unique_ptr<kernels::PackedMatrix[]>> packs_;  // owners of Matrix::packed
  int64_t packed_max_k_ = 0;
};

}  // namespace diffrt::dg

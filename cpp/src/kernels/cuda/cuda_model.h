// DiffusionGemma weights on the device (the CUDA backend's Model): uploaded once from a GGUF file
// (through the CPU model's validated weight table) or made directly on the device with random
// values for benchmarking. Matrices are f32 (compute type "f32"), bf16 ("bf16") or int8 with a
// scale per row ("int8"); norm vectors,
// scalars and the router projection are always f32 (near-tied router scores must not flip).
//
// Duplication note: the layer table mirrors dg::LayerWeights with device pointers; unify once the
// CPU model can describe weights independently of where they live.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffrt/model.h"
#include "kernels/cuda/kernels_cuda.h"

namespace diffrt::dg {
class DiffusionGemma;
}

namespace diffrt::cuda {

using kernels::cuda::DMatrix;

struct DLayer {
  bool sliding = false;
  int head_dim = 0, n_kv = 0;
  DMatrix q, k, v, o, ffn_gate, ffn_up, ffn_down, gate_up_exps, down_exps;  // v: sliding layers only
  const float* router = nullptr;  // f32 [E][H]
  const float *attn_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr, *post_attn_norm = nullptr;
  const float *ffn_norm = nullptr, *post_ffw_norm_1 = nullptr, *pre_ffw_norm_2 = nullptr, *router_scale = nullptr;
  const float *per_expert_scale = nullptr, *post_ffw_norm_2 = nullptr, *post_ffw_norm = nullptr;
  float enc_scalar = 1.f, dec_scalar = 1.f;
};

class DeviceModel {
 public:
  // compute_type: "auto" (bf16 for a BF16 embedding, else f32), "f32", "bf16" or "int8" (W8A16:
  // per-row int8 weights dequantized to bf16 in the tensor-core GEMM, bf16 activations). Throws
  // InvalidArgument for anything else, CudaError when the device cannot hold the weights.
  static std::shared_ptr<DeviceModel> from_file(const std::string& path, const std::string& compute_type);
  // Random weights (uniform, std 0.02; norms and scales 1) of the given shape, made on the device.
  static std::shared_ptr<DeviceModel> random(const ModelConfig& cfg, const std::string& compute_type, uint64_t seed);
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const std::string& compute_type() const { return compute_type_; }
  bool tensor_cores() const { return compute_type_ != "f32"; }  // bf16 activations in the GEMMs
  bool bf16_model() const { return bf16_model_; }                 // spec §4 roundings (embed scale, rope, probs)
  float embed_scale() const { return embed_scale_; }
  size_t weight_bytes() const { return bytes_; }
  int max_head_dim() const;
  int max_kv_width() const;
  int max_q_width() const { return cfg_.n_head * max_head_dim(); }
  // The CPU model the weights came from (file-backed models), or nullptr (random models).
  const dg::DiffusionGemma* host() const { return host_.get(); }
  // Host RoPE tables [max_pos][hd/2] for one layer kind (spec §4.1).
  void rope_tables(bool sliding, int max_pos, float* cos, float* sin) const;

  DMatrix embd;  // [V][H]
  DMatrix sc_gate, sc_up, sc_down;
  const float *output_norm = nullptr, *sc_pre_norm = nullptr;
  std::vector<DLayer> layers;

 private:
  DeviceModel() = default;
  void* alloc(size_t bytes);
  DMatrix new_matrix(int64_t n, int64_t k, bool f32 = false);
  float* new_vector(int64_t n);

  ModelConfig cfg_;
  std::string compute_type_;
  bool bf16_model_ = false;
  float embed_scale_ = 1.f;
  size_t bytes_ = 0;
  std::vector<void*> allocs_;
  std::shared_ptr<const dg::DiffusionGemma> host_;  // file-backed models: rope tables from the CPU model
};

}  // namespace diffrt::cuda

// DiffusionGemma weights on the device (the CUDA backend's Model): uploaded once from a GGUF file
// (through the CPU model's validated weight table) or made directly on the device with random
// values for benchmarking. Matrices are f32 (compute type "f32"), bf16 ("bf16") or int8 with a
// scale per row ("int8"); norm vectors,
// scalars and the router projection are always f32 (near-tied router scores must not flip).
// The weight table is the CPU model's (dg::Weights, models/diffusion_gemma_passes.h) with device
// matrices, so both backends run the same passes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffrt/model.h"
#include "kernels/cuda/kernels_cuda.h"
#include "models/diffusion_gemma_passes.h"

namespace diffrt::dg {
class DiffusionGemma;
}

namespace diffrt::cuda {

using kernels::cuda::DMatrix;

using DLayer = dg::Layer<DMatrix>;

class DeviceModel {
 public:
  // compute_type: one of supported_compute_types(Device::Cuda), resolved by resolve_compute_type
  // (diffrt/compute_type.h). int8 = per-row int8 weights, W8A8 with per-row int8 activations and
  // int32 accumulation, except the self-conditioning product probs·E, W8A16 (the CPU's policy);
  // int8-w8a16: every int8 GEMM dequantizes the weights to bf16. Throws CudaError when the device
  // cannot hold the weights.
  static std::shared_ptr<DeviceModel> from_file(const std::string& path, ComputeType compute_type);
  // Random weights (uniform, std 0.02; norms and scales 1) of the given shape, made on the device.
  static std::shared_ptr<DeviceModel> random(const ModelConfig& cfg, ComputeType compute_type, uint64_t seed);
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  ComputeType compute_type() const { return compute_type_; }
  bool tensor_cores() const { return compute_type_ != ComputeType::F32; }  // bf16 activations in the GEMMs
  bool bf16_model() const { return w.bf16; }  // spec §4 roundings (embed scale, rope, probs)
  float embed_scale() const { return w.embed_scale; }
  size_t weight_bytes() const { return bytes_; }
  int max_head_dim() const;
  int max_kv_width() const;
  int max_q_width() const { return cfg_.n_head * max_head_dim(); }
  // The CPU model the weights came from (file-backed models), or nullptr (random models).
  const dg::DiffusionGemma* host() const { return host_.get(); }
  std::shared_ptr<const dg::DiffusionGemma> host_model() const { return host_; }
  // Host RoPE tables [max_pos][hd/2] for one layer kind (spec §4.1).
  void rope_tables(bool sliding, int max_pos, float* cos, float* sin) const;

  dg::Weights<DMatrix> w;

 private:
  DeviceModel() = default;
  void* alloc(size_t bytes);
  DMatrix new_matrix(int64_t n, int64_t k, bool f32 = false);
  float* new_vector(int64_t n);

  ModelConfig cfg_;
  ComputeType compute_type_ = ComputeType::F32;
  size_t bytes_ = 0;
  std::vector<void*> allocs_;
  std::shared_ptr<const dg::DiffusionGemma> host_;  // file-backed models: rope tables from the CPU model
};

}  // namespace diffrt::cuda

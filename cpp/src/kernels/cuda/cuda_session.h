// The CUDA Session (implements diffrt/session.h on the GPU): the KV cache and every activation
// buffer are cudaMalloc'd at creation; encode()/denoise() launch kernels on the session's stream
// and allocate nothing. denoise() returns logits in a pinned host buffer (the Session contract),
// so the C++ generation loop (runtime/generate.cpp) runs unchanged on GPU passes.
//
// The device hot path: step() runs one whole denoising step on the device — decoder pass on the
// device canvas (+ self-conditioning from the previous step), token stats, acceptance and renoise
// with the same Philox streams as the CPU sampler — optionally captured once as a CUDA graph and
// replayed (step/canvas index and temperature live in device memory; the seed and bound are part of
// the captured launch, a new value re-captures). No adaptive stopping on the device yet.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "diffrt/session.h"
#include "kernels/cuda/cuda_model.h"

namespace diffrt::cuda {

struct StepParams {
  int canvas = 0, step = 0;  // Philox address of the draws
  float temperature = 1.0f;
  uint64_t seed = 0;
  double entropy_bound = 0.1;
  bool self_cond = false;      // use the previous step's processed logits
  bool round_sc_bf16 = false;  // round them to bf16 (transformers casts to the model dtype)
};

class CudaSession final : public Session {
 public:
  CudaSession(std::shared_ptr<const DeviceModel> model, int batch, int max_context);
  ~CudaSession() override;
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  int batch() const override { return batch_; }
  int max_context() const override { return max_context_; }
  int n_cached(int row) const override;
  void encode(const int32_t* ids, int n_rows, int T, const int* rows = nullptr) override;
  const float* denoise(const int32_t* canvas, const float* self_cond) override;
  void reset() override;
  void reset_row(int row) override;

  const DeviceModel& model() const { return *model_; }

  // ---- device-resident steps ----
  void set_canvas(const int32_t* canvas);                  // host [B, L] -> device canvas
  void random_canvas(int canvas_index, uint64_t seed);     // Init stream, as the CPU loop
  void step(const StepParams& p, bool use_graph);
  // Host copies of the last step's results ([B, L] each; nullptr skips).
  void read_step(int32_t* canvas, int32_t* argmax, float* entropy, uint8_t* accepted, int32_t* sampled,
                 float* logits);
  // Mean wall time of n steps in ms (after one warm-up step), timed with CUDA events.
  float time_steps(int n, const StepParams& p, bool use_graph);
  bool graph_used() const { return graph_used_; }
  size_t device_bytes() const { return bytes_; }

 private:
  template <class T>
  T* take(size_t n);
  struct Ops;  // the op set of models/diffusion_gemma_passes.h on this session's buffers
  void decoder_pass(bool self_cond);
  void launch_step(const StepParams& p);
  void upload_n_cached();
  void sync();

  std::shared_ptr<const DeviceModel> model_;
  int batch_, max_context_, max_keys_ = 0;
  cudaStream_t st_ = nullptr;
  std::vector<void*> allocs_;
  size_t bytes_ = 0;
  std::vector<int> n_cached_;  // host mirror of d_n_cached_

  dg::Activations a_;  // [M = batch * L][width]
  float* scores_;      // attention scores
  kernels::cuda::MoeScratch moe_;
  float* sc_;          // [M][V] processed logits of the last step (the next self-conditioning)
  float* h_logits_ = nullptr;     // pinned host copy of the logits
  std::vector<float*> kc_, vc_;   // per layer, [batch][kv][cap][hd]
  std::vector<int> cap_;
  std::vector<int64_t> row_stride_;
  float* kv_tmp_;
  float *rope_cos_[2] = {nullptr, nullptr}, *rope_sin_[2] = {nullptr, nullptr};
  int *d_n_cached_, *d_rows_, *d_enc_rows_, *d_n_keys_, *d_key_pos0_, *d_q_pos0_;
  int32_t *tok_, *canvas_, *amax_, *sampled_;
  float *H_, *mean_H_, *temp_;
  int32_t* step_info_;
  uint8_t* accepted_;

  cudaGraphExec_t graph_exec_[2] = {nullptr, nullptr};  // [self_cond]
  uint64_t graph_seed_[2] = {0, 0};
  double graph_bound_[2] = {0, 0};
  bool graph_round_[2] = {false, false};
  bool graph_broken_ = false, graph_used_ = false;
};

}  // namespace diffrt::cuda

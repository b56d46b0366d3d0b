// The CUDA Session (implements diffrt/session.h on the GPU): the KV cache and every activation
// buffer are cudaMalloc'd at creation; encode()/step() launch kernels on the session's stream and
// allocate nothing. denoise() (parity tests, the low-level API) returns logits in a pinned host
// buffer made by its first call.
//
// The device hot path (cuda_step.cu): step() runs a whole denoising step on the device — decoder
// pass on the device canvas (self-conditioned per row), token stats, acceptance and renoise with the
// same Philox streams as the CPU sampler — as a CUDA graph captured once and replayed (every per-row
// setting lives in device memory, so nothing re-captures), and copies back only [B, L] results.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "diffrt/session.h"
#include "kernels/cuda/cuda_model.h"

namespace diffrt::cuda {

// One setting for every row (benchmarks and tests): row r draws as generate()'s row r.
struct StepParams {
  int canvas = 0, step = 0;  // Philox address of the draws
  float temperature = 1.0f;
  uint64_t seed = 0;
  double entropy_bound = 0.1;
  bool self_cond = false;      // use the previous step's processed logits
  bool round_sc_bf16 = false;  // round them to bf16 (transformers casts to the model dtype)
};

// Device time of one kind of op in a profiled step (name: the op, GEMMs with their N x K).
struct OpProfile {
  std::string name;
  float ms = 0;
  int calls = 0;
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
  const ModelConfig& config() const override { return model_->config(); }

  void start_canvas(int row, const int32_t* tokens) override;
  StepView step(const RowStep* rows, bool self_cond_bf16) override;

  // ---- benchmarks and tests ----
  void set_canvas(const int32_t* canvas);               // host [B, L] -> device canvas (and argmax)
  void random_canvas(int canvas_index, uint64_t seed);  // Init stream, as generate()
  void step_all(const StepParams& p, bool use_graph);   // results stay on the device (read_step)
  // Host copies of the last step's results ([B, L] each; nullptr skips).
  void read_step(int32_t* canvas, int32_t* argmax, float* entropy, uint8_t* accepted, int32_t* sampled, float* logits);
  // Mean wall time of n steps in ms (after one warm-up step), timed with CUDA events.
  float time_steps(int n, const StepParams& p, bool use_graph);
  // One step of plain launches with CUDA events around every op: where a step's time goes, most
  // first (the events add a little time of their own; use time_steps for the step's time).
  std::vector<OpProfile> profile_step(const StepParams& p);
  bool graph_used() const { return graph_used_; }
  size_t device_bytes() const { return bytes_; }

 private:
  template <class T>
  T* take(size_t n);
  template <class T>
  T* take_host(size_t n);  // pinned
  struct Ops;              // the op set of models/diffusion_gemma_passes.h on this session's buffers
  void decoder_pass(const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, int n_rows);
  void upload_rows(const RowStep* rows, bool round_bf16);                     // per-row settings and tapes -> device
  int launch_rows(const RowStep* rows, bool self_cond_bf16, bool use_graph);  // checks, upload, run
  // The step over rows 0..n_rows-1: a graph per (self-conditioning mode, row count), captured on
  // first use and replayed, or plain launches.
  void run_step(bool self_cond, int n_rows, bool use_graph);
  void launch_step(bool self_cond, int n_rows);
  // Profiling (profile_step): an event before and after each op while profiling_ is set (ops do
  // not nest: the events pair up in order).
  struct Timed {
    CudaSession& s;
    const char* name;
    int64_t n, k;
    Timed(CudaSession& s_, const char* name_, int64_t n_ = -1, int64_t k_ = -1) : s(s_), name(name_), n(n_), k(k_) {
      if (s.profiling_) s.prof_mark(nullptr, 0, 0);
    }
    ~Timed() {
      if (s.profiling_) s.prof_mark(name, n, k);
    }
  };
  void prof_mark(const char* name, int64_t n, int64_t k);
  void upload_n_cached();
  void sync();

  std::shared_ptr<const DeviceModel> model_;
  int batch_, max_context_, max_keys_ = 0;
  cudaStream_t st_ = nullptr;
  std::vector<void*> allocs_, host_allocs_;
  size_t bytes_ = 0;
  std::vector<int> n_cached_;  // host mirror of d_n_cached_

  dg::Activations a_;                        // [M = batch * L][width]
  float* scores_;                            // attention scores
  kernels::cuda::GemmScratch gemm_scratch_;  // W8A8 row scales [M * top_k], split-K parts
  kernels::cuda::MoeScratch moe_;
  float* sc_;                    // [M][V] processed logits of the last step (the next self-conditioning)
  float* h_logits_ = nullptr;    // pinned host copy of the logits (denoise(), allocated by its first call)
  std::vector<float*> kc_, vc_;  // per layer, [batch][kv][cap][hd]
  std::vector<int> cap_;
  std::vector<int64_t> row_stride_;
  float* kv_tmp_;
  float *rope_cos_[2] = {nullptr, nullptr}, *rope_sin_[2] = {nullptr, nullptr};
  int *d_n_cached_, *d_rows_, *d_enc_rows_, *d_n_keys_, *d_key_pos0_, *d_q_pos0_;

  // step state on the device ([M] unless noted) and its pinned host mirrors
  int32_t *tok_, *canvas_, *amax_, *sampled_, *tape_;  // tape_ [2M]: samples | renoise
  float *H_, *mean_H_;                                 // mean_H_ [batch]
  uint8_t *accepted_, *sc_rows_;                       // sc_rows_ [batch]
  kernels::cuda::RowParams* params_;                   // [batch]
  kernels::cuda::RowParams* h_params_ = nullptr;
  int32_t *h_tape_ = nullptr, *h_canvas_ = nullptr, *h_amax_ = nullptr;
  float* h_mean_H_ = nullptr;
  uint8_t *h_accepted_ = nullptr, *h_sc_rows_ = nullptr;
  std::vector<RowStep> all_rows_;  // step_all's settings

  int32_t *h_rows_ = nullptr, *h_chunk_ = nullptr;  // encode()'s staging: [batch], [batch * L]
  std::vector<cudaGraphExec_t> graph_exec_;         // [self_cond * batch + n_rows - 1]
  bool graph_broken_ = false, graph_used_ = false;
  bool profiling_ = false;
  std::vector<cudaEvent_t> prof_events_;  // pairs: before, after
  std::vector<std::string> prof_names_;
};

}  // namespace diffrt::cuda

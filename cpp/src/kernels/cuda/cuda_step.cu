// The CUDA session's denoising step (diffrt/session.h): per-row settings uploaded to device memory,
// then decoder pass + token stats + acceptance/renoise as one CUDA graph (captured on first use per
// self-conditioning mode and row count, replayed for every step), then the [B, L] results copied back.
#include <algorithm>
#include <chrono>
#include <string>

#include "diffrt/error.h"
#include "kernels/cuda/cuda_session.h"
#include "runtime/session_args.h"

namespace diffrt::cuda {

namespace kc = kernels::cuda;

void CudaSession::start_canvas(int row, const int32_t* tokens) {
  n_cached(row);  // range check
  const int L = model_->config().canvas_length;
  check_canvas_tokens(tokens, L, model_->config().n_vocab);
  DIFFRT_CUDA_CHECK(
      cudaMemcpyAsync(canvas_ + int64_t(row) * L, tokens, sizeof(int32_t) * L, cudaMemcpyHostToDevice, st_));
  DIFFRT_CUDA_CHECK(
      cudaMemcpyAsync(amax_ + int64_t(row) * L, tokens, sizeof(int32_t) * L, cudaMemcpyHostToDevice, st_));
  sync();  // `tokens` is the caller's (pageable) memory
}

void CudaSession::set_canvas(const int32_t* canvas) {
  const ModelConfig& c = model_->config();
  for (int r = 0; r < batch_; ++r) start_canvas(r, canvas + int64_t(r) * c.canvas_length);
}

void CudaSession::random_canvas(int canvas_index, uint64_t seed) {
  const ModelConfig& c = model_->config();
  const int64_t M = int64_t(batch_) * c.canvas_length;
  kc::init_canvas(st_, canvas_, M, c.canvas_length, c.n_vocab, canvas_index, seed);
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(amax_, canvas_, sizeof(int32_t) * M, cudaMemcpyDeviceToDevice, st_));
  sync();
}

void CudaSession::upload_rows(const RowStep* rows, bool round_bf16) {
  const int L = model_->config().canvas_length;
  sync();  // the pinned staging below may still feed the previous step's copies
  bool any_tape = false;
  for (int r = 0; r < batch_; ++r) {
    const RowStep& p = rows[r];
    kc::RowParams& d = h_params_[r];
    d.seed = p.seed;
    d.entropy_bound = p.entropy_bound;
    d.temperature = p.temperature;
    d.canvas = p.canvas;
    d.step = p.step;
    d.key = p.key;
    d.active = p.active ? 1 : 0;
    d.tape = p.active && p.tape_samples ? 1 : 0;
    d.round_pl = round_bf16 ? 1 : 0;
    h_sc_rows_[r] = p.active && p.self_cond ? 1 : 0;
    if (d.tape) {
      std::copy_n(p.tape_samples, L, h_tape_ + int64_t(r) * L);
      std::copy_n(p.tape_renoise, L, h_tape_ + (int64_t(batch_) + r) * L);
      any_tape = true;
    }
  }
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(params_, h_params_, sizeof(kc::RowParams) * batch_, cudaMemcpyHostToDevice, st_));
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(sc_rows_, h_sc_rows_, batch_, cudaMemcpyHostToDevice, st_));
  if (any_tape)
    DIFFRT_CUDA_CHECK(cudaMemcpyAsync(tape_, h_tape_, sizeof(int32_t) * 2 * batch_ * L, cudaMemcpyHostToDevice, st_));
}

void CudaSession::launch_step(bool self_cond, int n_rows) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  const int64_t M = int64_t(n_rows) * L, M_all = int64_t(batch_) * L;
  decoder_pass(canvas_, self_cond ? sc_ : nullptr, sc_rows_, n_rows);
  {
    Timed t(*this, "token_stats");
    kc::token_stats(st_, a_.logits, sc_, M, V, L, params_, tape_, amax_, H_, sampled_);
  }
  Timed t(*this, "accept_renoise");
  kc::accept_renoise(st_, H_, sampled_, n_rows, L, V, params_, tape_ + M_all, accepted_, canvas_, mean_H_);
}

void CudaSession::run_step(bool self_cond, int n_rows, bool use_graph) {
  if (!use_graph || graph_broken_) return launch_step(self_cond, n_rows);
  cudaGraphExec_t& ex = graph_exec_[size_t(self_cond ? 1 : 0) * batch_ + size_t(n_rows - 1)];
  if (!ex) {
    cudaGraph_t graph = nullptr;
    DIFFRT_CUDA_CHECK(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal));
    try {
      launch_step(self_cond, n_rows);
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
  }
  DIFFRT_CUDA_CHECK(cudaGraphLaunch(ex, st_));
  graph_used_ = true;
}

// The pass covers rows 0..(last active row): trailing inactive rows (free server slots, finished
// rows) cost nothing; a graph exists per row count in use. Returns that row count (0: nothing ran).
int CudaSession::launch_rows(const RowStep* rows, bool self_cond_bf16, bool use_graph) {
  const ModelConfig& c = model_->config();
  check_row_steps(rows, batch_, c.canvas_length, c.n_vocab);
  int n = 0;
  bool any_sc = false;
  for (int r = 0; r < batch_; ++r) {
    if (rows[r].active) n = r + 1;
    any_sc |= rows[r].active && rows[r].self_cond;
  }
  if (n == 0) return 0;
  check_denoise_args(nullptr, n, c.canvas_length, c.n_vocab, max_context_, n_cached_.data(), "step");
  upload_rows(rows, self_cond_bf16);
  run_step(any_sc, n, use_graph);
  return n;
}

StepView CudaSession::step(const RowStep* rows, bool self_cond_bf16) {
  StepView view{h_canvas_, h_amax_, h_accepted_, h_mean_H_, 0, 0};
  const auto t0 = std::chrono::steady_clock::now();
  const int n = launch_rows(rows, self_cond_bf16, true);
  if (n == 0) return view;
  const int64_t M = int64_t(n) * model_->config().canvas_length;
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_canvas_, canvas_, sizeof(int32_t) * M, cudaMemcpyDeviceToHost, st_));
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_amax_, amax_, sizeof(int32_t) * M, cudaMemcpyDeviceToHost, st_));
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_accepted_, accepted_, M, cudaMemcpyDeviceToHost, st_));
  DIFFRT_CUDA_CHECK(cudaMemcpyAsync(h_mean_H_, mean_H_, sizeof(float) * n, cudaMemcpyDeviceToHost, st_));
  sync();
  // One figure for the whole step (pass and sampler run back to back on the device).
  view.pass_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return view;
}

void CudaSession::step_all(const StepParams& p, bool use_graph) {
  for (int r = 0; r < batch_; ++r) {
    RowStep& rs = all_rows_[r];
    rs.active = true;
    rs.self_cond = p.self_cond;
    rs.temperature = p.temperature;
    rs.entropy_bound = p.entropy_bound;
    rs.seed = p.seed;
    rs.canvas = p.canvas;
    rs.step = p.step;
    rs.key = r;
  }
  launch_rows(all_rows_.data(), p.round_sc_bf16, use_graph);
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
  get(logits, a_.logits, sizeof(float) * M * c.n_vocab);
  sync();
}

// Each step waits for the previous one before its settings are staged (as in generation, which
// reads every step's results), so this is the per-step time generation sees, minus the copy-back.
float CudaSession::time_steps(int n, const StepParams& p, bool use_graph) {
  if (n < 1) throw InvalidArgument("time_steps: n must be >= 1");
  StepParams q = p;
  step_all(q, use_graph);  // warm-up (and graph capture)
  sync();
  cudaEvent_t e0, e1;
  DIFFRT_CUDA_CHECK(cudaEventCreate(&e0));
  DIFFRT_CUDA_CHECK(cudaEventCreate(&e1));
  float ms = 0.f;
  try {
    DIFFRT_CUDA_CHECK(cudaEventRecord(e0, st_));
    for (int i = 0; i < n; ++i) {
      q.step = p.step + 1 + i;
      step_all(q, use_graph);
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

void CudaSession::prof_mark(const char* name, int64_t n, int64_t k) {
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess || cudaEventRecord(e, st_) != cudaSuccess) {
    cudaGetLastError();
    if (e) cudaEventDestroy(e);
    return;  // a missing pair is dropped when the profile is read
  }
  prof_events_.push_back(e);
  if (name)
    prof_names_.push_back(n >= 0 ? std::string(name) + " " + std::to_string(n) + "x" + std::to_string(k) : name);
}

std::vector<OpProfile> CudaSession::profile_step(const StepParams& p) {
  struct Reset {
    CudaSession& s;
    ~Reset() {
      s.profiling_ = false;
      for (cudaEvent_t e : s.prof_events_) cudaEventDestroy(e);
      s.prof_events_.clear();
      s.prof_names_.clear();
    }
  } reset{*this};
  profiling_ = true;
  step_all(p, false);
  sync();
  profiling_ = false;
  std::vector<OpProfile> out;
  if (prof_events_.size() != 2 * prof_names_.size()) throw kc::CudaError("profile_step: lost events");
  for (size_t i = 0; i < prof_names_.size(); ++i) {
    float ms = 0.f;
    DIFFRT_CUDA_CHECK(cudaEventElapsedTime(&ms, prof_events_[2 * i], prof_events_[2 * i + 1]));
    auto it = std::find_if(out.begin(), out.end(), [&](const OpProfile& o) { return o.name == prof_names_[i]; });
    if (it == out.end()) it = out.insert(out.end(), OpProfile{prof_names_[i], 0.f, 0});
    it->ms += ms;
    ++it->calls;
  }
  std::sort(out.begin(), out.end(), [](const OpProfile& a, const OpProfile& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace diffrt::cuda

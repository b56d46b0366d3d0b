// The CPU Session of a DiffusionGemma model (implements diffrt/session.h). Exposed inside the core
// for the bindings' debug hooks and allocation test; users go through diffrt::Session.
#pragma once
#include <memory>
#include <vector>

#include "core/arena.h"
#include "diffrt/session.h"
#include "models/diffusion_gemma.h"

namespace diffrt {

class CpuSession final : public Session {
 public:
  CpuSession(std::shared_ptr<const dg::DiffusionGemma> model, int batch, int max_context);

  const ModelConfig& config() const override { return model_->config(); }
  int batch() const override { return batch_; }
  int max_context() const override { return max_context_; }
  int n_cached(int row) const override;
  void encode(const int32_t* ids, int n_rows, int T, const int* rows = nullptr) override;
  const float* denoise(const int32_t* canvas, const float* self_cond) override;
  void start_canvas(int row, const int32_t* tokens) override;
  StepView step(const RowStep* rows, bool self_cond_bf16) override;  // runtime/cpu_step.cpp
  void reset() override;
  void reset_row(int row) override;

  const dg::DiffusionGemma& model() const { return *model_; }
  void set_debug_hook(dg::DebugHook hook) { hook_ = std::move(hook); }
  size_t arena_bytes() const { return arena_.bytes(); }
  const dg::KVCache& cache() const { return cache_; }
  // Test support (teacher forcing): overwrite the held entries of (layer, row) with k/v [kv][n][hd]
  // where n is what the layer holds for T tokens, and set the row's cached length to T.
  void load_cache(int layer, int row, int T, const float* k, const float* v);

 private:
  // The decoder pass over rows 0..n_rows-1 (the others' logits are left as they are); the caller
  // has checked the rows' room and the canvas ids.
  const float* pass(const int32_t* canvas, const float* self_cond, const uint8_t* sc_rows, int n_rows);

  std::shared_ptr<const dg::DiffusionGemma> model_;
  int batch_, max_context_;
  Arena arena_;
  dg::Workspace ws_;
  dg::KVCache cache_;
  float* rope_cos_[2] = {nullptr, nullptr};  // [0]: full layers, [1]: sliding layers
  float* rope_sin_[2] = {nullptr, nullptr};
  int32_t* chunk_ids_ = nullptr;  // [batch * L] one encode chunk
  // step state ([batch, L] unless noted); sc_ [batch, L, V] holds each row's processed logits
  int32_t *canvas_ = nullptr, *amax_ = nullptr, *sampled_ = nullptr;
  float *H_ = nullptr, *mean_H_ = nullptr, *sc_ = nullptr;  // mean_H_ [batch]
  uint8_t *accepted_ = nullptr, *sc_rows_ = nullptr;        // sc_rows_ [batch]
  int* order_ = nullptr;
  dg::DebugHook hook_;
};

}  // namespace diffrt

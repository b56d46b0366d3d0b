// A Session: the KV cache and every activation buffer for (batch, canvas_length, max_context),
// allocated once at creation. encode() and step() allocate nothing (nor does the CPU denoise(); the
// CUDA one pins its host logits buffer on first use).
//
// Contract:
//  - Rows are independent sequences. Each row has its own cached length (n_cached(row)); positions
//    are absolute per row (prompt 0..P-1, then canvases), so rows may hold prompts of any length.
//  - encode(): causal encoder pass over T new tokens of the given rows; appends their K/V.
//  - denoise(): one bidirectional decoder pass over the canvas [B, L] of every row at positions
//    n_cached(row) .. n_cached(row)+L-1, reading the cache without writing it. self_cond is the
//    previous step's processed logits [B, L, V] (f32) or nullptr. Returns a pointer to the session's
//    own logits buffer [B, L, V] (f32, soft-capped), valid until the next call.
//  - step() runs a whole denoising step where the session lives (the CUDA session never copies the
//    [B, L, V] logits to the host); the generation loops (generate.h, batch_engine.h) drive it.
//  - Errors: InvalidArgument for bad shapes/ids/context overflow; the session is unchanged then.
//  - Not thread-safe: one caller at a time (the kernels themselves use the model's thread pool).
#pragma once
#include <cstdint>
#include <memory>

#include "diffrt/model.h"

namespace diffrt {

// One row's part of a denoising step. Its draws are addressed by (seed, canvas, step, key, position).
struct RowStep {
  bool active = false;     // false: the row is left as it is
  bool self_cond = false;  // condition on the row's previous processed logits (not at a canvas's first step)
  float temperature = 1.0f;
  double entropy_bound = 0.1;
  uint64_t seed = 0;
  int canvas = 0, step = 0, key = 0;
  const int32_t* tape_samples = nullptr;  // [L] recorded draws instead of the generator (both or neither)
  const int32_t* tape_renoise = nullptr;  // [L]
};

// Host views of the session's step state, valid until the next step() (start_canvas(row) changes
// that row): canvas, argmax and accepted are [batch, L], mean_entropy [batch]; pass_s / sample_s
// time the step's pass and sampler (a backend that runs both together reports all in pass_s).
struct StepView {
  const int32_t* canvas = nullptr;
  const int32_t* argmax = nullptr;
  const uint8_t* accepted = nullptr;
  const float* mean_entropy = nullptr;
  double pass_s = 0, sample_s = 0;
};

class Session {
 public:
  static std::unique_ptr<Session> create(std::shared_ptr<const Model> model, int batch, int max_context);
  virtual ~Session() = default;

  virtual const ModelConfig& config() const = 0;  // the model's
  virtual int batch() const = 0;
  virtual int max_context() const = 0;
  virtual int n_cached(int row) const = 0;

  // ids: [n_rows, T] row-major; rows: which session rows (nullptr = rows 0..n_rows-1).
  virtual void encode(const int32_t* ids, int n_rows, int T, const int* rows = nullptr) = 0;
  // canvas: [batch, L]; self_cond: [batch, L, V] or nullptr. Returns logits [batch, L, V].
  virtual const float* denoise(const int32_t* canvas, const float* self_cond) = 0;

  // ---- the denoising step: decoder pass + sampler on the session's own canvas buffers ----
  // A new canvas in `row`: its canvas and argmax become tokens [L] (ids checked).
  virtual void start_canvas(int row, const int32_t* tokens) = 0;
  // One step over rows[0..batch): a decoder pass over the canvases (self-conditioned per row), then
  // for each active row: pl = logits / T, argmax, entropy, a draw from the row's stream (or its
  // tape), entropy-bound acceptance and renoising of the canvas (spec §10.2). Inactive rows keep
  // canvas, argmax, entropy and self-conditioning input. Trailing inactive rows cost no compute.
  // self_cond_bf16: the processed logits kept for self-conditioning are rounded to bf16.
  virtual StepView step(const RowStep* rows, bool self_cond_bf16) = 0;

  virtual void reset() = 0;  // all rows
  virtual void reset_row(int row) = 0;
};

}  // namespace diffrt

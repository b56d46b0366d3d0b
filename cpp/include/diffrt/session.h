// A Session: the KV cache and every activation buffer for (batch, canvas_length, max_context),
// allocated once at creation. encode()/denoise() allocate nothing.
//
// Contract:
//  - Rows are independent sequences. Each row has its own cached length (n_cached(row)); positions
//    are absolute per row (prompt 0..P-1, then canvases), so rows may hold prompts of any length.
//  - encode(): causal encoder pass over T new tokens of the given rows; appends their K/V.
//  - denoise(): one bidirectional decoder pass over the canvas [B, L] of every row at positions
//    n_cached(row) .. n_cached(row)+L-1, reading the cache without writing it. self_cond is the
//    previous step's processed logits [B, L, V] (f32) or nullptr. Returns a pointer to the session's
//    own logits buffer [B, L, V] (f32, soft-capped), valid until the next call.
//  - Errors: InvalidArgument for bad shapes/ids/context overflow; the session is unchanged then.
//  - Not thread-safe: one caller at a time (the kernels themselves use the model's thread pool).
#pragma once
#include <cstdint>
#include <memory>

#include "diffrt/model.h"

namespace diffrt {

class Session {
 public:
  static std::unique_ptr<Session> create(std::shared_ptr<const Model> model, int batch, int max_context);
  virtual ~Session() = default;

  virtual int batch() const = 0;
  virtual int max_context() const = 0;
  virtual int n_cached(int row) const = 0;

  // ids: [n_rows, T] row-major; rows: which session rows (nullptr = rows 0..n_rows-1).
  virtual void encode(const int32_t* ids, int n_rows, int T, const int* rows = nullptr) = 0;
  // canvas: [batch, L]; self_cond: [batch, L, V] or nullptr. Returns logits [batch, L, V].
  virtual const float* denoise(const int32_t* canvas, const float* self_cond) = 0;
  // denoise() over rows 0..n_rows-1 only (a batch engine with free slots at the end); the logits of
  // the other rows are unspecified. canvas/self_cond keep the full [batch, ...] layout. The default
  // runs every row.
  virtual const float* denoise_rows(const int32_t* canvas, const float* self_cond, int n_rows) {
    (void)n_rows;
    return denoise(canvas, self_cond);
  }

  virtual void reset() = 0;                 // all rows
  virtual void reset_row(int row) = 0;
};

}  // namespace diffrt

// The argument checks of every Session backend (CpuSession, cuda::CudaSession): one batch of
// rows, each with room for at least one canvas; the per-row settings of a step; a canvas's ids.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "diffrt/error.h"
#include "diffrt/session.h"

namespace diffrt {

inline void check_session_args(int batch, int max_context, int canvas_length) {
  if (batch < 1) throw InvalidArgument("session batch must be >= 1, got " + std::to_string(batch));
  if (max_context < canvas_length)
    throw InvalidArgument("max_context " + std::to_string(max_context) + " is smaller than one canvas (" +
                          std::to_string(canvas_length) + " tokens)");
}

// Every active row: a positive finite temperature and bound, a valid draw address, and tapes
// (both or neither) holding ids of the vocabulary.
inline void check_row_steps(const RowStep* rows, int batch, int L, int V) {
  for (int r = 0; r < batch; ++r) {
    const RowStep& p = rows[r];
    if (!p.active) continue;
    auto fail = [&](const char* what) { throw InvalidArgument("step: row " + std::to_string(r) + ": " + what); };
    if (!(p.temperature > 0.f) || !std::isfinite(p.temperature)) fail("temperature must be > 0");
    if (!(p.entropy_bound > 0.0) || !std::isfinite(p.entropy_bound)) fail("entropy_bound must be > 0");
    if (p.canvas < 0 || p.step < 0 || p.key < 0) fail("negative draw address");
    if (!p.tape_samples != !p.tape_renoise) fail("a tape needs both samples and renoise");
    if (p.tape_samples)
      for (int j = 0; j < L; ++j)
        if (p.tape_samples[j] < 0 || p.tape_samples[j] >= V || p.tape_renoise[j] < 0 || p.tape_renoise[j] >= V)
          fail("tape id outside the vocabulary");
  }
}

// encode(): 1..batch distinct rows (rows == nullptr: 0..n_rows-1), each with room for T more
// tokens, every id in the vocabulary. Allocates nothing (a commit's encode is part of the loop).
inline void check_encode_args(const int32_t* ids, int n_rows, int T, const int* rows, int batch, int max_context,
                              const int* n_cached, int V) {
  if (n_rows < 1 || n_rows > batch)
    throw InvalidArgument("encode: " + std::to_string(n_rows) + " rows for a session of batch " +
                          std::to_string(batch));
  if (T < 0) throw InvalidArgument("encode: negative token count");
  for (int r = 0; r < n_rows; ++r) {
    const int row = rows ? rows[r] : r;
    if (row < 0 || row >= batch) throw InvalidArgument("encode: row " + std::to_string(row) + " out of range");
    for (int q = 0; q < r; ++q)
      if (rows && rows[q] == row) throw InvalidArgument("encode: row " + std::to_string(row) + " given twice");
    if (int64_t(n_cached[row]) + T > max_context)
      throw InvalidArgument("encode: row " + std::to_string(row) + " would hold " +
                            std::to_string(n_cached[row] + int64_t(T)) + " tokens, beyond max_context " +
                            std::to_string(max_context));
  }
  for (int64_t i = 0; i < int64_t(n_rows) * T; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw InvalidArgument("encode: token id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(V) +
                            ")");
}

// A decoder pass over rows 0..n_rows-1: room for a canvas of L after each row's cached tokens, and
// canvas ids [n_rows * L] in the vocabulary.
inline void check_denoise_args(const int32_t* canvas, int n_rows, int L, int V, int max_context, const int* n_cached,
                               const char* what) {
  for (int r = 0; r < n_rows; ++r)
    if (int64_t(n_cached[r]) + L > max_context)
      throw InvalidArgument(std::string(what) + ": row " + std::to_string(r) + " has " + std::to_string(n_cached[r]) +
                            " cached tokens; a canvas of " + std::to_string(L) + " would exceed max_context " +
                            std::to_string(max_context));
  if (canvas)
    for (int64_t i = 0; i < int64_t(n_rows) * L; ++i)
      if (canvas[i] < 0 || canvas[i] >= V)
        throw InvalidArgument(std::string(what) + ": canvas id " + std::to_string(canvas[i]) + " out of range [0, " +
                              std::to_string(V) + ")");
}

inline void check_canvas_tokens(const int32_t* tokens, int L, int V) {
  for (int j = 0; j < L; ++j)
    if (tokens[j] < 0 || tokens[j] >= V)
      throw InvalidArgument("start_canvas: token id " + std::to_string(tokens[j]) + " outside the vocabulary [0, " +
                            std::to_string(V) + ")");
}

}  // namespace diffrt

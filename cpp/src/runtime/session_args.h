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

inline void check_canvas_tokens(const int32_t* tokens, int L, int V) {
  for (int j = 0; j < L; ++j)
    if (tokens[j] < 0 || tokens[j] >= V)
      throw InvalidArgument("start_canvas: token id " + std::to_string(tokens[j]) + " outside the vocabulary [0, " +
                            std::to_string(V) + ")");
}

}  // namespace diffrt

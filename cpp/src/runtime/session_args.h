// The argument checks of every Session backend (CpuSession, cuda::CudaSession): one batch of
// rows, each with room for at least one canvas.
#pragma once
#include <string>

#include "diffrt/error.h"

namespace diffrt {

inline void check_session_args(int batch, int max_context, int canvas_length) {
  if (batch < 1) throw InvalidArgument("session batch must be >= 1, got " + std::to_string(batch));
  if (max_context < canvas_length)
    throw InvalidArgument("max_context " + std::to_string(max_context) + " is smaller than one canvas (" +
                          std::to_string(canvas_length) + " tokens)");
}

}  // namespace diffrt

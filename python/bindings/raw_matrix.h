// Weights handed to the CPU GEMM test bindings (_core._kernels.gemm, _core._fast_gemm.Packed): raw
// stored rows of a GGML type, by name, viewed as a kernels::Matrix.
#pragma once
#include <diffrt/error.h>
#include <diffrt/gguf.h>

#include <cstdint>
#include <string>

#include "kernels/kernels.h"

namespace diffrt_py {

inline diffrt::GGMLType weight_type(const std::string& t) {
  if (t == "F32") return diffrt::GGMLType::F32;
  if (t == "F16") return diffrt::GGMLType::F16;
  if (t == "BF16") return diffrt::GGMLType::BF16;
  if (t == "Q8_0") return diffrt::GGMLType::Q8_0;
  throw diffrt::InvalidArgument("unknown type " + t);
}

// rows: [n][row_bytes] (kn false) or [k][row_bytes] (kn true); the caller checks the sizes.
inline diffrt::kernels::Matrix raw_matrix(const void* rows, size_t row_bytes, const std::string& type, int64_t n,
                                          int64_t k, bool kn) {
  diffrt::kernels::Matrix mat;
  mat.type = weight_type(type);
  mat.data = rows;
  mat.n = n;
  mat.k = k;
  mat.kn = kn;
  mat.row_bytes = row_bytes;
  return mat;
}

}  // namespace diffrt_py

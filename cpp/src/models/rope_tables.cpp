// RoPE cos/sin tables (spec §4.1): inv_freq in f32 as transformers computes it
// (modeling_rope_utils / compute_default_rope_parameters).
#include "models/rope_tables.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace diffrt::dg {

void rope_tables(const ModelConfig& c, bool sliding, int hd, bool round_bf16, int max_pos, float* cos, float* sin) {
  const int half = hd / 2;
  const std::string& type = sliding ? c.rope_type_swa : c.rope_type;
  const float base = sliding ? c.rope_base_swa : c.rope_base;
  const float partial = sliding ? c.rope_partial_swa : c.rope_partial;
  std::vector<float> inv(size_t(half), 0.f);
  if (type == "default") {
    const int dim = int(hd * partial);  // the default type rotates dim dims; the rest get cos 1, sin 0
    for (int j = 0; 2 * j < dim && j < half; ++j) inv[j] = 1.0f / std::pow(base, float(2 * j) / float(dim));
  } else {  // proportional: exponent over the FULL head dim, only int(partial * hd // 2) pairs rotate
    const int rotated = int(std::floor(double(partial) * hd / 2));  // Python: int(partial * hd // 2)
    for (int j = 0; j < rotated && j < half; ++j) inv[j] = 1.0f / std::pow(base, float(2 * j) / float(hd));
  }
  for (int p = 0; p < max_pos; ++p) {
    for (int j = 0; j < half; ++j) {
      float f = float(p) * inv[j];
      float cv = std::cos(f), sv = std::sin(f);
      if (round_bf16) {
        cv = round_to_bf16(cv);
        sv = round_to_bf16(sv);
      }
      cos[int64_t(p) * half + j] = cv;
      sin[int64_t(p) * half + j] = sv;
    }
  }
}

}  // namespace diffrt::dg

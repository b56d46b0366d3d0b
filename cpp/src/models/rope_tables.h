// RoPE cos/sin tables of one layer type (spec §4.1), shared by the CPU model (DiffusionGemma) and the
// CUDA backend's random benchmark models (kernels/cuda/cuda_model.cu), so both rotate alike.
#pragma once
#include <diffrt/model.h>

namespace diffrt::dg {

// cos/sin [max_pos, head_dim / 2] for the sliding (or full) layers of c, whose head dim is head_dim;
// values rounded to bf16 when round_bf16 (a bf16 model, as transformers computes them in bf16).
void rope_tables(const ModelConfig& c, bool sliding, int head_dim, bool round_bf16, int max_pos, float* cos,
                 float* sin);

}  // namespace diffrt::dg

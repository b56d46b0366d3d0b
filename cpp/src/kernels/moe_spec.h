// What a model tells the MoE kernels, so that they hold no model's constants: the router's recipe
// and the experts' activation. Host and device code (the CPU kernels in kernels/cpu/moe.cpp, the
// CUDA ones in kernels/cuda/moe.cu) include this header, so the expert selection is written once.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace diffrt::kernels {

// The router of a token x [H] (spec §6 for DiffusionGemma):
//   z = norm ? rmsnorm_noscale(x) : x;  z = (z * in_scale[i]) * in_mul   (this op order)
//   p = softmax(z · projᵀ)  over all E experts
//   top_k largest p (larger first, lower index first among equals)
//   w = renormalize ? w / Σw : w;  w *= per_expert_scale[e] when given
struct RouterSpec {
  bool norm = true;
  float eps = 1e-6f;
  const float* in_scale = nullptr;  // [H] or nullptr (1)
  float in_mul = 1.f;
  int top_k = 1;
  bool renormalize = true;
  const float* per_expert_scale = nullptr;  // [E] or nullptr (1)
};

// The experts' gated activation: h = act(gate) * up.
enum class Activation { GeluTanh };

// Top-k selection, renormalisation and per-expert scale of one token's probabilities p [E]
// (RouterSpec's last three lines). k <= E.
DIFFRT_HD inline void select_experts(const float* p, int E, const RouterSpec& s, int32_t* ix, float* w) {
  for (int k = 0; k < s.top_k; ++k) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      bool taken = false;
      for (int u = 0; u < k; ++u) taken |= ix[u] == e;
      if (!taken && (best < 0 || p[e] > p[best])) best = e;
    }
    ix[k] = best;
    w[k] = p[best];
  }
  float sum = 0.f;
  for (int k = 0; k < s.top_k; ++k) sum += w[k];
  for (int k = 0; k < s.top_k; ++k) {
    const float v = s.renormalize ? w[k] / sum : w[k];
    w[k] = s.per_expert_scale ? v * s.per_expert_scale[ix[k]] : v;
  }
}

}  // namespace diffrt::kernels

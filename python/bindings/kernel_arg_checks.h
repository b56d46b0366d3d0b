// Argument checks of the op-level test bindings that the CPU (_core._kernels, kernels.cpp) and the
// CUDA (_cuda._kernels, cuda/cuda_kernels.cpp) modules share: the same op takes the same shapes.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ndarray_util.h"

namespace diffrt_py {

// rope: x [T, n_head, hd]; pos [T], each in [0, P); cos/sin [P, hd/2].
template <class F, class I>
void check_rope_args(const F& x, const I& pos, const F& cos, const F& sin) {
  need(x.ndim() == 3 && pos.size() == x.shape(0) && cos.ndim() == 2 && cos.shape(1) * 2 == x.shape(2) &&
           sin.size() == cos.size(),
       "shapes");
  for (size_t i = 0; i < pos.size(); ++i) need(pos.data()[i] >= 0 && size_t(pos.data()[i]) < cos.shape(0), "pos");
}

// attention (one row): q [S, nh, hd], k/v [kv, nk, hd], nh a multiple of kv.
struct AttentionShape {
  int S, nh, hd, kv, nk;
};
template <class F>
AttentionShape check_attention_args(const F& q, const F& k, const F& v) {
  need(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3 && q.shape(2) == k.shape(2), "shapes");
  need(k.shape(0) == v.shape(0) && k.shape(1) == v.shape(1) && k.shape(2) == v.shape(2), "k/v shapes");
  const AttentionShape s{int(q.shape(0)), int(q.shape(1)), int(q.shape(2)), int(k.shape(0)), int(k.shape(1))};
  need(s.kv > 0 && s.nh % s.kv == 0, "GQA heads");
  return s;
}

// router_topk: r [M, H], scale [H], proj [E, H], per-expert scale [E], 1 <= top_k <= E.
struct RouterShape {
  int64_t M;
  int H, E;
};
template <class F>
RouterShape check_router_args(const F& r, const F& scale, const F& proj, const F& pes, int top_k) {
  need(r.ndim() == 2 && proj.ndim() == 2 && proj.shape(1) == r.shape(1), "shapes");
  const RouterShape s{int64_t(r.shape(0)), int(r.shape(1)), int(proj.shape(0))};
  need(top_k >= 1 && top_k <= s.E && int(pes.size()) == s.E && int(scale.size()) == s.H, "sizes");
  return s;
}

}  // namespace diffrt_py

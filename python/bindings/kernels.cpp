// diffrt._core._kernels: thin bindings of the CPU kernels, for op-level tests against numpy.
// Not an API: shapes are checked only as far as needed to stay memory-safe.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <diffrt/error.h>

#include "bindings.h"
#include "core/cpu_features.h"
#include "kernel_arg_checks.h"
#include "kernels/kernels.h"
#include "ndarray_util.h"
#include "raw_matrix.h"

namespace {

using namespace diffrt;
using F32 = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using I32 = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;
using U8 = nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

// Outputs start zeroed.
nb::ndarray<nb::numpy, float> out_array(std::vector<size_t> shape) { return diffrt_py::zeros_array<float>(shape); }

using diffrt_py::need;

}  // namespace

void register_kernels(nb::module_& parent) {
  nb::module_ m = parent.def_submodule("_kernels", "CPU kernels, for tests");
  m.def("path", [] { return std::string(cpu_path_name(cpu_path())); });
  // A parallel_for of n_tasks tasks, task `throw_at` throwing: the pool's exception path. Returns
  // how many tasks ran (all of them when throw_at is out of range).
  m.def("_pool_run", [](int n_tasks, int throw_at) {
    std::atomic<int> ran{0};
    pool().parallel_for(n_tasks, [&](int task, int) {
      if (task == throw_at) throw InvalidArgument("task " + std::to_string(task) + " failed");
      ran.fetch_add(1);
    });
    return ran.load();
  });

  // y = x · Wᵀ (kn=False, w raw rows [n][row_bytes]) or x · B (kn=True, w raw rows [k][row_bytes]).
  m.def(
      "gemm",
      [](F32 x, U8 w, const std::string& type, int64_t n, int64_t k, bool kn, bool serial) {
        need(x.ndim() == 2 && int64_t(x.shape(1)) == k, "x must be [M, k]");
        const kernels::Matrix mat = diffrt_py::raw_matrix(w.data(), w.shape(1), type, n, k, kn);
        need(int64_t(w.shape(0)) == (kn ? k : n), "w rows");
        need(mat.row_bytes >= ggml_row_bytes(mat.type, kn ? n : k), "w row bytes");
        const int64_t M = x.shape(0);
        auto y = out_array({size_t(M), size_t(n)});
        nb::gil_scoped_release nogil;
        if (serial)
          kernels::gemm_serial(x.data(), k, M, mat, y.data(), n);
        else
          kernels::gemm(pool(), x.data(), k, M, mat, y.data(), n);
        return y;
      },
      nb::arg("x"), nb::arg("w"), nb::arg("type"), nb::arg("n"), nb::arg("k"), nb::arg("kn") = false,
      nb::arg("serial") = false);

  m.def(
      "rms_norm",
      [](F32 x, std::optional<F32> w, float eps) {
        need(x.ndim() == 2, "x must be 2-D");
        const int64_t rows = x.shape(0), n = x.shape(1);
        if (w) need(int64_t(w->size()) == n, "w size");
        auto y = out_array({size_t(rows), size_t(n)});
        kernels::rms_norm(pool(), x.data(), n, rows, int(n), w ? w->data() : nullptr, eps, y.data(), n);
        return y;
      },
      nb::arg("x"), nb::arg("w").none(), nb::arg("eps"));

  m.def("gelu_tanh_mul", [](F32 g, F32 u) {
    need(g.ndim() == 2 && u.ndim() == 2 && g.shape(0) == u.shape(0) && g.shape(1) == u.shape(1), "shapes");
    const int64_t rows = g.shape(0), n = g.shape(1);
    auto h = out_array({size_t(rows), size_t(n)});
    kernels::gelu_tanh_mul(pool(), g.data(), n, u.data(), n, rows, int(n), h.data(), n);
    return h;
  });

  m.def("softmax", [](F32 x) {
    need(x.ndim() == 2, "x must be 2-D");
    const int64_t rows = x.shape(0), n = x.shape(1);
    auto y = out_array({size_t(rows), size_t(n)});
    std::memcpy(y.data(), x.data(), sizeof(float) * rows * n);
    kernels::softmax_rows(pool(), y.data(), n, rows, n);
    return y;
  });

  m.def("soft_cap", [](F32 x, float cap) {
    auto y = out_array({x.size()});
    std::memcpy(y.data(), x.data(), sizeof(float) * x.size());
    kernels::soft_cap(pool(), y.data(), int64_t(x.size()), cap);
    return y;
  });

  // x [T, n_head, hd]; pos [T]; cos/sin [P, hd/2]
  m.def("rope", [](F32 x, I32 pos, F32 cos, F32 sin) {
    diffrt_py::check_rope_args(x, pos, cos, sin);
    const size_t T = x.shape(0), nh = x.shape(1), hd = x.shape(2);
    auto y = out_array({T, nh, hd});
    std::memcpy(y.data(), x.data(), sizeof(float) * x.size());
    kernels::rope(pool(), y.data(), int64_t(nh * hd), int64_t(T), int(nh), int(hd), pos.data(), cos.data(), sin.data());
    return y;
  });

  // One row: q [S, nh, hd], k/v [kv, nk, hd]; keys at key_pos0.., queries at q_pos0..
  m.def("attention", [](F32 q, F32 k, F32 v, int key_pos0, int q_pos0, bool causal, int window) {
    const auto [S, nh, hd, kv, nk] = diffrt_py::check_attention_args(q, k, v);
    auto out = out_array({size_t(S), size_t(nh), size_t(hd)});
    std::vector<float> scratch(size_t(pool().size()) * kernels::attention_scratch_floats(nk));
    kernels::AttentionArgs a;
    a.n_rows = 1;
    a.n_q = S;
    a.n_head = nh;
    a.n_kv_head = kv;
    a.head_dim = hd;
    a.q = q.data();
    a.ldq = int64_t(nh) * hd;
    a.k = k.data();
    a.v = v.data();
    a.kv_head_stride = int64_t(nk) * hd;
    a.n_keys = &nk;
    a.key_pos0 = &key_pos0;
    a.q_pos0 = &q_pos0;
    a.causal = causal;
    a.window = window;
    a.out = out.data();
    a.ldo = int64_t(nh) * hd;
    a.scratch = scratch.data();
    a.scratch_per_thread = kernels::attention_scratch_floats(nk);
    kernels::attention(pool(), a);
    return out;
  });

  // MoE: x [M, H], idx [M, K] (int32), w [M, K], gate_up [E * 2I, H] f32, down [E * H, I] f32 -> [M, H]
  m.def("grouped_experts", [](F32 x, I32 idx, F32 w, F32 gate_up, F32 down, int E, int I) {
    need(x.ndim() == 2 && idx.ndim() == 2 && w.ndim() == 2 && idx.shape(0) == x.shape(0), "shapes");
    need(idx.shape(0) == w.shape(0) && idx.shape(1) == w.shape(1), "idx/w shapes");
    const int64_t M = x.shape(0);
    const int H = int(x.shape(1)), K = int(idx.shape(1));
    need(gate_up.size() == size_t(E) * 2 * I * H && down.size() == size_t(E) * H * I, "weight sizes");
    for (size_t i = 0; i < idx.size(); ++i) need(idx.data()[i] >= 0 && idx.data()[i] < E, "expert index");
    std::vector<int32_t> slot_of(size_t(M) * K), count(size_t(E) + 1);
    std::vector<float> xg(size_t(M) * K * H), hg(size_t(M) * K * 2 * I), yg(size_t(M) * K * H);
    kernels::MoeScratch s{slot_of.data(), count.data(), xg.data(), hg.data(), yg.data()};
    auto out = out_array({size_t(M), size_t(H)});
    kernels::grouped_experts(pool(), x.data(), H, M, H, idx.data(), w.data(), K, E, I,
                             kernels::f32_matrix(gate_up.data(), int64_t(E) * 2 * I, H, H),
                             kernels::f32_matrix(down.data(), int64_t(E) * H, I, I), kernels::Activation::GeluTanh, s,
                             out.data(), H);
    return out;
  });

  // Router: r [M, H], scale [H], proj [E, H] f32, per_expert_scale [E] -> (idx [M, K] as f32, w [M, K])
  m.def("router_topk", [](F32 r, F32 scale, F32 proj, F32 pes, int top_k, float eps) {
    const auto [M, H, E] = diffrt_py::check_router_args(r, scale, proj, pes, top_k);
    std::vector<float> z(size_t(M) * H), scores(size_t(M) * E);
    std::vector<int32_t> idx(size_t(M) * top_k);
    auto w = out_array({size_t(M), size_t(top_k)});
    auto fidx = out_array({size_t(M), size_t(top_k)});
    // Gemma's recipe (what the tests compare with numpy): RouterSpec as the model's passes build it.
    kernels::RouterSpec spec{true, eps, scale.data(), float(std::pow(double(H), -0.5)), top_k, true, pes.data()};
    kernels::router_topk(pool(), r.data(), H, M, H, spec, kernels::f32_matrix(proj.data(), E, H, H), z.data(),
                         scores.data(), idx.data(), w.data());
    for (size_t i = 0; i < idx.size(); ++i) fidx.data()[i] = float(idx[i]);
    return nb::make_tuple(fidx, w);
  });
}

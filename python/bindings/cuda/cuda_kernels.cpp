// diffrt._cuda._kernels: the CUDA ops on host arrays (upload, run, download), for op-level tests
// against numpy and the CPU kernels. Not an API. Outputs start poisoned (NaN bytes) on the device.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <diffrt/error.h>

#include "kernels/cuda/kernels_cuda.h"

#include "../kernel_arg_checks.h"
#include "../ndarray_util.h"

namespace nb = nanobind;
namespace kc = diffrt::kernels::cuda;
using diffrt::InvalidArgument;

namespace {

using F32 = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using I32 = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;

using diffrt_py::need;
using diffrt_py::zeros_array;

struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Dev(size_t n) : bytes(n) {
    DIFFRT_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 16)));
    DIFFRT_CUDA_CHECK(cudaMemset(p, 0xFF, std::max<size_t>(n, 16)));  // poison
  }
  Dev(const void* host, size_t n) : Dev(n) {
    if (n) DIFFRT_CUDA_CHECK(cudaMemcpy(p, host, n, cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void get(void* host) const {
    DIFFRT_CUDA_CHECK(cudaDeviceSynchronize());
    if (bytes) DIFFRT_CUDA_CHECK(cudaMemcpy(host, p, bytes, cudaMemcpyDeviceToHost));
  }
};

template <class A>
std::unique_ptr<Dev> up(const A& a) {
  return std::make_unique<Dev>(a.data(), a.size() * sizeof(*a.data()));
}

// A host f32 matrix [rows][cols] on the device as f32, bf16 or int8 (per-row scales, quantized on
// Settings of one active row of the sampler ops (row `key` of the draw address).
kc::RowParams row_params(uint64_t seed, double bound, float T, int canvas, int step, int key, bool tape,
                         bool round_pl) {
  kc::RowParams p;
  p.seed = seed;
  p.entropy_bound = bound;
  p.temperature = T;
  p.canvas = canvas;
  p.step = step;
  p.key = key;
  p.active = 1;
  p.tape = tape ? 1 : 0;
  p.round_pl = round_pl ? 1 : 0;
  return p;
}

// the host with quantize_rows_i8, as model uploads do).
struct DevMatrix {
  std::unique_ptr<Dev> f32, b16, q8, scale;
  kc::DMatrix m;
  DevMatrix(const float* host, int64_t rows, int64_t cols, const std::string& dtype) {
    need(dtype == "f32" || dtype == "bf16" || dtype == "int8" || dtype == "int8-w8a8",
         "dtype must be 'f32', 'bf16', 'int8' (W8A16) or 'int8-w8a8'");
    if (dtype == "int8" || dtype == "int8-w8a8") {
      std::vector<int8_t> q(static_cast<size_t>(rows * cols));
      std::vector<float> sc(static_cast<size_t>(rows));
      kc::quantize_rows_i8(host, rows, cols, q.data(), sc.data());
      q8 = std::make_unique<Dev>(q.data(), q.size());
      scale = std::make_unique<Dev>(sc.data(), sizeof(float) * sc.size());
      m.n = rows;
      m.k = cols;
      m.ld = cols;
      m.type = kc::WType::I8;
      m.data = q8->p;
      m.scale = scale->as<float>();
      m.a8 = dtype == "int8-w8a8";
      return;
    }
    f32 = std::make_unique<Dev>(host, sizeof(float) * rows * cols);
    m.n = rows;
    m.k = cols;
    m.ld = cols;
    m.data = f32->p;
    if (dtype == "bf16") {
      b16 = std::make_unique<Dev>(size_t(2 * rows * cols));
      kc::f32_to_bf16(nullptr, f32->as<float>(), b16->p, rows * cols);
      m.type = kc::WType::BF16;
      m.data = b16->p;
    }
  }
};

}  // namespace

void register_cuda_kernels(nb::module_& parent) {
  nb::module_ m = parent.def_submodule("_kernels", "CUDA kernels on host arrays, for tests");

  // y = x · Wᵀ with w [N, K] (kn=False) or y = x · B with w [K, N] (kn=True).
  m.def(
      "gemm",
      [](F32 x, F32 w, const std::string& dtype, bool kn, bool tensor_cores) {
        need(x.ndim() == 2 && w.ndim() == 2, "x and w must be 2-D");
        const int64_t M = x.shape(0), K = x.shape(1);
        const int64_t N = kn ? w.shape(1) : w.shape(0);
        need((kn ? int64_t(w.shape(0)) : int64_t(w.shape(1))) == K, "inner dimensions differ");
        auto dx = up(x);
        DevMatrix dw(w.data(), w.shape(0), w.shape(1), dtype);
        kc::DMatrix mat = dw.m;
        if (kn) {
          mat.n = N;
          mat.k = K;
          mat.ld = N;
          mat.kn = true;
        }
        // Split-K workspace for 8 parts of half the rows: a long K also runs the row-chunk loop.
        const int64_t ws = 8 * std::max<int64_t>(1, M / 2) * N;
        Dev dy(sizeof(float) * M * N), amax(sizeof(float) * M), parts(sizeof(float) * ws);
        kc::GemmScratch scratch;
        scratch.act_amax = amax.as<float>();
        scratch.splitk = parts.as<float>();
        scratch.splitk_floats = ws;
        kc::gemm(nullptr, dx->as<float>(), K, M, mat, dy.as<float>(), N, tensor_cores, &scratch);
        auto y = zeros_array<float>({size_t(M), size_t(N)});
        dy.get(y.data());
        return y;
      },
      nb::arg("x"), nb::arg("w"), nb::arg("dtype") = "f32", nb::arg("kn") = false, nb::arg("tensor_cores") = false);

  m.def(
      "rms_norm",
      [](F32 x, std::optional<F32> w, float eps) {
        need(x.ndim() == 2, "x must be [rows, n]");
        const int64_t R = x.shape(0), n = x.shape(1);
        if (w) need(int64_t(w->size()) == n, "w must have n elements");
        auto dx = up(x);
        std::unique_ptr<Dev> dw = w ? up(*w) : nullptr;
        Dev dy(sizeof(float) * R * n);
        kc::rms_norm(nullptr, dx->as<float>(), n, R, int(n), dw ? dw->as<float>() : nullptr, eps, dy.as<float>(), n);
        auto y = zeros_array<float>({size_t(R), size_t(n)});
        dy.get(y.data());
        return y;
      },
      nb::arg("x"), nb::arg("w").none(), nb::arg("eps"));

  m.def("gelu_tanh_mul", [](F32 g, F32 u) {
    need(g.ndim() == 2 && u.ndim() == 2 && g.shape(0) == u.shape(0) && g.shape(1) == u.shape(1), "shapes");
    const int64_t R = g.shape(0), n = g.shape(1);
    auto dg = up(g), du = up(u);
    Dev dh(sizeof(float) * R * n);
    kc::gelu_tanh_mul(nullptr, dg->as<float>(), n, du->as<float>(), n, R, int(n), dh.as<float>(), n);
    auto h = zeros_array<float>({size_t(R), size_t(n)});
    dh.get(h.data());
    return h;
  });

  m.def("softmax", [](F32 x) {
    need(x.ndim() == 2, "x must be 2-D");
    const int64_t R = x.shape(0), n = x.shape(1);
    auto dx = up(x);
    Dev dy(sizeof(float) * R * n);
    kc::softmax_rows(nullptr, dx->as<float>(), dy.as<float>(), n, R, n);
    auto y = zeros_array<float>({size_t(R), size_t(n)});
    dy.get(y.data());
    return y;
  });

  m.def("soft_cap", [](F32 x, float cap) {
    auto dx = up(x);
    kc::soft_cap(nullptr, dx->as<float>(), int64_t(x.size()), cap);
    auto y = zeros_array<float>({x.size()});
    dx->get(y.data());
    return y;
  });

  // x [T, n_head, hd]; pos [T]; cos/sin [P, hd/2]
  m.def("rope", [](F32 x, I32 pos, F32 cos, F32 sin) {
    diffrt_py::check_rope_args(x, pos, cos, sin);
    const size_t T = x.shape(0), nh = x.shape(1), hd = x.shape(2);
    auto dx = up(x), dp = up(pos), dc = up(cos), ds = up(sin);
    kc::rope(nullptr, dx->as<float>(), int64_t(nh * hd), int64_t(T), int(nh), int(hd), dp->as<int32_t>(),
             dc->as<float>(), ds->as<float>());
    auto y = zeros_array<float>({T, nh, hd});
    dx->get(y.data());
    return y;
  });

  // x [T, nh, hd]: per head rms_norm (weight w [hd] or none), then rope — the fused kernel.
  m.def(
      "norm_rope",
      [](F32 x, std::optional<F32> w, float eps, I32 pos, F32 cos, F32 sin) {
        diffrt_py::check_rope_args(x, pos, cos, sin);
        const size_t T = x.shape(0), nh = x.shape(1), hd = x.shape(2);
        if (w) need(w->ndim() == 1 && w->shape(0) == hd, "w must be [hd]");
        auto dx = up(x), dp = up(pos), dc = up(cos), ds = up(sin);
        std::unique_ptr<Dev> dw = w ? up(*w) : nullptr;
        kc::rms_norm_rope(nullptr, dx->as<float>(), int64_t(T), int(nh), int(hd), dw ? dw->as<float>() : nullptr, eps,
                          dp->as<int32_t>(), dc->as<float>(), ds->as<float>());
        auto y = zeros_array<float>({T, nh, hd});
        dx->get(y.data());
        return y;
      },
      nb::arg("x"), nb::arg("w").none(), nb::arg("eps"), nb::arg("pos"), nb::arg("cos"), nb::arg("sin"));

  // One row: q [S, nh, hd], k/v [kv, nk, hd]; keys at key_pos0.., queries at q_pos0..
  m.def("attention", [](F32 q, F32 k, F32 v, int key_pos0, int q_pos0, bool causal, int window) {
    const auto [S, nh, hd, kv, nk] = diffrt_py::check_attention_args(q, k, v);
    auto dq = up(q), dk = up(k), dv = up(v);
    Dev dn(&nk, sizeof(int)), dkp(&key_pos0, sizeof(int)), dqp(&q_pos0, sizeof(int));
    Dev dout(sizeof(float) * S * nh * hd), dsc(sizeof(float) * size_t(S) * nh * std::max(nk, 1));
    kc::AttentionArgs a;
    a.n_rows = 1;
    a.n_q = S;
    a.n_head = nh;
    a.n_kv_head = kv;
    a.head_dim = hd;
    a.q = dq->as<float>();
    a.ldq = int64_t(nh) * hd;
    a.k = dk->as<float>();
    a.v = dv->as<float>();
    a.kv_head_stride = int64_t(nk) * hd;
    a.n_keys = dn.as<int>();
    a.key_pos0 = dkp.as<int>();
    a.q_pos0 = dqp.as<int>();
    a.causal = causal;
    a.window = window;
    a.out = dout.as<float>();
    a.ldo = int64_t(nh) * hd;
    a.scores = dsc.as<float>();
    a.max_keys = std::max(nk, 1);
    kc::attention(nullptr, a);
    auto out = zeros_array<float>({size_t(S), size_t(nh), size_t(hd)});
    dout.get(out.data());
    return out;
  });

  // r [M, H], scale [H], proj [E, H], pes [E] -> (idx [M, K] as f32, w [M, K])
  m.def("router_topk", [](F32 r, F32 scale, F32 proj, F32 pes, int top_k, float eps) {
    const auto [M, H, E] = diffrt_py::check_router_args(r, scale, proj, pes, top_k);
    auto dr = up(r), ds = up(scale), dp = up(proj), de = up(pes);
    Dev didx(sizeof(int32_t) * M * top_k), dw(sizeof(float) * M * top_k);
    // Gemma's recipe, as the model's passes build it (the tests compare with the CPU kernel's).
    diffrt::kernels::RouterSpec spec{true,  eps,  ds->as<float>(), float(std::pow(double(H), -0.5)),
                                     top_k, true, de->as<float>()};
    kc::router_topk(nullptr, dr->as<float>(), H, M, H, spec, dp->as<float>(), E, didx.as<int32_t>(), dw.as<float>());
    std::vector<int32_t> idx(size_t(M) * top_k);
    didx.get(idx.data());
    auto w = zeros_array<float>({size_t(M), size_t(top_k)});
    dw.get(w.data());
    auto fidx = zeros_array<float>({size_t(M), size_t(top_k)});
    for (size_t i = 0; i < idx.size(); ++i) fidx.data()[i] = float(idx[i]);
    return nb::make_tuple(fidx, w);
  });

  // x [M, H]; idx/weight [M, K]; gate_up [E * 2 Ie, H]; down [E * H, Ie] -> out [M, H]
  m.def(
      "grouped_experts",
      [](F32 x, I32 idx, F32 weight, F32 gate_up, F32 down, int E, int Ie, const std::string& dtype,
         bool tensor_cores) {
        need(x.ndim() == 2 && idx.ndim() == 2 && weight.ndim() == 2 && gate_up.ndim() == 2 && down.ndim() == 2, "ndim");
        const int64_t M = x.shape(0);
        const int H = int(x.shape(1)), K = int(idx.shape(1));
        need(int64_t(idx.shape(0)) == M && weight.shape(0) == idx.shape(0) && weight.shape(1) == idx.shape(1), "idx");
        need(int64_t(gate_up.shape(0)) == int64_t(E) * 2 * Ie && int(gate_up.shape(1)) == H, "gate_up shape");
        need(int64_t(down.shape(0)) == int64_t(E) * H && int(down.shape(1)) == Ie, "down shape");
        for (size_t i = 0; i < idx.size(); ++i) need(idx.data()[i] >= 0 && idx.data()[i] < E, "expert id out of range");
        auto dx = up(x), didx = up(idx), dw = up(weight);
        DevMatrix gu(gate_up.data(), gate_up.shape(0), gate_up.shape(1), dtype);
        DevMatrix dn(down.data(), down.shape(0), down.shape(1), dtype);
        const int64_t slots = M * K;
        Dev count(sizeof(int32_t) * E), offset(sizeof(int32_t) * (E + 1)), cursor(sizeof(int32_t) * E);
        Dev slot_of(sizeof(int32_t) * slots), pos_of(sizeof(int32_t) * slots);
        Dev tiles(sizeof(int32_t) * (2 * kc::moe_max_tiles(slots, E) + 1));
        Dev xg(sizeof(float) * slots * H), hg(sizeof(float) * slots * 2 * Ie), yg(sizeof(float) * slots * H),
            amax(sizeof(float) * slots);
        kc::MoeScratch s;
        s.count = count.as<int32_t>();
        s.offset = offset.as<int32_t>();
        s.cursor = cursor.as<int32_t>();
        s.slot_of = slot_of.as<int32_t>();
        s.pos_of = pos_of.as<int32_t>();
        s.tiles = tiles.as<int32_t>();
        s.xg = xg.as<float>();
        s.hg = hg.as<float>();
        s.yg = yg.as<float>();
        s.amax = amax.as<float>();
        Dev dout(sizeof(float) * M * H);
        kc::grouped_experts(nullptr, dx->as<float>(), H, M, H, didx->as<int32_t>(), dw->as<float>(), K, E, Ie, gu.m,
                            dn.m, diffrt::kernels::Activation::GeluTanh, s, dout.as<float>(), H, tensor_cores);
        auto out = zeros_array<float>({size_t(M), size_t(H)});
        dout.get(out.data());
        return out;
      },
      nb::arg("x"), nb::arg("idx"), nb::arg("weight"), nb::arg("gate_up"), nb::arg("down"), nb::arg("E"), nb::arg("Ie"),
      nb::arg("dtype") = "f32", nb::arg("tensor_cores") = false);

  // Per row of raw [n, V]: (pl [n, V], argmax [n], entropy [n], sample [n]); row i draws from the
  // stream (seed, canvas, step, row = i // L, pos = i % L) — as _core.sampler.token_stats.
  m.def(
      "token_stats",
      [](F32 raw, float T, uint64_t seed, int canvas, int step, int L, bool round_bf16) {
        need(raw.ndim() == 2 && L >= 1, "raw must be [n, V]");
        const size_t n = raw.shape(0), V = raw.shape(1);
        auto dr = up(raw);
        Dev dpl(sizeof(float) * n * V), da(sizeof(int32_t) * n), dH(sizeof(float) * n), ds(sizeof(int32_t) * n);
        std::vector<kc::RowParams> rows((n + L - 1) / L);
        for (size_t r = 0; r < rows.size(); ++r)
          rows[r] = row_params(seed, 0.1, T, canvas, step, int(r), false, round_bf16);
        Dev dp(rows.data(), sizeof(kc::RowParams) * rows.size());
        kc::token_stats(nullptr, dr->as<float>(), dpl.as<float>(), int64_t(n), int(V), L, dp.as<kc::RowParams>(),
                        nullptr, da.as<int32_t>(), dH.as<float>(), ds.as<int32_t>());
        auto pl = zeros_array<float>({n, V});
        auto amax = zeros_array<int32_t>({n});
        auto H = zeros_array<float>({n});
        auto smp = zeros_array<int32_t>({n});
        dpl.get(pl.data());
        da.get(amax.data());
        dH.get(H.data());
        ds.get(smp.data());
        return nb::make_tuple(pl, amax, H, smp);
      },
      nb::arg("raw"), nb::arg("T"), nb::arg("seed") = 0, nb::arg("canvas") = 0, nb::arg("step") = 0,
      nb::arg("L") = 1 << 16, nb::arg("round_bf16") = false);

  // H [B, L], sampled [B, L] -> (accepted [B, L] u8, canvas [B, L], mean_entropy [B])
  m.def(
      "accept_renoise",
      [](F32 H, I32 sampled, int V, double bound, uint64_t seed, int canvas, int step, std::optional<I32> tape) {
        need(H.ndim() == 2 && sampled.ndim() == 2 && H.shape(0) == sampled.shape(0) && H.shape(1) == sampled.shape(1),
             "shapes");
        const int B = int(H.shape(0)), L = int(H.shape(1));
        if (tape) need(tape->size() == H.size(), "tape must be [B, L]");
        auto dH = up(H), ds = up(sampled);
        std::unique_ptr<Dev> dt = tape ? up(*tape) : nullptr;
        std::vector<kc::RowParams> rows(static_cast<size_t>(B));
        for (int r = 0; r < B; ++r) rows[r] = row_params(seed, bound, 1.0f, canvas, step, r, tape.has_value(), false);
        Dev dp(rows.data(), sizeof(kc::RowParams) * rows.size()), dacc(size_t(B) * L), dc(sizeof(int32_t) * B * L),
            dm(sizeof(float) * B);
        kc::accept_renoise(nullptr, dH->as<float>(), ds->as<int32_t>(), B, L, V, dp.as<kc::RowParams>(),
                           dt ? dt->as<int32_t>() : nullptr, dacc.as<uint8_t>(), dc.as<int32_t>(), dm.as<float>());
        auto acc = zeros_array<uint8_t>({size_t(B), size_t(L)});
        auto cv = zeros_array<int32_t>({size_t(B), size_t(L)});
        auto mean = zeros_array<float>({size_t(B)});
        dacc.get(acc.data());
        dc.get(cv.data());
        dm.get(mean.data());
        return nb::make_tuple(acc, cv, mean);
      },
      nb::arg("H"), nb::arg("sampled"), nb::arg("V"), nb::arg("bound"), nb::arg("seed") = 0, nb::arg("canvas") = 0,
      nb::arg("step") = 0, nb::arg("tape").none() = nb::none());

  m.def(
      "init_canvas",
      [](int B, int L, int V, uint64_t seed, int canvas) {
        need(B >= 1 && L >= 1 && V >= 1, "sizes");
        Dev dc(sizeof(int32_t) * B * L);
        kc::init_canvas(nullptr, dc.as<int32_t>(), int64_t(B) * L, L, V, canvas, seed);
        auto cv = zeros_array<int32_t>({size_t(B), size_t(L)});
        dc.get(cv.data());
        return cv;
      },
      nb::arg("B"), nb::arg("L"), nb::arg("V"), nb::arg("seed") = 0, nb::arg("canvas") = 0);
}

// Every CPU kernel's numbers against references computed here in double precision: the C++ twin of
// the Python kernel tests, for builds without the Python extension (ARM64 under qemu:
// tools/cross_aarch64.sh; it runs natively too, and then proves the x86 paths the same way).
//
// The f32 GEMM, elementwise, RoPE, attention and MoE kernels run on the path of this process
// (DIFFRT_CPU_PATH lowers it); the packed GEMMs take the path as an argument and run on every path
// the CPU has. Each check names the Python test it mirrors and uses its tolerances and its
// emulation of the bf16 / int8 formats:
//   tests/python/test_kernels.py     f32 results within 2e-6 relative (max |Δ| / max |ref|) of
//                                    float64; attention and MoE within 1e-5; weights decoded from
//                                    F16 / BF16 / Q8_0 exactly as stored
//   tests/python/test_fast_gemm.py   packed GEMMs within 1e-5 (relative Frobenius) of the exact
//                                    emulation of their format (bf16-rounded operands, or per-row
//                                    int8 with f32 scales, round half to even, summed exactly) and
//                                    within 1e-2 / 2e-2 / 1.5e-2 (bf16 / int8 / w8a16) of plain f32
// The stored formats and the bf16 rounding are decoded/emulated here independently of core/dtype.h.
//
// Usage: kernel_check   prints the failures (the first 40) and exits 1, or prints "kernel_check: ok".
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "diffrt/gguf.h"
#include "kernels/cpu/pack.h"
#include "kernels/kernels.h"

using namespace diffrt;
using namespace diffrt::kernels;

namespace {

int g_failures = 0;

void expect(bool ok, const char* fmt, ...) {
  if (ok) return;
  if (++g_failures > 40) return;  // the first ones say what broke; the count says how much
  std::va_list args;
  va_start(args, fmt);
  std::fprintf(stderr, "kernel_check: FAIL [path %s] ", cpu_path_name(cpu_path()));
  std::vfprintf(stderr, fmt, args);
  std::fputc('\n', stderr);
  va_end(args);
}

std::mt19937 rng(20240611);

std::vector<float> normal(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng) * scale;
  return v;
}

// max |got - ref| / max |ref|   (test_kernels._rel)
double rel_max(const float* got, const double* ref, size_t n) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(double(got[i]) - ref[i]));
    mag = std::max(mag, std::fabs(ref[i]));
  }
  return err / std::max(mag, 1e-30);
}
double rel_max(const std::vector<float>& got, const std::vector<double>& ref) {
  return rel_max(got.data(), ref.data(), ref.size());
}

// ||got - ref|| / ||ref||   (test_fast_gemm.rel)
double rel_fro(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    mag += ref[i] * ref[i];
  }
  return std::sqrt(err / mag);
}

// y[m][n] = Σ_k x[m][k] · w[n][k] in double.
std::vector<double> matmul_nt(const std::vector<double>& x, const std::vector<double>& w, int64_t M, int64_t N,
                              int64_t K) {
  std::vector<double> y(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const double* a = &x[size_t(m * K)];
      const double* b = &w[size_t(n * K)];
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[k] * b[k];
      y[size_t(m * N + n)] = s;
    }
  return y;
}

std::vector<double> to_f64(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---- stored formats, encoded and decoded here ------------------------------------------------

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f16 by truncation (inputs here are in f16's normal range or tiny): the kernels must decode
// whatever bits are stored, so any valid encoding serves.
uint16_t f16_bits(float f) {
  const uint32_t u = bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const int e = int((u >> 23) & 0xff) - 127 + 15;
  if (e <= 0) return sign;
  if (e >= 31) return uint16_t(sign | 0x7bff);
  return uint16_t(sign | (e << 10) | ((u >> 13) & 0x3ff));
}
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double v = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(m + 1024), e - 25);
  return (h & 0x8000) ? -v : v;
}

// The bf16 nearest to f, ties to the even mantissa (torch / ml_dtypes rounding), as a double.
double bf16_round(float f) {
  if (std::isnan(f)) return double(f);
  const float lo = from_bits(bits(f) & 0xffff0000u);               // towards zero
  const float hi = from_bits((bits(f) & 0xffff0000u) + 0x10000u);  // away from zero
  const double dlo = std::fabs(double(f) - lo), dhi = std::fabs(double(hi) - f);
  if (dlo != dhi) return dlo < dhi ? lo : hi;
  return (bits(lo) & 0x10000u) ? hi : lo;
}

struct Stored {
  std::vector<uint8_t> bytes;
  std::vector<double> value;  // the value of each element as the kernels must see it
};

// rows x len elements of v in `type`, row after row, each row exactly ggml_row_bytes long.
Stored encode(const std::vector<float>& v, GGMLType type, int64_t rows, int64_t len) {
  const size_t rb = ggml_row_bytes(type, len);
  Stored s;
  s.bytes.assign(size_t(rows) * rb, 0);
  s.value.resize(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = s.bytes.data() + size_t(r) * rb;
    for (int64_t i = 0; i < len; ++i) {
      const size_t e = size_t(r * len + i);
      if (type == GGMLType::F32) {
        std::memcpy(dst + 4 * i, &v[e], 4);
        s.value[e] = v[e];
      } else if (type == GGMLType::F16) {
        const uint16_t h = f16_bits(v[e]);
        std::memcpy(dst + 2 * i, &h, 2);
        s.value[e] = f16_value(h);
      } else if (type == GGMLType::BF16) {
        const uint16_t h = uint16_t(bits(v[e]) >> 16);  // truncated: any bf16 serves
        std::memcpy(dst + 2 * i, &h, 2);
        s.value[e] = from_bits(uint32_t(h) << 16);
      } else {  // Q8_0: blocks of 32 as (f16 d, 32 x int8 q), value d·q
        uint8_t* blk = dst + (i / 32) * 34;
        if (i % 32 == 0) {
          float amax = 0;
          for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[e + j]));
          const uint16_t d = f16_bits(amax / 127.f);
          std::memcpy(blk, &d, 2);
        }
        uint16_t d;
        std::memcpy(&d, blk, 2);
        const double dv = f16_value(d);
        const int q = dv > 0 ? int(std::max(-127.0, std::min(127.0, std::nearbyint(v[e] / dv)))) : 0;
        blk[2 + i % 32] = uint8_t(int8_t(q));
        s.value[e] = dv * q;
      }
    }
  }
  return s;
}

Matrix view(const Stored& s, GGMLType type, int64_t n, int64_t k, bool kn) {
  Matrix m;
  m.type = type;
  m.data = s.bytes.data();
  m.n = n;
  m.k = k;
  m.kn = kn;
  m.row_bytes = ggml_row_bytes(type, kn ? n : k);
  return m;
}

const char* type_name(GGMLType t) { return ggml_type_name(t); }

// ---- test_kernels.py ---------------------------------------------------------------------------

constexpr double kTol = 2e-6;

// check_gemm
void check_gemm(ThreadPool& pool) {
  const int64_t shapes[][3] = {{1, 1, 32}, {5, 17, 64}, {37, 70, 288}, {256, 96, 512}, {9, 33, 288}};  // M, N, K
  for (auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    std::vector<float> x = normal(size_t(M * K)), w = normal(size_t(N * K));
    const std::vector<double> x64 = to_f64(x);
    for (GGMLType t : {GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0}) {
      const Stored st = encode(w, t, N, K);
      const std::vector<double> ref = matmul_nt(x64, st.value, M, N, K);
      for (bool serial : {false, true}) {
        std::vector<float> y(size_t(M * N));
        if (serial)
          gemm_serial(x.data(), K, M, view(st, t, N, K, false), y.data(), N);
        else
          gemm(pool, x.data(), K, M, view(st, t, N, K, false), y.data(), N);
        const double r = rel_max(y, ref);
        expect(r < kTol, "gemm %s M=%lld N=%lld K=%lld serial=%d: rel %.3g", type_name(t), (long long)M, (long long)N,
               (long long)K, int(serial), r);
      }
    }
    // K not a multiple of the 16-wide loads (not representable in Q8_0's blocks of 32)
    const int64_t Ko = K + 5;
    std::vector<float> x2 = normal(size_t(M * Ko)), w2 = normal(size_t(N * Ko));
    for (GGMLType t : {GGMLType::F32, GGMLType::F16, GGMLType::BF16}) {
      const Stored st = encode(w2, t, N, Ko);
      std::vector<float> y(size_t(M * N));
      gemm(pool, x2.data(), Ko, M, view(st, t, N, Ko, false), y.data(), N);
      const double r = rel_max(y, matmul_nt(to_f64(x2), st.value, M, N, Ko));
      expect(r < kTol, "gemm %s M=%lld N=%lld odd K=%lld: rel %.3g", type_name(t), (long long)M, (long long)N,
             (long long)Ko, r);
    }
    // KN layout: x · B with B [K, N] (the soft-embedding matmul)
    std::vector<float> b = normal(size_t(K * N));
    const Stored st = encode(b, GGMLType::F32, K, N);
    std::vector<double> bt(size_t(N * K));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) bt[size_t(n * K + k)] = b[size_t(k * N + n)];
    std::vector<float> y(size_t(M * N));
    gemm(pool, x.data(), K, M, view(st, GGMLType::F32, N, K, true), y.data(), N);
    const double r = rel_max(y, matmul_nt(x64, bt, M, N, K));
    expect(r < kTol, "gemm KN M=%lld N=%lld K=%lld: rel %.3g", (long long)M, (long long)N, (long long)K, r);
  }
}

double gelu_ref(double g) {
  const double beta = std::sqrt(2 / 3.14159265358979323846);
  return 0.5 * g * (1 + std::tanh(beta * (g + 0.044715 * g * g * g)));
}

std::vector<double> rms_ref(const std::vector<float>& x, const float* w, int64_t rows, int64_t n) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(r * n + i)]) * x[size_t(r * n + i)];
    const double inv = std::pow(ss / double(n) + 1e-6, -0.5);
    for (int64_t i = 0; i < n; ++i) y[size_t(r * n + i)] = x[size_t(r * n + i)] * inv * (w ? double(w[i]) : 1.0);
  }
  return y;
}

std::vector<double> softmax_ref(const std::vector<float>& x, int64_t rows, int64_t n) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = &x[size_t(r * n)];
    const double mx = *std::max_element(v, v + n);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += (y[size_t(r * n + i)] = std::exp(double(v[i]) - mx));
    for (int64_t i = 0; i < n; ++i) y[size_t(r * n + i)] /= s;
  }
  return y;
}

// check_norms_and_elementwise
void check_elementwise(ThreadPool& pool) {
  {
    const int64_t R = 7, n = 96;
    std::vector<float> x = normal(size_t(R * n), 3.f), w = normal(size_t(n)), u = normal(size_t(R * n));
    std::vector<float> y(x.size());
    rms_norm(pool, x.data(), n, R, int(n), w.data(), 1e-6f, y.data(), n);
    expect(rel_max(y, rms_ref(x, w.data(), R, n)) < kTol, "rms_norm (weighted): rel %.3g",
           rel_max(y, rms_ref(x, w.data(), R, n)));
    rms_norm(pool, x.data(), n, R, int(n), nullptr, 1e-6f, y.data(), n);
    expect(rel_max(y, rms_ref(x, nullptr, R, n)) < kTol, "rms_norm: rel %.3g", rel_max(y, rms_ref(x, nullptr, R, n)));
    std::vector<double> ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) ref[i] = gelu_ref(x[i]) * u[i];
    gelu_tanh_mul(pool, x.data(), n, u.data(), n, R, int(n), y.data(), n);
    expect(rel_max(y, ref) < kTol, "gelu_tanh_mul: rel %.3g", rel_max(y, ref));
    y = x;
    softmax_rows(pool, y.data(), n, R, n);
    expect(rel_max(y, softmax_ref(x, R, n)) < kTol, "softmax: rel %.3g", rel_max(y, softmax_ref(x, R, n)));
    std::vector<float> big = normal(1000, 100.f), capped = big;
    soft_cap(pool, capped.data(), int64_t(capped.size()), 30.f);
    std::vector<double> cref(big.size());
    for (size_t i = 0; i < big.size(); ++i) cref[i] = std::tanh(double(big[i]) / 30) * 30;
    expect(rel_max(capped, cref) < kTol, "soft_cap: rel %.3g", rel_max(capped, cref));
  }
  // widths that are not multiples of the 8/16-element partial sums of the row kernels (tails)
  for (int64_t cols : {1, 5, 37, 1003}) {
    std::vector<float> x = normal(size_t(3 * cols), 4.f), w = normal(size_t(cols)), y(size_t(3 * cols));
    rms_norm(pool, x.data(), cols, 3, int(cols), w.data(), 1e-6f, y.data(), cols);
    const double r = rel_max(y, rms_ref(x, w.data(), 3, cols));
    expect(r < kTol, "rms_norm cols=%lld: rel %.3g", (long long)cols, r);
    y = x;
    softmax_rows(pool, y.data(), cols, 3, cols);
    const double s = rel_max(y, softmax_ref(x, 3, cols));
    expect(s < kTol, "softmax cols=%lld: rel %.3g", (long long)cols, s);
  }
  // a vocabulary-sized softmax row: each element within 1e-5 relative (see test_kernels.py)
  {
    const int64_t n = 32000;
    std::vector<float> x = normal(size_t(3 * n), 4.f), y = x;
    softmax_rows(pool, y.data(), n, 3, n);
    const std::vector<double> ref = softmax_ref(x, 3, n);
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(y[i] - ref[i]) / ref[i]);
    expect(worst < 1e-5, "softmax over 32000: worst element rel %.3g", worst);
  }
}

// check_rope
void check_rope(ThreadPool& pool) {
  const int T = 5, nh = 3, hd = 16, P = 40, half = hd / 2;
  std::vector<float> x = normal(size_t(T * nh * hd)), ang = normal(size_t(P * half)), cs(ang.size()), sn(ang.size());
  for (size_t i = 0; i < ang.size(); ++i) cs[i] = std::cos(ang[i]), sn[i] = std::sin(ang[i]);
  const int32_t pos[T] = {0, 3, 7, 39, 12};
  std::vector<double> ref(x.size());
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < nh; ++h)
      for (int j = 0; j < hd; ++j) {
        const float* v = &x[size_t((t * nh + h) * hd)];
        const double c = cs[size_t(pos[t] * half + j % half)], s = sn[size_t(pos[t] * half + j % half)];
        const double rot = j < half ? -double(v[j + half]) : double(v[j - half]);
        ref[size_t((t * nh + h) * hd + j)] = v[j] * c + rot * s;
      }
  std::vector<float> y = x;
  rope(pool, y.data(), nh * hd, T, nh, hd, pos, cs.data(), sn.data());
  expect(rel_max(y, ref) < kTol, "rope: rel %.3g", rel_max(y, ref));
}

// check_attention (one batch row; q [S][nh][hd], k/v [kv][nk][hd])
void check_attention(ThreadPool& pool) {
  struct Case {
    int S, nh, kv, hd, nk;
    bool causal;
    int window;
  };
  for (const Case& c : {Case{16, 4, 2, 16, 23, false, 0}, Case{7, 4, 1, 32, 12, true, 0},
                        Case{70, 2, 2, 8, 77, true, 8}, Case{3, 3, 3, 24, 3, true, 1}}) {
    std::vector<float> q = normal(size_t(c.S * c.nh * c.hd)), k = normal(size_t(c.kv * c.nk * c.hd)),
                       v = normal(size_t(c.kv * c.nk * c.hd));
    const int key_pos0 = 5, q_pos0 = 5 + c.nk - c.S;  // the new tokens are the last S keys
    std::vector<double> ref(q.size());
    for (int s = 0; s < c.S; ++s)
      for (int h = 0; h < c.nh; ++h) {
        const int j = h / (c.nh / c.kv);
        std::vector<double> p(size_t(c.nk), 0.0);
        double mx = -INFINITY;
        for (int i = 0; i < c.nk; ++i) {
          const int qp = q_pos0 + s, kp = key_pos0 + i;
          if ((c.causal && kp > qp) || (c.window > 0 && kp <= qp - c.window)) {
            p[size_t(i)] = -INFINITY;
            continue;
          }
          double d = 0;
          for (int e = 0; e < c.hd; ++e)
            d += double(q[size_t((s * c.nh + h) * c.hd + e)]) * k[size_t((j * c.nk + i) * c.hd + e)];
          p[size_t(i)] = d;
          mx = std::max(mx, d);
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int e = 0; e < c.hd; ++e) {
          double o = 0;
          for (int i = 0; i < c.nk; ++i) o += p[size_t(i)] / sum * v[size_t((j * c.nk + i) * c.hd + e)];
          ref[size_t((s * c.nh + h) * c.hd + e)] = o;
        }
      }
    std::vector<float> out(q.size()), scratch(size_t(pool.size() * attention_scratch_floats(c.nk)));
    const int n_keys[1] = {c.nk}, kp0[1] = {key_pos0}, qp0[1] = {q_pos0};
    AttentionArgs a;
    a.n_rows = 1, a.n_q = c.S, a.n_head = c.nh, a.n_kv_head = c.kv, a.head_dim = c.hd;
    a.q = q.data(), a.ldq = c.nh * c.hd, a.k = k.data(), a.v = v.data();
    a.kv_head_stride = int64_t(c.nk) * c.hd, a.kv_row_stride = int64_t(c.kv) * c.nk * c.hd;
    a.n_keys = n_keys, a.key_pos0 = kp0, a.q_pos0 = qp0, a.causal = c.causal, a.window = c.window;
    a.out = out.data(), a.ldo = c.nh * c.hd, a.scratch = scratch.data();
    a.scratch_per_thread = attention_scratch_floats(c.nk);
    attention(pool, a);
    const double r = rel_max(out, ref);
    expect(r < 1e-5, "attention S=%d nh=%d kv=%d hd=%d nk=%d causal=%d window=%d: rel %.3g", c.S, c.nh, c.kv, c.hd,
           c.nk, int(c.causal), c.window, r);
  }
}

// check_router (Gemma's recipe, as the Python binding builds it)
void check_router(ThreadPool& pool) {
  const int M = 9, H = 64, E = 16, K = 4;
  std::vector<float> r = normal(size_t(M * H)), scale = normal(H), proj = normal(size_t(E * H), 10.f), pes = normal(E);
  RouterSpec spec{true, 1e-6f, scale.data(), float(std::pow(double(H), -0.5)), K, true, pes.data()};
  std::vector<float> z(size_t(M * H)), sc(size_t(M * E)), w(size_t(M * K));
  std::vector<int32_t> idx(size_t(M * K));
  router_topk(pool, r.data(), H, M, H, spec, f32_matrix(proj.data(), E, H, H), z.data(), sc.data(), idx.data(),
              w.data());
  const std::vector<double> zn = rms_ref(r, nullptr, M, H);
  std::vector<double> ref_w(size_t(M * K));
  for (int t = 0; t < M; ++t) {
    std::vector<double> p(E);
    double mx = -INFINITY, sum = 0;
    for (int e = 0; e < E; ++e) {
      double d = 0;
      for (int i = 0; i < H; ++i)
        d += zn[size_t(t * H + i)] * scale[size_t(i)] * std::pow(double(H), -0.5) * proj[size_t(e * H + i)];
      p[size_t(e)] = d;
      mx = std::max(mx, d);
    }
    for (double& e : p) sum += (e = std::exp(e - mx));
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
    double top = 0;
    for (int j = 0; j < K; ++j) top += p[size_t(order[size_t(j)])];
    for (int j = 0; j < K; ++j) {
      expect(idx[size_t(t * K + j)] == order[size_t(j)], "router token %d slot %d: expert %d, want %d", t, j,
             idx[size_t(t * K + j)], order[size_t(j)]);
      ref_w[size_t(t * K + j)] = p[size_t(order[size_t(j)])] / top * pes[size_t(order[size_t(j)])];
    }
  }
  expect(rel_max(w, ref_w) < 1e-5, "router weights: rel %.3g", rel_max(w, ref_w));
  // ties: equal scores -> lower expert index first (torch.topk order on CPU)
  std::vector<float> ones(H, 1.f), zeros(size_t(E * H), 0.f), pes1(E, 1.f);
  RouterSpec tie{true, 1e-6f, ones.data(), float(std::pow(double(H), -0.5)), K, true, pes1.data()};
  router_topk(pool, ones.data(), H, 1, H, tie, f32_matrix(zeros.data(), E, H, H), z.data(), sc.data(), idx.data(),
              w.data());
  for (int j = 0; j < K; ++j) expect(idx[size_t(j)] == j, "router ties: slot %d is expert %d", j, idx[size_t(j)]);
}

// check_grouped_experts
void check_grouped_experts(ThreadPool& pool) {
  const int M = 23, H = 48, E = 6, I = 40, K = 3;
  std::vector<float> x = normal(size_t(M * H)), w = normal(size_t(M * K));
  std::vector<float> gate_up = normal(size_t(E * 2 * I * H), 0.2f), down = normal(size_t(E * H * I), 0.2f);
  std::vector<int32_t> idx(size_t(M * K));
  for (int t = 0; t < M; ++t) {
    std::vector<int32_t> perm(E);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy(perm.begin(), perm.begin() + K, idx.begin() + t * K);
  }
  std::vector<double> ref(size_t(M * H), 0.0);
  for (int t = 0; t < M; ++t)
    for (int s = 0; s < K; ++s) {
      const int e = idx[size_t(t * K + s)];
      std::vector<double> h(I);
      for (int i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int c = 0; c < H; ++c) {
          g += double(gate_up[size_t((e * 2 * I + i) * H + c)]) * x[size_t(t * H + c)];  // gate rows first
          u += double(gate_up[size_t((e * 2 * I + I + i) * H + c)]) * x[size_t(t * H + c)];
        }
        h[size_t(i)] = gelu_ref(g) * u;
      }
      for (int c = 0; c < H; ++c) {
        double d = 0;
        for (int i = 0; i < I; ++i) d += double(down[size_t((e * H + c) * I + i)]) * h[size_t(i)];
        ref[size_t(t * H + c)] += w[size_t(t * K + s)] * d;
      }
    }
  std::vector<int32_t> slot_of(size_t(M * K)), count(E + 1);
  std::vector<float> xg(size_t(M * K * H)), hg(size_t(M * K * 2 * I)), yg(size_t(M * K * H)), out(size_t(M * H));
  MoeScratch s{slot_of.data(), count.data(), xg.data(), hg.data(), yg.data()};
  grouped_experts(pool, x.data(), H, M, H, idx.data(), w.data(), K, E, I, f32_matrix(gate_up.data(), E * 2 * I, H, H),
                  f32_matrix(down.data(), E * H, I, I), Activation::GeluTanh, s, out.data(), H);
  expect(rel_max(out, ref) < 1e-5, "grouped_experts: rel %.3g", rel_max(out, ref));
}

// ---- test_fast_gemm.py -------------------------------------------------------------------------

enum class Kind { Bf16, Int8, W8A16 };
const char* kind_name(Kind k) { return k == Kind::Bf16 ? "bf16" : k == Kind::Int8 ? "int8" : "w8a16"; }

const CpuPath kAllPaths[] = {CpuPath::Portable, CpuPath::Neon, CpuPath::Avx2, CpuPath::Avx512, CpuPath::Amx};

PackedMatrix pack(ThreadPool& pool, const Matrix& m, Kind kind) {
  return kind == Kind::Bf16 ? pack_bf16(pool, m) : kind == Kind::Int8 ? pack_int8(pool, m) : pack_w8a16(pool, m);
}

// Per-row symmetric int8 exactly as the kernels define it (quant_rows): f32 arithmetic, round half
// to even, clamp to ±127. q as doubles, scale[r] = max|a| / 127 (f32).
void quant_rows(const std::vector<float>& a, int64_t rows, int64_t k, std::vector<double>& q, std::vector<double>& s) {
  q.resize(a.size());
  s.resize(size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = &a[size_t(r * k)];
    float amax = 0.f;
    for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    for (int64_t i = 0; i < k; ++i) {
      const float p = v[i] * inv;
      q[size_t(r * k + i)] = std::max(-127.0, std::min(127.0, double(std::nearbyint(p))));
    }
    s[size_t(r)] = double(amax / 127.f);
  }
}

std::vector<double> bf16_all(const std::vector<float>& a) {
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = bf16_round(a[i]);
  return r;
}

// emulate(): the exact arithmetic of each format, in double.
std::vector<double> emulate(Kind kind, const std::vector<float>& x, const std::vector<float>& w, int64_t M, int64_t N,
                            int64_t K) {
  if (kind == Kind::Bf16) return matmul_nt(bf16_all(x), bf16_all(w), M, N, K);
  std::vector<double> qw, sw, qx, sx;
  quant_rows(w, N, K, qw, sw);
  std::vector<double> y = kind == Kind::W8A16 ? matmul_nt(bf16_all(x), qw, M, N, K)
                                              : (quant_rows(x, M, K, qx, sx), matmul_nt(qx, qw, M, N, K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[size_t(m * N + n)] *= (kind == Kind::Int8 ? sx[size_t(m)] : 1.0) * sw[size_t(n)];
  return y;
}

std::vector<float> run_packed(ThreadPool& pool, const PackedMatrix& p, const std::vector<float>& x, int64_t M,
                              CpuPath path) {
  std::vector<float> y(size_t(M * p.n), NAN);
  gemm_packed(pool, x.data(), p.k, M, p, y.data(), p.n, path);
  return y;
}

// The paths a call can run on this CPU, each once.
std::vector<CpuPath> runnable_paths() {
  std::vector<CpuPath> out;
  for (CpuPath p : kAllPaths)
    if (runnable_cpu_path(p) == p) out.push_back(p);
  return out;
}

// test_every_path_matches_numpy (+ the path rule: a request runs the best path at or below it)
void check_packed_every_path(ThreadPool& pool) {
  const int64_t shapes[][3] = {{1, 96, 100},   {7, 100, 704}, {256, 704, 96},
                               {33, 96, 2816}, {5, 2816, 64}, {40, 48, 9000}};
  for (auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    std::vector<float> x = normal(size_t(M * K)), w = normal(size_t(N * K));
    const std::vector<double> ref = matmul_nt(to_f64(x), to_f64(w), M, N, K);
    const Matrix wm = f32_matrix(w.data(), N, K, K);
    for (Kind kind : {Kind::Bf16, Kind::Int8, Kind::W8A16}) {
      const double f32_tol = kind == Kind::Bf16 ? 1e-2 : kind == Kind::Int8 ? 2e-2 : 1.5e-2;
      const std::vector<double> emu = emulate(kind, x, w, M, N, K);
      const PackedMatrix p = pack(pool, wm, kind);
      for (CpuPath want : kAllPaths) {
        const CpuPath ran = packed_gemm_path(p.kind, want);
        expect(ran <= want && runnable_cpu_path(ran) == ran, "packed %s: a request for %s runs %s", kind_name(kind),
               cpu_path_name(want), cpu_path_name(ran));
      }
      for (CpuPath path : runnable_paths()) {
        const std::vector<float> y = run_packed(pool, p, x, M, path);
        bool finite = true;
        for (float v : y) finite &= std::isfinite(v);
        const double e = rel_fro(y, emu), f = rel_fro(y, ref);
        expect(finite && e <= 1e-5 && f <= f32_tol,
               "packed %s on %s (ran %s) %lldx%lldx%lld: finite=%d rel vs emulation %.3g (<= 1e-5), vs f32 %.3g "
               "(<= %.3g)",
               kind_name(kind), cpu_path_name(path), cpu_path_name(packed_gemm_path(p.kind, path)), (long long)M,
               (long long)N, (long long)K, int(finite), e, f, f32_tol);
      }
    }
  }
}

// test_the_best_path_of_this_cpu_is_the_one_that_runs
void check_packed_best_path(ThreadPool& pool) {
  std::vector<float> w(32 * 64, 1.f);
  for (Kind kind : {Kind::Bf16, Kind::Int8, Kind::W8A16}) {
    const PackedMatrix p = pack(pool, f32_matrix(w.data(), 32, 64, 64), kind);
    expect(packed_gemm_path(p.kind, best_cpu_path()) == best_cpu_path(), "packed %s: best path %s runs %s",
           kind_name(kind), cpu_path_name(best_cpu_path()), cpu_path_name(packed_gemm_path(p.kind, best_cpu_path())));
  }
}

// test_stored_types_and_kn_layout_pack_like_their_values
void check_packed_stored_types(ThreadPool& pool) {
  const int64_t M = 9, N = 70, K = 96;
  std::vector<float> x = normal(size_t(M * K)), w = normal(size_t(N * K));
  std::vector<float> wt(w.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) wt[size_t(k * N + n)] = w[size_t(n * K + k)];
  for (Kind kind : {Kind::Bf16, Kind::Int8, Kind::W8A16}) {
    for (GGMLType t : {GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0, GGMLType::F32}) {
      const bool kn = t == GGMLType::F32;
      const Stored st = kn ? encode(wt, t, K, N) : encode(w, t, N, K);
      std::vector<float> values(w.size());  // the decoded values, as NK f32
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k)
          values[size_t(n * K + k)] = float(kn ? st.value[size_t(k * N + n)] : st.value[size_t(n * K + k)]);
      const std::vector<float> got = run_packed(pool, pack(pool, view(st, t, N, K, kn), kind), x, M, cpu_path());
      const std::vector<float> want =
          run_packed(pool, pack(pool, f32_matrix(values.data(), N, K, K), kind), x, M, cpu_path());
      expect(got == want, "packed %s from %s%s differs from packing its values", kind_name(kind), type_name(t),
             kn ? " (KN)" : "");
    }
  }
}

// test_zero_rows_and_zero_weights_give_zeros
void check_packed_zeros(ThreadPool& pool) {
  const int64_t M = 3, N = 20, K = 40;
  std::vector<float> x(size_t(M * K), 0.f), w(size_t(N * K), 0.f);
  std::fill(x.begin() + K, x.begin() + 2 * K, 1.f);
  std::fill(w.begin() + 5 * K, w.begin() + 6 * K, 2.f);
  for (Kind kind : {Kind::Bf16, Kind::Int8, Kind::W8A16}) {
    const PackedMatrix p = pack(pool, f32_matrix(w.data(), N, K, K), kind);
    for (CpuPath path : runnable_paths()) {
      const std::vector<float> y = run_packed(pool, p, x, M, path);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          const double want = m == 1 && n == 5 ? 80.0 : 0.0;
          const float got = y[size_t(m * N + n)];
          expect(std::fabs(got - want) <= 1e-6 * want, "packed %s zeros on %s: y[%lld][%lld] = %g, want %g",
                 kind_name(kind), cpu_path_name(path), (long long)m, (long long)n, double(got), want);
        }
    }
  }
}

// test_activation_rounding_ties_are_even_on_every_path (identity W: y is the converted activations)
void check_packed_rounding_ties(ThreadPool& pool) {
  const int64_t K = 40;
  const float ties[] = {1 + 0x1p-8f, 1 + 3 * 0x1p-8f, -(1 + 0x1p-8f), 2 + 0x1p-7f, 255 * 0x1p-8f + 0x1p-16f};
  std::vector<float> x_bf(size_t(3 * K)), x_i8(size_t(3 * K)), eye(size_t(K * K), 0.f);
  const float halves[] = {127.f, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f, 126.5f, -126.5f};
  for (int64_t i = 0; i < 3 * K; ++i) {
    x_bf[size_t(i)] = ties[i % 5];
    x_i8[size_t(i)] = halves[i % 8];
  }
  for (int64_t k = 0; k < K; ++k) {
    x_bf[size_t(K + k)] *= -3.f;
    if (k % 3 == 0) x_bf[size_t(2 * K + k)] = 0.f;
    x_i8[size_t(2 * K + k)] *= -1.f;
    eye[size_t(k * K + k)] = 1.f;
  }
  const PackedMatrix pb = pack(pool, f32_matrix(eye.data(), K, K, K), Kind::Bf16);
  const PackedMatrix pi = pack(pool, f32_matrix(eye.data(), K, K, K), Kind::Int8);
  const std::vector<double> emu = emulate(Kind::Int8, x_i8, eye, 3, K, K);
  std::vector<double> q, s;
  quant_rows(x_i8, 3, K, q, s);
  for (CpuPath path : runnable_paths()) {
    const std::vector<float> yb = run_packed(pool, pb, x_bf, 3, path);
    for (int64_t i = 0; i < 3 * K; ++i)
      expect(double(yb[size_t(i)]) == bf16_round(x_bf[size_t(i)]), "bf16 rounding on %s: %.9g -> %.9g, want %.9g",
             cpu_path_name(path), double(x_bf[size_t(i)]), double(yb[size_t(i)]), bf16_round(x_bf[size_t(i)]));
    const std::vector<float> yi = run_packed(pool, pi, x_i8, 3, path);
    for (int64_t i = 0; i < 3 * K; ++i) {
      const double want = emu[size_t(i)], got = yi[size_t(i)];
      const double back = std::nearbyint(got * 127.0 / 127.0);  // max |x| = 127 in every row: scale 1
      expect(std::fabs(got - want) <= 1e-6 * std::fabs(want) && back == q[size_t(i)],
             "int8 rounding on %s: %.9g -> %.9g, want %.9g (q %g)", cpu_path_name(path), double(x_i8[size_t(i)]), got,
             want, q[size_t(i)]);
    }
  }
}

}  // namespace

int main() {
  ThreadPool pool(2);
  std::printf("kernel_check: cpu path %s (best %s; %s)\n", cpu_path_name(cpu_path()), cpu_path_name(best_cpu_path()),
              cpu_features().describe().c_str());
  std::fflush(stdout);  // before any failure line on stderr
  check_gemm(pool);
  check_elementwise(pool);
  check_rope(pool);
  check_attention(pool);
  check_router(pool);
  check_grouped_experts(pool);
  check_packed_every_path(pool);
  check_packed_best_path(pool);
  check_packed_stored_types(pool);
  check_packed_zeros(pool);
  check_packed_rounding_ties(pool);
  if (g_failures) {
    std::fprintf(stderr, "kernel_check: %d check(s) FAILED on path %s\n", g_failures, cpu_path_name(cpu_path()));
    return 1;
  }
  std::printf("kernel_check: ok (path %s; packed GEMMs on", cpu_path_name(cpu_path()));
  for (CpuPath p : runnable_paths()) std::printf(" %s", cpu_path_name(p));
  std::printf(")\n");
  return 0;
}

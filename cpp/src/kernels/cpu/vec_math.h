// Branch-free f32 exp / tanh and the row loops built on them, written so the compiler vectorises
// them for whatever ISA the including file is compiled for (elementwise{,_avx2,_avx512}.cpp).
// Accuracy: exp within ~2 ulp; tanh within ~4 ulp (checked against float64 in test_kernels.py).
#pragma once
#include <cstdint>
#include <cstring>

namespace diffrt::kernels::cpu {

struct RowOps {
  // h[i] = gelu_tanh(g[i]) * u[i]
  void (*gelu_mul)(const float* g, const float* u, float* h, int64_t n);
  // x[i] = tanh(x[i] / cap) * cap
  void (*soft_cap)(float* x, int64_t n, float cap);
  // x[i] = exp(x[i] - mx); returns the sum
  float (*exp_sub_sum)(float* x, int64_t n, float mx);
  // y = x * (mean(x²) + eps)^-0.5 [* w] over n elements (w may be null; y may equal x). The sum of
  // squares runs in double (the reference's f32 cascade is closer to that than to a plain f32 sum).
  void (*rms_row)(const float* x, float* y, int64_t n, const float* w, float eps);
  // dst[0:n] = softmax of src over [lo, hi), 0 outside (the masked keys). dst may equal src.
  void (*softmax_row)(const float* src, float* dst, int64_t n, int64_t lo, int64_t hi);
};

const RowOps& row_ops_portable();
const RowOps& row_ops_avx2();
const RowOps& row_ops_avx512();
const RowOps& row_ops();  // for cpu_path()

}  // namespace diffrt::kernels::cpu

#ifdef DIFFRT_VEC_MATH_IMPL
namespace diffrt::kernels::cpu::DIFFRT_VEC_MATH_IMPL {

static inline float exp_f32(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (floorf would not vectorise without -fno-trapping-math)
  float n = (x * 1.44269504089f + 12582912.f) - 12582912.f;
  float r = x - n * 0.693145751953125f;  // ln2 split hi/lo: r exact-ish
  r = r - n * 1.428606765330187e-06f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

static inline float tanh_f32(float x) {
  float a = __builtin_fabsf(x);
  float x2 = x * x;  // odd Taylor series for |x| < 0.5, where 1 - e^-2|x| would cancel
  float p = 21844.f / 6081075.f;
  p = p * x2 - 1382.f / 155925.f;
  p = p * x2 + 62.f / 2835.f;
  p = p * x2 - 17.f / 315.f;
  p = p * x2 + 2.f / 15.f;
  p = p * x2 - 1.f / 3.f;
  float small = x + x * x2 * p;
  float e = exp_f32(-2.f * a);
  float big = (1.f - e) / (1.f + e);
  big = x < 0.f ? -big : big;
  return a < 0.5f ? small : big;
}

static void gelu_mul(const float* g, const float* u, float* h, int64_t n) {
  const float beta = 0.7978845608028654f, kappa = 0.044715f;
  for (int64_t i = 0; i < n; ++i) {
    float x = g[i];
    h[i] = (0.5f * x * (1.0f + tanh_f32(beta * (x + kappa * x * x * x)))) * u[i];
  }
}

static void soft_cap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = tanh_f32(x[i] / cap) * cap;
}

static float exp_sub_sum(float* x, int64_t n, float mx) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) {
      float e = exp_f32(x[i + j] - mx);
      x[i + j] = e;
      acc[j] += e;
    }
  float s = 0.f;
  for (; i < n; ++i) {
    x[i] = exp_f32(x[i] - mx);
    s += x[i];
  }
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

static void rms_row(const float* x, float* y, int64_t n, const float* w, float eps) {
  double acc[8] = {};  // 8 independent partial sums, so the compiler can keep them in one register
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
  double ss = 0.0;
  for (; i < n; ++i) ss += double(x[i]) * double(x[i]);
  for (int j = 0; j < 8; ++j) ss += acc[j];
  const float inv = 1.0f / __builtin_sqrtf(float(ss / double(n)) + eps);  // torch: pow(ms + eps, -0.5)
  if (w)
    for (i = 0; i < n; ++i) y[i] = (x[i] * inv) * w[i];
  else
    for (i = 0; i < n; ++i) y[i] = x[i] * inv;
}

static void softmax_row(const float* src, float* dst, int64_t n, int64_t lo, int64_t hi) {
  float m[16];  // partial maxima (a > b ? a : b is the max instruction's own semantics)
  for (int j = 0; j < 16; ++j) m[j] = -3.4e38f;
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16)
    for (int j = 0; j < 16; ++j) m[j] = src[i + j] > m[j] ? src[i + j] : m[j];
  float mx = -3.4e38f;
  for (; i < hi; ++i) mx = src[i] > mx ? src[i] : mx;
  for (int j = 0; j < 16; ++j) mx = m[j] > mx ? m[j] : mx;
  float acc[16] = {};
  float s = 0.f;
  for (i = lo; i + 16 <= hi; i += 16)
    for (int j = 0; j < 16; ++j) {
      float e = exp_f32(src[i + j] - mx);
      dst[i + j] = e;
      acc[j] += e;
    }
  for (; i < hi; ++i) {
    dst[i] = exp_f32(src[i] - mx);
    s += dst[i];
  }
  for (int j = 0; j < 16; ++j) s += acc[j];
  const float inv = 1.0f / s;
  for (i = 0; i < lo; ++i) dst[i] = 0.f;
  for (i = lo; i < hi; ++i) dst[i] *= inv;
  for (i = hi; i < n; ++i) dst[i] = 0.f;
}

static const RowOps kOps = {gelu_mul, soft_cap, exp_sub_sum, rms_row, softmax_row};

}  // namespace diffrt::kernels::cpu::DIFFRT_VEC_MATH_IMPL
#endif

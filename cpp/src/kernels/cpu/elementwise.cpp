// Row-wise and element-wise CPU ops: RMSNorm, gated GELU-tanh, soft-cap, softmax.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace diffrt::kernels {
namespace {

// Rows per task: enough work per task to amortise the dispatch.
template <class F>
void for_rows(ThreadPool& pool, int64_t rows, int64_t row_cost, F&& f) {
  int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_cost, 1));
  int64_t tasks = (rows + per - 1) / per;
  pool.parallel_for(int(tasks), [&](int t, int) {
    int64_t r1 = std::min(rows, (t + 1) * per);
    for (int64_t r = t * per; r < r1; ++r) f(r);
  });
}

}  // namespace

void rms_norm(ThreadPool& pool, const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps,
              float* y, int64_t ldy) {
  for_rows(pool, rows, n, [&](int64_t r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    double ss = 0.0;  // the reference sums in f32 with a cascade; a double sum is as close as we can get
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
    float ms = float(ss / double(n));
    float inv = 1.0f / std::sqrt(ms + eps);  // torch: pow(ms + eps, -0.5) == 1/sqrt in f32
    if (w) {
      for (int i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * w[i];
    } else {
      for (int i = 0; i < n; ++i) yr[i] = xr[i] * inv;
    }
  });
}

void gelu_tanh_mul(ThreadPool& pool, const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n,
                   float* h, int64_t ldh) {
  const float beta = float(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
  for_rows(pool, rows, 8 * int64_t(n), [&](int64_t r) {
    const float* gr = g + r * ldg;
    const float* ur = u + r * ldu;
    float* hr = h + r * ldh;
    for (int i = 0; i < n; ++i) {
      float x = gr[i];
      float inner = beta * (x + kappa * x * x * x);
      hr[i] = (0.5f * x * (1.0f + std::tanh(inner))) * ur[i];
    }
  });
}

void soft_cap(ThreadPool& pool, float* x, int64_t n, float cap) {
  constexpr int64_t chunk = 4096;
  pool.parallel_for(int((n + chunk - 1) / chunk), [&](int t, int) {
    int64_t i1 = std::min(n, (t + 1) * chunk);
    for (int64_t i = t * chunk; i < i1; ++i) x[i] = std::tanh(x[i] / cap) * cap;
  });
}

void softmax_rows(ThreadPool& pool, float* x, int64_t ld, int64_t rows, int64_t n) {
  for_rows(pool, rows, 4 * n, [&](int64_t r) {
    float* xr = x + r * ld;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, xr[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      xr[i] = std::exp(xr[i] - mx);
      sum += xr[i];
    }
    float inv = float(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) xr[i] *= inv;
  });
}

void rope(ThreadPool& pool, float* x, int64_t ldx, int64_t tokens, int n_head, int hd, const int32_t* pos,
          const float* cos, const float* sin) {
  const int half = hd / 2;
  for_rows(pool, tokens, int64_t(n_head) * hd * 4, [&](int64_t t) {
    const float* c = cos + int64_t(pos[t]) * half;
    const float* s = sin + int64_t(pos[t]) * half;
    for (int h = 0; h < n_head; ++h) {
      float* v = x + t * ldx + int64_t(h) * hd;
      for (int j = 0; j < half; ++j) {
        float a = v[j], b = v[j + half];
        v[j] = a * c[j] - b * s[j];
        v[j + half] = b * c[j] + a * s[j];
      }
    }
  });
}

}  // namespace diffrt::kernels

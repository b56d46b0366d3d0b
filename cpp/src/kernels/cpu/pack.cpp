// Repacking of weight matrices, once at load, into the blocked bf16 / int8 layout of pack.h.
#include "kernels/cpu/pack.h"

#include <diffrt/error.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/dtype.h"

namespace diffrt::kernels {

// Aligned operator new (not aligned_alloc), so the test allocation counter (core/alloc_counter.h)
// sees these buffers too.
void AlignedFree::operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }

namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

PackedMatrix make(PackedMatrix::Kind kind, const Matrix& w) {
  PackedMatrix p;
  p.kind = kind;
  p.n = w.n;
  p.k = w.k;
  p.n_pad = round_up(std::max<int64_t>(w.n, 1), 32);
  p.k_pad = round_up(std::max<int64_t>(w.k, 1), kind == PackedMatrix::Kind::BF16 ? 32 : 64);
  size_t bytes = p.bytes();
  void* mem = ::operator new(size_t(round_up(int64_t(bytes), 64)), std::align_val_t(64));
  std::memset(mem, 0, bytes);  // padding rows and columns are zero weights
  p.data.reset(static_cast<uint8_t*>(mem));
  return p;
}

// Calls f(n, row) with W's row n (k values, f32) for n in each block of 16 rows, threaded by block.
// A KN matrix is read through its k rows, one 16-column slice at a time.
template <class F>
void for_rows(ThreadPool& pool, const Matrix& w, F&& f) {
  int64_t blocks = (w.n + 15) / 16;
  std::vector<std::vector<float>> bufs(size_t(pool.size()));
  pool.parallel_for(int(blocks), [&](int blk, int thread) {
    std::vector<float>& buf = bufs[size_t(thread)];
    int64_t n0 = int64_t(blk) * 16, cnt = std::min<int64_t>(16, w.n - n0);
    buf.resize(size_t(16 * w.k));
    if (w.kn) {
      float tmp[16];
      for (int64_t kk = 0; kk < w.k; ++kk) {
        decode_row(w, kk, n0, cnt, tmp);
        for (int64_t j = 0; j < cnt; ++j) buf[size_t(j * w.k + kk)] = tmp[j];
      }
    } else {
      for (int64_t j = 0; j < cnt; ++j) decode_row(w, n0 + j, 0, w.k, buf.data() + j * w.k);
    }
    for (int64_t j = 0; j < cnt; ++j) f(n0 + j, buf.data() + j * w.k);
  });
}

// Per-row symmetric int8 of one row; returns the scale.
float quantize_row(const float* row, int64_t k, int8_t* q, int32_t* sum) {
  float amax = 0.f;
  for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(row[i]));
  float inv = amax > 0.f ? 127.f / amax : 0.f;
  int32_t s = 0;
  for (int64_t i = 0; i < k; ++i) {
    int v = std::min(127, std::max(-127, int(std::nearbyint(row[i] * inv))));
    q[i] = int8_t(v);
    s += v;
  }
  *sum = s;
  return amax / 127.f;
}

void check(const Matrix& w) {
  if (w.n < 0 || w.k < 0 || (w.n * w.k > 0 && !w.data)) throw InvalidArgument("pack: invalid matrix");
}

}  // namespace

PackedMatrix pack_bf16(ThreadPool& pool, const Matrix& w) {
  check(w);
  PackedMatrix p = make(PackedMatrix::Kind::BF16, w);
  uint16_t* d = reinterpret_cast<uint16_t*>(p.data.get());
  for_rows(pool, w, [&](int64_t n, const float* row) {
    uint16_t* blk = d + (n / 16) * (p.k_pad / 2) * 32 + (n % 16) * 2;
    for (int64_t kk = 0; kk < w.k; ++kk) blk[(kk / 2) * 32 + kk % 2] = f32_to_bf16(row[kk]);
  });
  return p;
}

PackedMatrix pack_int8(ThreadPool& pool, const Matrix& w) {
  check(w);
  PackedMatrix p = make(PackedMatrix::Kind::INT8, w);
  p.scale.assign(size_t(p.n_pad), 0.f);
  p.row_sum.assign(size_t(p.n_pad), 0);
  int8_t* d = reinterpret_cast<int8_t*>(p.data.get());
  for_rows(pool, w, [&](int64_t n, const float* row) {
    thread_local std::vector<int8_t> q;
    q.resize(size_t(w.k));
    p.scale[size_t(n)] = quantize_row(row, w.k, q.data(), &p.row_sum[size_t(n)]);
    int8_t* blk = d + (n / 16) * (p.k_pad / 4) * 64 + (n % 16) * 4;
    for (int64_t kk = 0; kk < w.k; ++kk) blk[(kk / 4) * 64 + kk % 4] = q[size_t(kk)];
  });
  return p;
}

PackedMatrix pack_w8a16(ThreadPool& pool, const Matrix& w) {
  check(w);
  PackedMatrix p = make(PackedMatrix::Kind::BF16, w);
  p.scale.assign(size_t(p.n_pad), 0.f);
  uint16_t* d = reinterpret_cast<uint16_t*>(p.data.get());
  for_rows(pool, w, [&](int64_t n, const float* row) {
    thread_local std::vector<int8_t> q;
    q.resize(size_t(w.k));
    int32_t sum;
    p.scale[size_t(n)] = quantize_row(row, w.k, q.data(), &sum);
    uint16_t* blk = d + (n / 16) * (p.k_pad / 2) * 32 + (n % 16) * 2;
    for (int64_t kk = 0; kk < w.k; ++kk) blk[(kk / 2) * 32 + kk % 2] = f32_to_bf16(float(q[size_t(kk)]));
  });
  return p;
}

}  // namespace diffrt::kernels

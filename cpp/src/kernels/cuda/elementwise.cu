// Row and elementwise ops on the device (norms, activations, RoPE, embedding, small helpers).
// Numerics follow the CPU ops: RMSNorm sums squares in double, inv = 1 / sqrt(mean + eps) in f32.
#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {

void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  throw CudaError(std::string("CUDA error: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                  cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

namespace {

// 1 / sqrt(mean(x²) + eps) of one row, the sum of squares in double (every thread gets it).
__device__ float rms_inverse(const float* xr, int n, float eps, double* sh) {
  double ss = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += double(xr[i]) * double(xr[i]);
  ss = block_sum(ss, sh);
  const float ms = float(ss / double(n));
  return 1.0f / sqrtf(ms + eps);
}

__global__ void rms_norm_kernel(const float* x, int64_t ldx, int n, const float* w, float eps, float* y, int64_t ldy) {
  __shared__ double sh[32];
  const float* xr = x + int64_t(blockIdx.x) * ldx;
  float* yr = y + int64_t(blockIdx.x) * ldy;
  const float inv = rms_inverse(xr, n, eps, sh);
  for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w ? (xr[i] * inv) * w[i] : xr[i] * inv;
}

__device__ __forceinline__ float gelu_tanh(float x) {
  const float beta = 0.7978845608028654f, kappa = 0.044715f;
  return 0.5f * x * (1.0f + tanhf(beta * (x + kappa * x * x * x)));
}

__global__ void gelu_mul_kernel(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n, float* h,
                                int64_t ldh) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * n) return;
  const int64_t r = i / n, c = i % n;
  h[r * ldh + c] = gelu_tanh(g[r * ldg + c]) * u[r * ldu + c];
}

__global__ void soft_cap_kernel(float* x, int64_t n, float cap) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = tanhf(x[i] / cap) * cap;
}

__global__ void softmax_kernel(const float* src, float* dst, int64_t ld, int64_t n) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const float* s = src + int64_t(blockIdx.x) * ld;
  float* d = dst + int64_t(blockIdx.x) * ld;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, s[i]);
  mx = block_max(mx, shf);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(s[i] - mx);
    d[i] = e;
    sum += e;
  }
  sum = block_sum(sum, shd);
  const float inv = 1.0f / float(sum);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) d[i] *= inv;
}

__global__ void round_bf16_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = round_bf16(x[i]);
}
__global__ void scale_kernel(float* x, int64_t n, float s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= s;
}
__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}
__global__ void add_rows_kernel(float* x, const float* y, int64_t row_elems, int64_t n, const uint8_t* mask) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n && mask[i / row_elems]) x[i] += y[i];
}
__global__ void add_scale_kernel(float* x, const float* y, int64_t n, float s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = (x[i] + y[i]) * s;
}

template <class T>
__global__ void embed_kernel(const T* E, const float* row_scale, int64_t ld, int64_t H, const int32_t* ids, float scale,
                             float* out) {
  const int64_t t = blockIdx.x;
  const T* row = E + int64_t(ids[t]) * ld;
  const float rs = row_scale ? row_scale[ids[t]] : 1.f;  // int8 rows: q * row scale, then the embed scale
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    out[t * H + i] = (row_scale ? load_w(row, i) * rs : load_w(row, i)) * scale;
}

__global__ void rope_kernel(float* x, int64_t ldx, int n_head, int hd, const int32_t* pos, const float* cos,
                            const float* sin) {
  const int64_t t = blockIdx.x;
  const int half = hd / 2;
  const float* c = cos + int64_t(pos[t]) * half;
  const float* s = sin + int64_t(pos[t]) * half;
  for (int i = threadIdx.x; i < n_head * half; i += blockDim.x) {
    const int h = i / half, j = i % half;
    float* v = x + t * ldx + int64_t(h) * hd;
    const float a = v[j], b = v[j + half];
    v[j] = a * c[j] - b * s[j];
    v[j + half] = b * c[j] + a * s[j];
  }
}

// One block per (token, head): the rms_norm_kernel sum and scaling, then rope_kernel's rotation.
__global__ void norm_rope_kernel(float* x, int n_head, int hd, const float* w, float eps, const int32_t* pos,
                                 const float* cos, const float* sin) {
  __shared__ double sh[32];
  const int64_t t = blockIdx.x / n_head;
  float* v = x + int64_t(blockIdx.x) * hd;  // token t, head blockIdx.x % n_head: rows of hd are contiguous
  const float inv = rms_inverse(v, hd, eps, sh);
  const int half = hd / 2;
  const float* c = cos + int64_t(pos[t]) * half;
  const float* s = sin + int64_t(pos[t]) * half;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float a = w ? (v[j] * inv) * w[j] : v[j] * inv;
    const float b = w ? (v[j + half] * inv) * w[j + half] : v[j + half] * inv;
    v[j] = a * c[j] - b * s[j];
    v[j + half] = b * c[j] + a * s[j];
  }
}

__global__ void fill_uniform_kernel(void* data, int t, int64_t n, float a, uint64_t seed) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t ctr[4] = {uint32_t(i), uint32_t(uint64_t(i) >> 32), 0x5EEDu, 0u}, out[4];
  philox4x32(ctr, seed, out);
  const float u = uniform24_from_bits(out[0]);  // (0, 1)
  const float v = (2.f * u - 1.f) * a;
  if (t == int(WType::I8))
    static_cast<int8_t*>(data)[i] = int8_t(rintf(u * 254.f - 127.f));
  else if (t == int(WType::BF16))
    static_cast<uint16_t*>(data)[i] = f32_to_bf16_bits(v);
  else
    static_cast<float*>(data)[i] = v;
}
__global__ void fill_value_kernel(float* x, int64_t n, float v) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = v;
}
__global__ void f32_to_bf16_kernel(const float* s, uint16_t* d, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) d[i] = f32_to_bf16_bits(s[i]);
}

}  // namespace

void rms_norm(cudaStream_t st, const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y,
              int64_t ldy) {
  if (rows <= 0) return;
  if (rows > 0x7FFFFFFF) throw CudaError("cuda::rms_norm: too many rows");
  rms_norm_kernel<<<unsigned(rows), kBlock, 0, st>>>(x, ldx, n, w, eps, y, ldy);
  DIFFRT_CUDA_LAUNCHED("cuda::rms_norm");
}

void gelu_tanh_mul(cudaStream_t st, const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n,
                   float* h, int64_t ldh) {
  if (rows <= 0 || n <= 0) return;
  gelu_mul_kernel<<<blocks_for(rows * n), kBlock, 0, st>>>(g, ldg, u, ldu, rows, n, h, ldh);
  DIFFRT_CUDA_LAUNCHED("cuda::gelu_tanh_mul");
}

void soft_cap(cudaStream_t st, float* x, int64_t n, float cap) {
  if (n <= 0) return;
  soft_cap_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, n, cap);
  DIFFRT_CUDA_LAUNCHED("cuda::soft_cap");
}

void softmax_rows(cudaStream_t st, const float* src, float* dst, int64_t ld, int64_t rows, int64_t n) {
  if (rows <= 0) return;
  softmax_kernel<<<unsigned(rows), kBlock, 0, st>>>(src, dst, ld, n);
  DIFFRT_CUDA_LAUNCHED("cuda::softmax_rows");
}

void round_to_bf16(cudaStream_t st, float* x, int64_t n) {
  if (n <= 0) return;
  round_bf16_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, n);
  DIFFRT_CUDA_LAUNCHED("cuda::round_to_bf16");
}
void scale(cudaStream_t st, float* x, int64_t n, float s) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, n, s);
  DIFFRT_CUDA_LAUNCHED("cuda::scale");
}
void add(cudaStream_t st, float* x, const float* y, int64_t n) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, y, n);
  DIFFRT_CUDA_LAUNCHED("cuda::add");
}
void add_rows(cudaStream_t st, float* x, const float* y, int64_t row_elems, int n_rows, const uint8_t* mask) {
  const int64_t n = row_elems * n_rows;
  if (n <= 0) return;
  add_rows_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, y, row_elems, n, mask);
  DIFFRT_CUDA_LAUNCHED("cuda::add_rows");
}
void add_scale(cudaStream_t st, float* x, const float* y, int64_t n, float s) {
  if (n <= 0) return;
  add_scale_kernel<<<blocks_for(n), kBlock, 0, st>>>(x, y, n, s);
  DIFFRT_CUDA_LAUNCHED("cuda::add_scale");
}

void embed(cudaStream_t st, const DMatrix& E, const int32_t* ids, int64_t n, float scale, float* out) {
  if (n <= 0) return;
  if (E.type == WType::I8 && !E.scale) throw CudaError("cuda::embed: int8 embedding without scales");
  if (E.type == WType::BF16)
    embed_kernel<uint16_t>
        <<<unsigned(n), kBlock, 0, st>>>(static_cast<const uint16_t*>(E.data), nullptr, E.ld, E.k, ids, scale, out);
  else if (E.type == WType::I8)
    embed_kernel<int8_t>
        <<<unsigned(n), kBlock, 0, st>>>(static_cast<const int8_t*>(E.data), E.scale, E.ld, E.k, ids, scale, out);
  else
    embed_kernel<float>
        <<<unsigned(n), kBlock, 0, st>>>(static_cast<const float*>(E.data), nullptr, E.ld, E.k, ids, scale, out);
  DIFFRT_CUDA_LAUNCHED("cuda::embed");
}

void rope(cudaStream_t st, float* x, int64_t ldx, int64_t tokens, int n_head, int hd, const int32_t* pos,
          const float* cos, const float* sin) {
  if (tokens <= 0) return;
  rope_kernel<<<unsigned(tokens), kBlock, 0, st>>>(x, ldx, n_head, hd, pos, cos, sin);
  DIFFRT_CUDA_LAUNCHED("cuda::rope");
}

void rms_norm_rope(cudaStream_t st, float* x, int64_t tokens, int n_head, int hd, const float* w, float eps,
                   const int32_t* pos, const float* cos, const float* sin) {
  if (tokens <= 0 || n_head <= 0) return;
  if (hd % 2) throw CudaError("cuda::rms_norm_rope: odd head_dim");
  if (tokens * n_head > int64_t(INT_MAX)) throw CudaError("cuda::rms_norm_rope: too many rows");
  norm_rope_kernel<<<unsigned(tokens * n_head), 128, 0, st>>>(x, n_head, hd, w, eps, pos, cos, sin);
  DIFFRT_CUDA_LAUNCHED("cuda::rms_norm_rope");
}

void fill_uniform(cudaStream_t st, void* data, WType t, int64_t n, float a, uint64_t seed) {
  if (n <= 0) return;
  fill_uniform_kernel<<<blocks_for(n), kBlock, 0, st>>>(data, int(t), n, a, seed);
  DIFFRT_CUDA_LAUNCHED("cuda::fill_uniform");
}
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    float mx = 0.f;
    for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, std::fabs(x[i]));
    const float s = mx / 127.f;
    scale[r] = s;
    for (int64_t i = 0; i < cols; ++i)
      q[r * cols + i] = s > 0.f ? int8_t(std::max(-127.f, std::min(127.f, std::nearbyint(x[i] / s)))) : int8_t(0);
  }
}

void fill_value(cudaStream_t st, float* data, int64_t n, float v) {
  if (n <= 0) return;
  fill_value_kernel<<<blocks_for(n), kBlock, 0, st>>>(data, n, v);
  DIFFRT_CUDA_LAUNCHED("cuda::fill_value");
}
void f32_to_bf16(cudaStream_t st, const float* src, void* dst, int64_t n) {
  if (n <= 0) return;
  f32_to_bf16_kernel<<<blocks_for(n), kBlock, 0, st>>>(src, static_cast<uint16_t*>(dst), n);
  DIFFRT_CUDA_LAUNCHED("cuda::f32_to_bf16");
}

}  // namespace diffrt::kernels::cuda

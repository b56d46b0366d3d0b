// GEMMs on the device: y = x · Wᵀ with f32 accumulation, plain and grouped by expert.
//  - SIMT kernel (any weight type, f32 activations): 64x64 output tile per 256-thread block, K in
//    steps of 16 through shared memory, 4x4 outputs per thread. Exact f32 products, the reference.
//  - Tensor-core kernel (bf16 weights, activations rounded to bf16, f32 accumulation) via WMMA
//    16x16x16 fragments: 64x64 tile per 4-warp block, each warp 32x32. Used for compute type bf16
//    and for int8 weights with bf16 activations (W8A16).
//  - Int8 tensor-core kernel (W8A8): the same tiling with s8 fragments and int32 accumulation;
//    activations quantized per row on the way into shared memory from a row-amax pass.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <climits>

#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

constexpr int BM = 64, BN = 64, BK = 16;
constexpr int TBK = 32;  // tensor-core kernel: K step
static_assert(TBK % 16 == 0, "the tensor-core K step is a whole number of 16-wide fragments");
static_assert((TBK + 8) * 2 % 16 == 0, "shared rows of the B tile must keep 16-byte alignment for vector stores");

// One BMxBN tile of C[m][n] = Σ_k A[m][k] W(n, k); W(n, k) = W[n*ldw + k] (NK) or W[k*ldw + n] (KN),
// over k in [k_begin, K) (split-K: K is the end of this block's part).
template <class T>
__device__ void simt_tile(const float* __restrict__ A, int64_t lda, int64_t M, const T* __restrict__ W,
                          const float* __restrict__ scale, int64_t N, int64_t K, int64_t ldw, bool kn,
                          float* __restrict__ C, int64_t ldc, int64_t m0, int64_t n0, int64_t k_begin = 0) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int64_t k0 = k_begin; k0 < K; k0 += BK) {
    for (int i = tid; i < BM * BK; i += blockDim.x) {
      const int m = i / BK, kk = i % BK;
      const int64_t gm = m0 + m, gk = k0 + kk;
      As[kk][m] = (gm < M && gk < K) ? A[gm * lda + gk] : 0.f;
    }
    if (!kn) {
      for (int i = tid; i < BN * BK; i += blockDim.x) {
        const int n = i / BK, kk = i % BK;
        const int64_t gn = n0 + n, gk = k0 + kk;
        Bs[kk][n] = (gn < N && gk < K) ? load_w(W, gn * ldw + gk) * (scale ? scale[gn] : 1.f) : 0.f;
      }
    } else {
      for (int i = tid; i < BN * BK; i += blockDim.x) {
        const int n = i % BN, kk = i / BN;
        const int64_t gn = n0 + n, gk = k0 + kk;
        Bs[kk][n] = (gn < N && gk < K) ? load_w(W, gk * ldw + gn) * (scale ? scale[gk] : 1.f) : 0.f;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty + 16 * i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx + 16 * j;
      if (gn < N) C[gm * ldc + gn] = acc[i][j];
    }
  }
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// One K step (TBK) of a warp's 2x2 fragments from the shared tiles (bf16 or s8 operands), and the
// store of its accumulators to the shared output tile: shared by the bf16 and the int8 kernels.
// a_at(row, k) / b_at(row, k): the (32-byte aligned) address of a fragment's first element; ld: its
// row stride in elements.
template <class E, class Acc, class APtr, class BPtr>
__device__ __forceinline__ void warp_mma(
    APtr a_at, BPtr b_at, unsigned ld, int wm, int wn,
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, Acc> (&acc)[2][2]) {
  using namespace nvcuda;
#pragma unroll
  for (int kk = 0; kk < TBK; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::col_major> b[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], a_at(wm * 32 + i * 16, kk), ld);
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], b_at(wn * 32 + j * 16, kk), ld);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

template <class Acc>
__device__ __forceinline__ void store_acc(
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, Acc> (&acc)[2][2], Acc (*Cs)[BN + 4], int wm,
    int wn) {
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      nvcuda::wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], BN + 4,
                                      nvcuda::wmma::mem_row_major);
}
#endif

// Tensor-core tile: A rounded to bf16 on the way into shared memory; W bf16 (T = uint16_t) or int8
// with per-row scales (T = int8_t), dequantized to bf16 in shared memory.
template <class T>
__device__ __forceinline__ __nv_bfloat16 w_bf16(const T* W, const float* scale, int64_t i, int64_t row);
template <>
__device__ __forceinline__ __nv_bfloat16 w_bf16<uint16_t>(const uint16_t* W, const float*, int64_t i, int64_t) {
  return reinterpret_cast<const __nv_bfloat16*>(W)[i];
}
template <>
__device__ __forceinline__ __nv_bfloat16 w_bf16<int8_t>(const int8_t* W, const float* scale, int64_t i, int64_t row) {
  return __float2bfloat16_rn(float(W[i]) * scale[row]);
}

template <class T>
__device__ void wmma_tile(const float* __restrict__ A, int64_t lda, int64_t M, const T* __restrict__ W,
                          const float* __restrict__ scale, int64_t N, int64_t K, int64_t ldw, bool kn,
                          float* __restrict__ C, int64_t ldc, int64_t m0, int64_t n0, int64_t k_begin = 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ __align__(32) __nv_bfloat16 As[BM][TBK + 8];
  __shared__ __align__(32) __nv_bfloat16 Bs[BN][TBK + 8];
  __shared__ __align__(32) float Cs[BM][BN + 4];
  const int tid = threadIdx.x, warp = tid / 32, wm = warp / 2, wn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  // Vector loads need aligned rows (base pointer and row stride): 16 bytes of A (4 floats), 8 weights
  // (16 bytes of bf16, 8 bytes of int8).
  constexpr int64_t wvec_bytes = 8 * int64_t(sizeof(T));
  const bool vec_a = (lda % 4 == 0) && (reinterpret_cast<uintptr_t>(A) % 16 == 0);
  const bool vec_w = (ldw % 8 == 0) && (reinterpret_cast<uintptr_t>(W) % wvec_bytes == 0);
  for (int64_t k0 = k_begin; k0 < K; k0 += TBK) {
    // A: 4 floats per load where the rows allow 16-byte loads, else one element at a time.
    for (int i = tid; i < BM * TBK / 4; i += blockDim.x) {
      const int m = i / (TBK / 4), kq = (i % (TBK / 4)) * 4;
      const int64_t gm = m0 + m, gk = k0 + kq;
      if (vec_a && gm < M && gk + 3 < K) {
        const float4 v = *reinterpret_cast<const float4*>(A + gm * lda + gk);
        As[m][kq] = __float2bfloat16_rn(v.x);
        As[m][kq + 1] = __float2bfloat16_rn(v.y);
        As[m][kq + 2] = __float2bfloat16_rn(v.z);
        As[m][kq + 3] = __float2bfloat16_rn(v.w);
      } else {
        for (int u = 0; u < 4; ++u)
          As[m][kq + u] = __float2bfloat16_rn((gm < M && gk + u < K) ? A[gm * lda + gk + u] : 0.f);
      }
    }
    if (!kn) {
      // W rows: 8 bf16 (16 bytes) per load where aligned, else one element at a time.
      for (int i = tid; i < BN * TBK / 8; i += blockDim.x) {
        const int n = i / (TBK / 8), kq = (i % (TBK / 8)) * 8;
        const int64_t gn = n0 + n, gk = k0 + kq;
        if (vec_w && gn < N && gk + 7 < K) {
          if constexpr (sizeof(T) == 2) {
            *reinterpret_cast<uint4*>(&Bs[n][kq]) = *reinterpret_cast<const uint4*>(W + gn * ldw + gk);
          } else {
            const uint2 raw = *reinterpret_cast<const uint2*>(W + gn * ldw + gk);
            const int8_t* q = reinterpret_cast<const int8_t*>(&raw);
            const float sc = scale[gn];
#pragma unroll
            for (int u = 0; u < 8; ++u) Bs[n][kq + u] = __float2bfloat16_rn(float(q[u]) * sc);
          }
        } else {
          for (int u = 0; u < 8; ++u)
            Bs[n][kq + u] =
                (gn < N && gk + u < K) ? w_bf16<T>(W, scale, gn * ldw + gk + u, gn) : __float2bfloat16_rn(0.f);
        }
      }
    } else {
      for (int i = tid; i < BN * TBK; i += blockDim.x) {
        const int n = i % BN, kk = i / BN;
        const int64_t gn = n0 + n, gk = k0 + kk;
        Bs[n][kk] = (gn < N && gk < K) ? w_bf16<T>(W, scale, gk * ldw + gn, gk) : __float2bfloat16_rn(0.f);
      }
    }
    __syncthreads();
    warp_mma<__nv_bfloat16>([&](int r, int k) { return &As[r][k]; }, [&](int r, int k) { return &Bs[r][k]; }, TBK + 8,
                            wm, wn, acc);
    __syncthreads();
  }
  store_acc(acc, Cs, wm, wn);
  __syncthreads();
  for (int i = tid; i < BM * BN; i += blockDim.x) {
    const int m = i / BN, n = i % BN;
    const int64_t gm = m0 + m, gn = n0 + n;
    if (gm < M && gn < N) C[gm * ldc + gn] = Cs[m][n];
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // never launched below sm_80 (tensor_cores_usable()); fail loudly rather than write nothing
#endif
}

// blockIdx.z: the part of K (split-K) of [z * k_part, (z + 1) * k_part), written to C + z * c_part.
template <class T>
__global__ void __launch_bounds__(256)
    simt_gemm_kernel(const float* A, int64_t lda, int64_t M, const T* W, const float* scale, int64_t N, int64_t K,
                     int64_t ldw, bool kn, float* C, int64_t ldc, int64_t k_part, int64_t c_part) {
  const int64_t k0 = int64_t(blockIdx.z) * k_part, k1 = min(K, k0 + k_part);
  simt_tile<T>(A, lda, M, W, scale, N, k1, ldw, kn, C + blockIdx.z * c_part, ldc, int64_t(blockIdx.x) * BM,
               int64_t(blockIdx.y) * BN, k0);
}

template <class T>
__global__ void __launch_bounds__(128)
    wmma_gemm_kernel(const float* A, int64_t lda, int64_t M, const T* W, const float* scale, int64_t N, int64_t K,
                     int64_t ldw, bool kn, float* C, int64_t ldc, int64_t k_part, int64_t c_part) {
  const int64_t k0 = int64_t(blockIdx.z) * k_part, k1 = min(K, k0 + k_part);
  wmma_tile<T>(A, lda, M, W, scale, N, k1, ldw, kn, C + blockIdx.z * c_part, ldc, int64_t(blockIdx.x) * BM,
               int64_t(blockIdx.y) * BN, k0);
}

// y[m][n] = Σ_z part[z][m][n], z in order (deterministic: graph and plain launches agree bit for bit).
__global__ void splitk_sum_kernel(const float* part, int parts, int64_t M, int64_t N, float* y, int64_t ldy) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M * N) return;
  float s = 0.f;
  for (int z = 0; z < parts; ++z) s += part[z * M * N + i];
  y[(i / N) * ldy + i % N] = s;
}

// Grouped: blockIdx.y is a tile of the device-built list tiles = [count, (expert, first row)...];
// expert e owns rows [offset[e], offset[e+1]) of A and C and the weight rows [e*N, (e+1)*N).
template <class T, bool TC>
__global__ void __launch_bounds__(TC ? 128 : 256)
    grouped_gemm_kernel(const float* A, int64_t lda, const T* W, const float* scale, int64_t N, int64_t K, int64_t ldw,
                        const int32_t* offset, const int32_t* tiles, float* C, int64_t ldc) {
  const int t = blockIdx.y;
  if (t >= tiles[0]) return;
  const int e = tiles[1 + 2 * t], m0 = tiles[2 + 2 * t];
  const int64_t base = offset[e], rows = offset[e + 1] - base;
  const T* We = W + int64_t(e) * N * ldw;
  const float* se = scale ? scale + int64_t(e) * N : nullptr;  // NK: one scale per weight row
  if constexpr (TC)
    wmma_tile<T>(A + base * lda, lda, rows, We, se, N, K, ldw, false, C + base * ldc, ldc, m0,
                 int64_t(blockIdx.x) * BN);
  else
    simt_tile<T>(A + base * lda, lda, rows, We, se, N, K, ldw, false, C + base * ldc, ldc, m0,
                 int64_t(blockIdx.x) * BN);
}

// Int8 tensor-core tile (W8A8): A quantized per row with the CPU's rule (amax[m] / 127, round half
// to even, clamp ±127) into shared memory, W int8 NK, int32 accumulation; C = acc · (amax/127) · scale.
__device__ void i8_tile(const float* __restrict__ A, int64_t lda, int64_t M, const float* __restrict__ amax,
                        const int8_t* __restrict__ W, const float* __restrict__ scale, int64_t N, int64_t K,
                        int64_t ldw, float* __restrict__ C, int64_t ldc, int64_t m0, int64_t n0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  // One plane per 16-wide K slice, rows of 16 bytes: every fragment (16 rows from a multiple of 16)
  // starts 256-byte aligned, as load_matrix_sync wants (32), with ldm 16 bytes.
  __shared__ __align__(32) signed char As[TBK / 16][BM][16];
  __shared__ __align__(32) signed char Bs[TBK / 16][BN][16];
  __shared__ __align__(32) int Cs[BM][BN + 4];
  __shared__ float inv_a[BM];
  const int tid = threadIdx.x, warp = tid / 32, wm = warp / 2, wn = warp % 2;
  for (int i = tid; i < BM; i += blockDim.x) {
    const float am = m0 + i < M ? amax[m0 + i] : 0.f;
    inv_a[i] = am > 0.f ? 127.f / am : 0.f;
  }
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0);
  const bool vec_w = (ldw % 8 == 0) && (reinterpret_cast<uintptr_t>(W) % 8 == 0);
  __syncthreads();
  for (int64_t k0 = 0; k0 < K; k0 += TBK) {
    for (int i = tid; i < BM * TBK; i += blockDim.x) {
      const int m = i / TBK, kk = i % TBK;
      const int64_t gm = m0 + m, gk = k0 + kk;
      int q = 0;
      if (gm < M && gk < K) q = min(127, max(-127, __float2int_rn(A[gm * lda + gk] * inv_a[m])));
      As[kk / 16][m][kk % 16] = static_cast<signed char>(q);
    }
    for (int i = tid; i < BN * TBK / 8; i += blockDim.x) {
      const int n = i / (TBK / 8), kq = (i % (TBK / 8)) * 8;
      const int64_t gn = n0 + n, gk = k0 + kq;
      if (vec_w && gn < N && gk + 7 < K) {
        *reinterpret_cast<uint2*>(&Bs[kq / 16][n][kq % 16]) = *reinterpret_cast<const uint2*>(W + gn * ldw + gk);
      } else {
        for (int u = 0; u < 8; ++u) Bs[kq / 16][n][kq % 16 + u] = (gn < N && gk + u < K) ? W[gn * ldw + gk + u] : 0;
      }
    }
    __syncthreads();
    warp_mma<signed char>([&](int r, int k) { return &As[k / 16][r][0]; },
                          [&](int r, int k) { return &Bs[k / 16][r][0]; }, 16, wm, wn, acc);
    __syncthreads();
  }
  store_acc(acc, Cs, wm, wn);
  __syncthreads();
  for (int i = tid; i < BM * BN; i += blockDim.x) {
    const int m = i / BN, n = i % BN;
    const int64_t gm = m0 + m, gn = n0 + n;
    if (gm < M && gn < N) C[gm * ldc + gn] = float(Cs[m][n]) * (amax[gm] / 127.f) * scale[gn];
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // never launched below sm_80 (tensor_cores_usable())
#endif
}

__global__ void __launch_bounds__(128)
    i8_gemm_kernel(const float* A, int64_t lda, int64_t M, const float* amax, const int8_t* W, const float* scale,
                   int64_t N, int64_t K, int64_t ldw, float* C, int64_t ldc) {
  i8_tile(A, lda, M, amax, W, scale, N, K, ldw, C, ldc, int64_t(blockIdx.x) * BM, int64_t(blockIdx.y) * BN);
}

__global__ void __launch_bounds__(128)
    grouped_i8_kernel(const float* A, int64_t lda, const float* amax, const int8_t* W, const float* scale, int64_t N,
                      int64_t K, int64_t ldw, const int32_t* offset, const int32_t* tiles, float* C, int64_t ldc) {
  const int t = blockIdx.y;
  if (t >= tiles[0]) return;
  const int e = tiles[1 + 2 * t], m0 = tiles[2 + 2 * t];
  const int64_t base = offset[e], rows = offset[e + 1] - base;
  i8_tile(A + base * lda, lda, rows, amax + base, W + int64_t(e) * N * ldw, scale + int64_t(e) * N, N, K, ldw,
          C + base * ldc, ldc, m0, int64_t(blockIdx.x) * BN);
}

// amax[m] = max |x[m][0:K]| (one block per row): the W8A8 activation scales.
__global__ void row_amax_kernel(const float* x, int64_t ldx, int64_t K, float* amax) {
  __shared__ float sh[32];
  const float* row = x + int64_t(blockIdx.x) * ldx;
  float m = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(row[k]));
  m = block_max(m, sh);
  if (threadIdx.x == 0) amax[blockIdx.x] = m;
}

// bf16 WMMA needs sm_80+; older GPUs take the SIMT kernel (f32 activations) instead.
bool tensor_cores_usable() {
  static const bool ok = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 8;
  }();
  return ok;
}

// Split-K for a very long K (the self-conditioning product probs·E, K = vocabulary): at batch 1
// its few output tiles would each run K/32 steps on a mostly idle GPU. The parts depend on K alone,
// never on M, so a row's sums (and its tokens) do not depend on how many rows share the step.
constexpr int64_t kSplitMinK = 32768, kSplitParts = 8;
int splitk_parts(int64_t K, const GemmScratch* s) { return s && s->splitk && K >= kSplitMinK ? int(kSplitParts) : 1; }

// W8A8 applies to an a8 NK int8 matrix when the tensor cores may be used.
bool use_w8a8(const DMatrix& w, bool allow_bf16_act, float* act_amax) {
  if (!(w.type == WType::I8 && w.a8 && !w.kn && allow_bf16_act && tensor_cores_usable())) return false;
  if (w.k > (int64_t(1) << 31) / (127 * 127)) return false;  // int32 sums could overflow: W8A16 instead
  if (!act_amax) throw CudaError("cuda::gemm: W8A8 weights need an activation-scale buffer");
  return true;
}

// One launch of the bf16 / int8 (W8A16) tensor-core or the SIMT kernel: out (ldc) = x · W, or with
// grid.z > 1 the split-K parts of k_part, c_part floats apart.
void launch_gemm(cudaStream_t st, const float* x, int64_t ldx, int64_t M, const DMatrix& w, bool tc, float* out,
                 int64_t ldc, int64_t k_part, int64_t c_part, dim3 grid) {
  if (w.type == WType::BF16) {
    const auto* W = static_cast<const uint16_t*>(w.data);
    if (tc)
      wmma_gemm_kernel<uint16_t>
          <<<grid, 128, 0, st>>>(x, ldx, M, W, nullptr, w.n, w.k, w.ld, w.kn, out, ldc, k_part, c_part);
    else
      simt_gemm_kernel<uint16_t>
          <<<grid, 256, 0, st>>>(x, ldx, M, W, nullptr, w.n, w.k, w.ld, w.kn, out, ldc, k_part, c_part);
  } else if (w.type == WType::I8) {
    const auto* W = static_cast<const int8_t*>(w.data);
    if (tc)
      wmma_gemm_kernel<int8_t>
          <<<grid, 128, 0, st>>>(x, ldx, M, W, w.scale, w.n, w.k, w.ld, w.kn, out, ldc, k_part, c_part);
    else
      simt_gemm_kernel<int8_t>
          <<<grid, 256, 0, st>>>(x, ldx, M, W, w.scale, w.n, w.k, w.ld, w.kn, out, ldc, k_part, c_part);
  } else {
    simt_gemm_kernel<float><<<grid, 256, 0, st>>>(x, ldx, M, static_cast<const float*>(w.data), nullptr, w.n, w.k, w.ld,
                                                  w.kn, out, ldc, k_part, c_part);
  }
  DIFFRT_CUDA_LAUNCHED("cuda::gemm");
}

void row_amax(cudaStream_t st, const float* x, int64_t ldx, int64_t rows, int64_t K, float* amax) {
  if (rows <= 0) return;
  if (rows > int64_t(INT_MAX)) throw CudaError("cuda::row_amax: too many rows");
  row_amax_kernel<<<unsigned(rows), kBlock, 0, st>>>(x, ldx, K, amax);
  DIFFRT_CUDA_LAUNCHED("cuda::row_amax");
}

}  // namespace

void gemm(cudaStream_t st, const float* x, int64_t ldx, int64_t M, const DMatrix& w, float* y, int64_t ldy,
          bool allow_bf16_act, const GemmScratch* scratch) {
  if (M <= 0 || w.n <= 0) return;
  float* act_amax = scratch ? scratch->act_amax : nullptr;
  // blockIdx.x runs over the row tiles of x: the blocks that read the same weight tile are launched
  // next to each other, so the weights come from HBM once and from L2 for the other row tiles.
  dim3 grid(unsigned((M + BM - 1) / BM), unsigned((w.n + BN - 1) / BN));
  if (grid.y > 65535) throw CudaError("cuda::gemm: N too large for one launch");
  const bool tc = allow_bf16_act && w.type != WType::F32 && tensor_cores_usable();
  if (w.type == WType::I8 && !w.scale) throw CudaError("cuda::gemm: int8 weights without scales");
  const bool w8a8 = use_w8a8(w, allow_bf16_act, act_amax);
  const int parts = w8a8 ? 1 : splitk_parts(w.k, scratch);
  if (parts > 1) {
    // The parts go to the workspace, then one pass sums them in order into y; rows in chunks that
    // fit the workspace (each row's sums are the same whatever the chunk).
    const int64_t k_part = ((w.k + parts - 1) / parts + TBK - 1) / TBK * TBK;  // whole K steps
    const int64_t n_parts = (w.k + k_part - 1) / k_part;
    const int64_t chunk = std::min(M, scratch->splitk_floats / (n_parts * w.n));
    if (chunk < 1) throw CudaError("cuda::gemm: split-K workspace too small for one row");
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
      const int64_t mc = std::min(chunk, M - m0);
      const dim3 g(unsigned((mc + BM - 1) / BM), grid.y, unsigned(n_parts));
      launch_gemm(st, x + m0 * ldx, ldx, mc, w, tc, scratch->splitk, w.n, k_part, mc * w.n, g);
      splitk_sum_kernel<<<blocks_for(mc * w.n), kBlock, 0, st>>>(scratch->splitk, int(n_parts), mc, w.n, y + m0 * ldy,
                                                                 ldy);
      DIFFRT_CUDA_LAUNCHED("cuda::gemm split-K sum");
    }
    return;
  }
  if (w8a8) {
    row_amax(st, x, ldx, M, w.k, act_amax);
    i8_gemm_kernel<<<grid, 128, 0, st>>>(x, ldx, M, act_amax, static_cast<const int8_t*>(w.data), w.scale, w.n, w.k,
                                         w.ld, y, ldy);
    DIFFRT_CUDA_LAUNCHED("cuda::gemm");
    return;
  }
  launch_gemm(st, x, ldx, M, w, tc, y, ldy, w.k, 0, grid);
}

void grouped_gemm(cudaStream_t st, const float* x, int64_t ldx, const DMatrix& w_all, int64_t n_per_expert,
                  const int32_t* offset, const int32_t* tiles, int64_t max_tiles, float* y, int64_t ldy,
                  bool allow_bf16_act, int64_t n_rows, float* act_amax) {
  if (max_tiles <= 0) return;
  if (max_tiles > 65535) throw CudaError("cuda::grouped_gemm: too many tiles for one launch");
  const dim3 grid(unsigned((n_per_expert + BN - 1) / BN), unsigned(max_tiles));
  const bool tc = allow_bf16_act && w_all.type != WType::F32 && tensor_cores_usable();
  if (w_all.type == WType::I8 && !w_all.scale) throw CudaError("cuda::grouped_gemm: int8 weights without scales");
  const int64_t N = n_per_expert, K = w_all.k, ld = w_all.ld;
  if (use_w8a8(w_all, allow_bf16_act, act_amax)) {
    row_amax(st, x, ldx, n_rows, K, act_amax);
    grouped_i8_kernel<<<grid, 128, 0, st>>>(x, ldx, act_amax, static_cast<const int8_t*>(w_all.data), w_all.scale, N, K,
                                            ld, offset, tiles, y, ldy);
  } else if (w_all.type == WType::BF16) {
    const auto* W = static_cast<const uint16_t*>(w_all.data);
    if (tc)
      grouped_gemm_kernel<uint16_t, true><<<grid, 128, 0, st>>>(x, ldx, W, nullptr, N, K, ld, offset, tiles, y, ldy);
    else
      grouped_gemm_kernel<uint16_t, false><<<grid, 256, 0, st>>>(x, ldx, W, nullptr, N, K, ld, offset, tiles, y, ldy);
  } else if (w_all.type == WType::I8) {
    const auto* W = static_cast<const int8_t*>(w_all.data);
    if (tc)
      grouped_gemm_kernel<int8_t, true><<<grid, 128, 0, st>>>(x, ldx, W, w_all.scale, N, K, ld, offset, tiles, y, ldy);
    else
      grouped_gemm_kernel<int8_t, false><<<grid, 256, 0, st>>>(x, ldx, W, w_all.scale, N, K, ld, offset, tiles, y, ldy);
  } else {
    grouped_gemm_kernel<float, false>
        <<<grid, 256, 0, st>>>(x, ldx, static_cast<const float*>(w_all.data), nullptr, N, K, ld, offset, tiles, y, ldy);
  }
  DIFFRT_CUDA_LAUNCHED("cuda::grouped_gemm");
}

int64_t gemm_tile_rows() { return BM; }

}  // namespace diffrt::kernels::cuda

// Device helpers shared by the CUDA kernels: bf16 bits, block reductions, the Philox stream.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/kernels_cuda.h"
#include "sampler/philox.h"

namespace diffrt::kernels::cuda {

constexpr int kBlock = 256;  // threads of the row kernels (reductions assume a multiple of 32, <= 1024)

inline unsigned blocks_for(int64_t n, int threads = kBlock) { return unsigned((n + threads - 1) / threads); }

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }

// Round to nearest even (inf/NaN unchanged), as round_to_bf16 on the CPU.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7F800000u) == 0x7F800000u) return uint16_t(u >> 16 | ((u & 0xFFFFu) ? 0x40u : 0u));
  u = u + 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
__device__ __forceinline__ float round_bf16(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7F800000u) == 0x7F800000u) return x;
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  return __uint_as_float(u);
}

template <class T>
__device__ __forceinline__ float load_w(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load_w<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float load_w<uint16_t>(const uint16_t* p, int64_t i) {
  return bf16_bits_to_f32(p[i]);
}
template <>
__device__ __forceinline__ float load_w<int8_t>(const int8_t* p, int64_t i) {
  return float(p[i]);
}

// Block-wide sum (every thread gets the result). `sh`: blockDim.x / 32 elements of shared memory.
template <class T>
__device__ T block_sum(T v, T* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();  // sh may still be read by a previous reduction
  if (lane == 0) sh[w] = v;
  __syncthreads();
  T r = 0;
  for (int i = 0; i < nw; ++i) r += sh[i];  // fixed order: deterministic
  return r;
}

__device__ inline float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float r = sh[0];
  for (int i = 1; i < nw; ++i) r = fmaxf(r, sh[i]);
  return r;
}

// (value, index) maximum: larger value wins, lower index among equal values (first maximum).
struct ArgMax {
  float v;
  int i;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}
__device__ inline ArgMax block_argmax(ArgMax a, float* shv, int* shi) {
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax b{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    a = better(a, b);
  }
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    shv[w] = a.v;
    shi[w] = a.i;
  }
  __syncthreads();
  ArgMax r{shv[0], shi[0]};
  for (int i = 1; i < nw; ++i) r = better(r, ArgMax{shv[i], shi[i]});
  return r;
}

// Philox4x32-10, its counter layout and the draw conversions: one definition with the CPU sampler.
using philox::exp1_from_bits;
using philox::kPurposeInit;
using philox::kPurposeRenoise;
using philox::kPurposeSample;
using philox::philox4x32;
using philox::randint;
using philox::stream_counter;
using philox::uniform24_from_bits;

}  // namespace diffrt::kernels::cuda

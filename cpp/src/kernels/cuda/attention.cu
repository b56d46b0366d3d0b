// Attention over [cached prefix | new tokens] on the device. One block per (query, head): scores for
// every key into global scratch (a warp per key, lanes over head dims), softmax in f32 (masked keys
// get probability 0), then out[d] = Σ p_i V[i][d] with threads over d. Head dims up to 512 (q in
// shared memory); GQA by kv head = h / (n_head / n_kv_head). Scaling 1.0 (spec §5.1).
#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

constexpr int kAttnThreads = 128;

__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttentionArgs a) {
  extern __shared__ float qs[];  // [hd]
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int m = blockIdx.x, h = blockIdx.y;  // m = b * n_q + s
  const int b = m / a.n_q, s = m % a.n_q;
  const int hd = a.head_dim, kvh = h / (a.n_head / a.n_kv_head);
  const int nk = a.n_keys[b];
  const int qpos = a.q_pos0[b] + s, kpos0 = a.key_pos0[b];
  const float* q = a.q + int64_t(m) * a.ldq + int64_t(h) * hd;
  const int64_t crow = a.kv_rows ? a.kv_rows[b] : b;
  const float* K = a.k + crow * a.kv_row_stride + int64_t(kvh) * a.kv_head_stride;
  const float* V = a.v + crow * a.kv_row_stride + int64_t(kvh) * a.kv_head_stride;
  float* sc = a.scores + (int64_t(m) * a.n_head + h) * a.max_keys;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[d];
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int i = warp; i < nk; i += nw) {
    const int kp = kpos0 + i;
    const bool visible = (!a.causal || kp <= qpos) && (a.window <= 0 || kp > qpos - a.window);
    float dot = 0.f;
    if (visible) {
      const float* kr = K + int64_t(i) * hd;
      for (int d = lane; d < hd; d += 32) dot += qs[d] * kr[d];
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    }
    if (lane == 0) sc[i] = visible ? dot : -INFINITY;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < nk; i += blockDim.x) mx = fmaxf(mx, sc[i]);
  mx = block_max(mx, shf);
  double sum = 0.0;
  for (int i = threadIdx.x; i < nk; i += blockDim.x) {
    const float p = sc[i] == -INFINITY ? 0.f : expf(sc[i] - mx);
    sc[i] = p;
    sum += p;
  }
  sum = block_sum(sum, shd);  // ends with __syncthreads: every p is written
  const float inv = float(1.0 / sum);
  float* o = a.out + int64_t(m) * a.ldo + int64_t(h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.f;
    for (int i = 0; i < nk; ++i) acc += (sc[i] * inv) * V[int64_t(i) * hd + d];
    o[d] = acc;
  }
}

}  // namespace

void attention(cudaStream_t st, const AttentionArgs& a) {
  if (a.n_rows <= 0 || a.n_q <= 0) return;
  if (a.head_dim > 512 || a.head_dim <= 0) throw CudaError("cuda::attention: head_dim must be in [1, 512]");
  if (a.n_kv_head <= 0 || a.n_head % a.n_kv_head) throw CudaError("cuda::attention: n_head % n_kv_head != 0");
  const dim3 grid(unsigned(int64_t(a.n_rows) * a.n_q), unsigned(a.n_head));
  attention_kernel<<<grid, kAttnThreads, sizeof(float) * a.head_dim, st>>>(a);
  DIFFRT_CUDA_LAUNCHED("cuda::attention");
}

}  // namespace diffrt::kernels::cuda

// Attention over [cached prefix | new tokens] on the device. One block per (row, head, tile of 8
// queries), so each K and V row is read once for 8 queries: scores for every key into global scratch
// (a warp per key, lanes over head dims), softmax in f32 per query (masked keys get probability 0),
// then out[d] = (Σ p_i V[i][d]) / Σ p with threads over d. Head dims up to 512 (queries in shared
// memory); GQA by kv head = h / (n_head / n_kv_head). Scaling 1.0 (spec §5.1).
#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

constexpr int kAttnThreads = 128;  // 4 warps
constexpr int QT = 8;              // queries of one (row, head) per block: K and V rows are read once for all
constexpr int CH = 64;             // keys per chunk of probabilities staged in shared memory (phase 3)
constexpr int DPT = 4;             // head dims per thread in phase 3: hd <= DPT * kAttnThreads = 512

__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttentionArgs a) {
  extern __shared__ float qs[];  // [QT][hd]
  __shared__ float ps[QT][CH];
  __shared__ float invs[QT];
  const int qtiles = (a.n_q + QT - 1) / QT;
  const int b = blockIdx.x / qtiles, s0 = (blockIdx.x % qtiles) * QT, h = blockIdx.y;
  const int nq = min(QT, a.n_q - s0);
  const int hd = a.head_dim, kvh = h / (a.n_head / a.n_kv_head);
  const int nk = a.n_keys[b];
  const int qpos0 = a.q_pos0[b] + s0, kpos0 = a.key_pos0[b];
  const int64_t crow = a.kv_rows ? a.kv_rows[b] : b;
  const float* K = a.k + crow * a.kv_row_stride + int64_t(kvh) * a.kv_head_stride;
  const float* V = a.v + crow * a.kv_row_stride + int64_t(kvh) * a.kv_head_stride;
  auto scores = [&](int s) { return a.scores + ((int64_t(b) * a.n_q + s0 + s) * a.n_head + h) * a.max_keys; };
  for (int i = threadIdx.x; i < QT * hd; i += blockDim.x) {
    const int s = i / hd, d = i % hd;
    qs[i] = s < nq ? a.q[(int64_t(b) * a.n_q + s0 + s) * a.ldq + int64_t(h) * hd + d] : 0.f;
  }
  __syncthreads();

  // Phase 1: scores of every key for the QT queries (a warp per key, lanes over head dims).
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int i = warp; i < nk; i += nw) {
    const float* kr = K + int64_t(i) * hd;
    float dot[QT];
#pragma unroll
    for (int s = 0; s < QT; ++s) dot[s] = 0.f;
    for (int d = lane; d < hd; d += 32) {
      const float kv = kr[d];
#pragma unroll
      for (int s = 0; s < QT; ++s) dot[s] += qs[s * hd + d] * kv;
    }
#pragma unroll
    for (int s = 0; s < QT; ++s)
      for (int o = 16; o > 0; o >>= 1) dot[s] += __shfl_xor_sync(0xffffffffu, dot[s], o);
    if (lane == 0) {
      const int kp = kpos0 + i;
      for (int s = 0; s < nq; ++s) {
        const int qp = qpos0 + s;
        const bool visible = (!a.causal || kp <= qp) && (a.window <= 0 || kp > qp - a.window);
        scores(s)[i] = visible ? dot[s] : -INFINITY;
      }
    }
  }
  __syncthreads();

  // Phase 2: per query (a warp each), p = exp(score - max) in place (masked keys: 0), 1 / Σp.
  for (int s = warp; s < nq; s += nw) {
    float* r = scores(s);
    float mx = -INFINITY;
    for (int i = lane; i < nk; i += 32) mx = fmaxf(mx, r[i]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0.0;
    for (int i = lane; i < nk; i += 32) {
      const float p = r[i] == -INFINITY ? 0.f : expf(r[i] - mx);
      r[i] = p;
      sum += p;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) invs[s] = sum > 0 ? float(1.0 / sum) : 0.f;  // no visible key: 0, as the CPU
  }
  __syncthreads();

  // Phase 3: out[s][d] = (Σ_i p[s][i] V[i][d]) / Σp, probabilities staged per chunk of keys.
  float acc[DPT][QT];
#pragma unroll
  for (int u = 0; u < DPT; ++u)
#pragma unroll
    for (int s = 0; s < QT; ++s) acc[u][s] = 0.f;
  for (int i0 = 0; i0 < nk; i0 += CH) {
    const int nc = min(CH, nk - i0);
    for (int t = threadIdx.x; t < QT * CH; t += blockDim.x) {
      const int s = t / CH, j = t % CH;
      ps[s][j] = (s < nq && j < nc) ? scores(s)[i0 + j] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < DPT; ++u) {
      const int d = threadIdx.x + u * blockDim.x;
      if (d >= hd) continue;
      for (int j = 0; j < nc; ++j) {
        const float v = V[int64_t(i0 + j) * hd + d];
#pragma unroll
        for (int s = 0; s < QT; ++s) acc[u][s] += ps[s][j] * v;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < DPT; ++u) {
    const int d = threadIdx.x + u * blockDim.x;
    if (d >= hd) continue;
    for (int s = 0; s < nq; ++s)
      a.out[(int64_t(b) * a.n_q + s0 + s) * a.ldo + int64_t(h) * hd + d] = acc[u][s] * invs[s];
  }
}

}  // namespace

void attention(cudaStream_t st, const AttentionArgs& a) {
  if (a.n_rows <= 0 || a.n_q <= 0) return;
  if (a.head_dim > 512 || a.head_dim <= 0) throw CudaError("cuda::attention: head_dim must be in [1, 512]");
  if (a.n_kv_head <= 0 || a.n_head % a.n_kv_head) throw CudaError("cuda::attention: n_head % n_kv_head != 0");
  if (a.head_dim > DPT * kAttnThreads) throw CudaError("cuda::attention: head_dim too large");
  const int64_t qtiles = (a.n_q + QT - 1) / QT;
  const dim3 grid(unsigned(int64_t(a.n_rows) * qtiles), unsigned(a.n_head));
  attention_kernel<<<grid, kAttnThreads, sizeof(float) * QT * a.head_dim, st>>>(a);
  DIFFRT_CUDA_LAUNCHED("cuda::attention");
}

}  // namespace diffrt::kernels::cuda

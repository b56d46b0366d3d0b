// The sampler's per-step ops on the device (spec §10.2), bit-compatible with cpp/src/sampler/:
// the same Philox4x32-10 counters, the same exponential race and first-maximum rules, the same
// sort order and fp32 comparison of the exclusive prefix sum. exp/log are evaluated in double and
// rounded (the CPU uses the f32 libm functions; both are within an ulp, so draws agree except for
// keys tied to the last bit).
#include <climits>

#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

__global__ void token_stats_kernel(const float* raw, float* pl, int V, int L, const RowParams* rows,
                                   const int32_t* tape_samples, int32_t* argmax, float* entropy, int32_t* sampled) {
  __shared__ float shv[32];
  __shared__ int shi[32];
  __shared__ double shd[32];
  const int64_t i = blockIdx.x;
  const int r = int(i / L), pos = int(i % L);
  const RowParams p = rows[r];
  if (!p.active) return;  // uniform over the block
  const float T = p.temperature;
  const bool sample = !p.tape, round_pl = p.round_pl != 0;
  const float* x = raw + i * V;
  float* o = pl + i * V;

  // Pass 1: first maximum of pl = raw / T.
  ArgMax best{-INFINITY, INT_MAX};
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = x[j] / T;
    if (v > best.v) best = ArgMax{v, j};  // j grows within a thread: strict > keeps the first
  }
  best = block_argmax(best, shv, shi);
  const float m = best.v;
  const int amax = best.i < V ? best.i : 0;

  // Pass 2: sums for the entropy, the exponential race, and pl written out.
  double s = 0.0, t = 0.0;
  ArgMax race{-1.0f, INT_MAX};
  for (int b4 = threadIdx.x; 4 * b4 < V; b4 += blockDim.x) {
    uint32_t words[4] = {0, 0, 0, 0};
    if (sample) {
      uint32_t ctr[4];
      stream_counter(p.canvas, p.step, kPurposeSample, p.key, pos, uint32_t(b4), ctr);
      philox4x32(ctr, p.seed, words);
    }
    for (int w = 0; w < 4; ++w) {
      const int j = 4 * b4 + w;
      if (j >= V) break;
      const float v = x[j] / T;
      o[j] = round_pl ? round_bf16(v) : v;
      const float d = v - m;
      const float e = float(exp(double(d)));
      if (e > 0.0f) {
        s += e;
        t += double(d) * e;
      }
      if (sample) {
        const float key = e / exp1_from_bits(words[w]);
        if (key > race.v) race = ArgMax{key, j};
      }
    }
  }
  s = block_sum(s, shd);
  t = block_sum(t, shd);
  if (sample) race = block_argmax(race, shv, shi);
  if (threadIdx.x == 0) {
    argmax[i] = amax;
    entropy[i] = float(log(s) - t / s);
    sampled[i] = sample ? (race.i < V ? race.i : amax) : tape_samples[i];
  }
}

// One block per row (blockDim 1024 >= L rounded up to a power of two).
__global__ void __launch_bounds__(1024)
    accept_renoise_kernel(const float* H, const int32_t* sampled, int L, int P, int V, const RowParams* rows,
                          const int32_t* tape, uint8_t* accepted, int32_t* canvas, float* mean_H) {
  __shared__ float key[1024];
  __shared__ int id[1024];
  __shared__ uint8_t acc[1024];
  const int r = blockIdx.x;
  const RowParams p = rows[r];
  if (!p.active) return;
  const float fbound = float(p.entropy_bound);
  const float* h = H + int64_t(r) * L;
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    if (i < L) {
      key[i] = isnan(h[i]) ? INFINITY : h[i];
      id[i] = i;
    } else {
      key[i] = INFINITY;
      id[i] = INT_MAX;
    }
  }
  __syncthreads();
  // Bitonic sort on (key, position): the CPU's strict order, so the result is the same permutation.
  for (int size = 2; size <= P; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool i_gt_j = key[i] > key[j] || (key[i] == key[j] && id[i] > id[j]);
          const bool ascending = (i & size) == 0;
          if (i_gt_j == ascending) {
            const float tk = key[i];
            key[i] = key[j];
            key[j] = tk;
            const int ti = id[i];
            id[i] = id[j];
            id[j] = ti;
          }
        }
      }
      __syncthreads();
    }
  if (threadIdx.x == 0) {  // sequential like the CPU: double cumulative sum, fp32 comparison
    double cum = 0.0;
    for (int k = 0; k < L; ++k) {
      const float hk = h[id[k]];
      cum += hk;
      const float exclusive = float(cum) - hk;
      acc[id[k]] = exclusive <= fbound ? 1 : 0;
    }
    double sum = 0.0;
    for (int j = 0; j < L; ++j) sum += h[j];
    mean_H[r] = float(sum / L);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < L; j += blockDim.x) {
    const int64_t i = int64_t(r) * L + j;
    accepted[i] = acc[j];
    const int32_t noise = p.tape ? tape[i] : randint(p.seed, p.canvas, p.step, kPurposeRenoise, p.key, j, V);
    canvas[i] = acc[j] ? sampled[i] : noise;
  }
}

__global__ void init_canvas_kernel(int32_t* canvas, int64_t n, int L, int V, int canvas_index, uint64_t seed) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) canvas[i] = randint(seed, canvas_index, 0, kPurposeInit, int(i / L), int(i % L), V);
}

}  // namespace

void token_stats(cudaStream_t st, const float* raw, float* pl, int64_t n, int V, int L, const RowParams* rows,
                 const int32_t* tape_samples, int32_t* argmax, float* entropy, int32_t* sampled) {
  if (n <= 0) return;
  token_stats_kernel<<<unsigned(n), kBlock, 0, st>>>(raw, pl, V, L, rows, tape_samples, argmax, entropy, sampled);
  DIFFRT_CUDA_LAUNCHED("cuda::token_stats");
}

void accept_renoise(cudaStream_t st, const float* H, const int32_t* sampled, int B, int L, int V, const RowParams* rows,
                    const int32_t* tape_renoise, uint8_t* accepted, int32_t* canvas, float* mean_entropy) {
  if (B <= 0) return;
  if (L < 1 || L > 1024) throw CudaError("cuda::accept_renoise: L must be in [1, 1024]");
  int P = 1;
  while (P < L) P <<= 1;
  accept_renoise_kernel<<<unsigned(B), 1024, 0, st>>>(H, sampled, L, P, V, rows, tape_renoise, accepted, canvas,
                                                      mean_entropy);
  DIFFRT_CUDA_LAUNCHED("cuda::accept_renoise");
}

void init_canvas(cudaStream_t st, int32_t* canvas, int64_t n, int L, int V, int canvas_index, uint64_t seed) {
  if (n <= 0) return;
  init_canvas_kernel<<<blocks_for(n), kBlock, 0, st>>>(canvas, n, L, V, canvas_index, seed);
  DIFFRT_CUDA_LAUNCHED("cuda::init_canvas");
}

}  // namespace diffrt::kernels::cuda

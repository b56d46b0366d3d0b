// Mixture-of-experts on the device: the router (spec §6 op order, top-k) and the grouped expert
// GEMM. Grouping happens on the device: count slots per expert, exclusive scan into offsets and a
// tile list, scatter slot ids, gather rows, two grouped GEMMs, then a weighted sum per token in
// ascending expert order (the CPU's order), so no host round trip and the step stays graph-capturable.
#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

// One block per token. Shared: z [H], scores [E]. The recipe is the model's (kernels/moe_spec.h).
__global__ void router_kernel(const float* r, int64_t ldr, int H, const float* proj, int E, RouterSpec spec,
                              int32_t* idx, float* weight) {
  extern __shared__ float sm[];
  float* z = sm;
  float* p = sm + H;
  __shared__ double shd[32];
  const int64_t t = blockIdx.x;
  const float* x = r + t * ldr;
  float inv = 1.f;
  if (spec.norm) {
    double ss = 0.0;
    for (int i = threadIdx.x; i < H; i += blockDim.x) ss += double(x[i]) * double(x[i]);
    ss = block_sum(ss, shd);
    inv = 1.0f / sqrtf(float(ss / double(H)) + spec.eps);
  }
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    z[i] = ((spec.norm ? x[i] * inv : x[i]) * (spec.in_scale ? spec.in_scale[i] : 1.f)) * spec.in_mul;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int e = warp; e < E; e += nw) {
    const float* w = proj + int64_t(e) * H;
    float acc = 0.f;
    for (int i = lane; i < H; i += 32) acc += z[i] * w[i];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) p[e] = acc;
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // E and K are small: softmax and selection on one thread, CPU order
    float mx = -INFINITY;
    for (int e = 0; e < E; ++e) mx = fmaxf(mx, p[e]);
    float sum = 0.f;
    for (int e = 0; e < E; ++e) {
      p[e] = expf(p[e] - mx);
      sum += p[e];
    }
    const float is = 1.0f / sum;
    for (int e = 0; e < E; ++e) p[e] *= is;
    select_experts(p, E, spec, idx + t * spec.top_k, weight + t * spec.top_k);
  }
}

__global__ void moe_count_kernel(const int32_t* idx, int64_t n_slots, int32_t* count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n_slots) atomicAdd(&count[idx[i]], 1);
}

// One thread: offsets, the tile list and zeroed cursors (E is small).
__global__ void moe_scan_kernel(const int32_t* count, int E, int tile_rows, int32_t* offset, int32_t* cursor,
                                int32_t* tiles) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int32_t acc = 0, nt = 0;
  for (int e = 0; e < E; ++e) {
    offset[e] = acc;
    cursor[e] = 0;
    for (int m0 = 0; m0 < count[e]; m0 += tile_rows) {
      tiles[1 + 2 * nt] = e;
      tiles[2 + 2 * nt] = m0;
      ++nt;
    }
    acc += count[e];
  }
  offset[E] = acc;
  tiles[0] = nt;
}

__global__ void moe_scatter_kernel(const int32_t* idx, int64_t n_slots, const int32_t* offset, int32_t* cursor,
                                   int32_t* slot_of, int32_t* pos_of) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_slots) return;
  const int e = idx[i];
  const int p = offset[e] + atomicAdd(&cursor[e], 1);  // order within an expert is irrelevant: rows are independent
  slot_of[p] = int32_t(i);
  pos_of[i] = p;
}

__global__ void moe_gather_kernel(const float* x, int64_t ldx, int H, int K, const int32_t* slot_of, float* xg) {
  const int64_t p = blockIdx.x;
  const float* src = x + int64_t(slot_of[p] / K) * ldx;
  for (int i = threadIdx.x; i < H; i += blockDim.x) xg[p * H + i] = src[i];
}

__global__ void moe_combine_kernel(const float* yg, int H, int K, const int32_t* idx, const float* weight,
                                   const int32_t* pos_of, float* out, int64_t ldo) {
  const int64_t t = blockIdx.x;
  int order[16];  // slots of token t in ascending expert id (K <= 16)
  for (int k = 0; k < K; ++k) order[k] = k;
  for (int a = 1; a < K; ++a)
    for (int b = a; b > 0 && idx[t * K + order[b]] < idx[t * K + order[b - 1]]; --b) {
      const int tmp = order[b];
      order[b] = order[b - 1];
      order[b - 1] = tmp;
    }
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float o = 0.f;
    for (int j = 0; j < K; ++j) {
      const int64_t slot = t * K + order[j];
      o += weight[slot] * yg[int64_t(pos_of[slot]) * H + i];
    }
    out[t * ldo + i] = o;
  }
}

}  // namespace

void router_topk(cudaStream_t st, const float* r, int64_t ldr, int64_t M, int H, const RouterSpec& spec,
                 const float* proj, int E, int32_t* idx, float* weight) {
  if (M <= 0) return;
  if (spec.top_k < 1 || spec.top_k > E) throw CudaError("cuda::router_topk: bad top_k");
  const size_t smem = sizeof(float) * (size_t(H) + size_t(E));
  if (smem > 48 * 1024) throw CudaError("cuda::router_topk: hidden + experts too large for shared memory");
  router_kernel<<<unsigned(M), kBlock, smem, st>>>(r, ldr, H, proj, E, spec, idx, weight);
  DIFFRT_CUDA_LAUNCHED("cuda::router_topk");
}

int64_t moe_max_tiles(int64_t n_slots, int E) { return (n_slots + gemm_tile_rows() - 1) / gemm_tile_rows() + E; }

void grouped_experts(cudaStream_t st, const float* x, int64_t ldx, int64_t M, int H, const int32_t* idx,
                     const float* weight, int top_k, int E, int I_e, const DMatrix& gate_up, const DMatrix& down,
                     Activation act, const MoeScratch& s, float* out, int64_t ldo, bool allow_bf16_act) {
  if (M <= 0) return;
  if (act != Activation::GeluTanh) throw CudaError("cuda::grouped_experts: unsupported activation");
  if (top_k > 16) throw CudaError("cuda::grouped_experts: top_k > 16");
  const int64_t n_slots = M * top_k;
  DIFFRT_CUDA_CHECK(cudaMemsetAsync(s.count, 0, sizeof(int32_t) * E, st));
  moe_count_kernel<<<blocks_for(n_slots), kBlock, 0, st>>>(idx, n_slots, s.count);
  DIFFRT_CUDA_LAUNCHED("cuda::moe_count");
  moe_scan_kernel<<<1, 32, 0, st>>>(s.count, E, int(gemm_tile_rows()), s.offset, s.cursor, s.tiles);
  DIFFRT_CUDA_LAUNCHED("cuda::moe_scan");
  moe_scatter_kernel<<<blocks_for(n_slots), kBlock, 0, st>>>(idx, n_slots, s.offset, s.cursor, s.slot_of, s.pos_of);
  DIFFRT_CUDA_LAUNCHED("cuda::moe_scatter");
  moe_gather_kernel<<<unsigned(n_slots), kBlock, 0, st>>>(x, ldx, H, top_k, s.slot_of, s.xg);
  DIFFRT_CUDA_LAUNCHED("cuda::moe_gather");
  const int64_t max_tiles = moe_max_tiles(n_slots, E);
  grouped_gemm(st, s.xg, H, gate_up, 2 * int64_t(I_e), s.offset, s.tiles, max_tiles, s.hg, 2 * int64_t(I_e),
               allow_bf16_act, n_slots, s.amax);
  gelu_tanh_mul(st, s.hg, 2 * int64_t(I_e), s.hg + I_e, 2 * int64_t(I_e), n_slots, I_e, s.hg, 2 * int64_t(I_e));
  grouped_gemm(st, s.hg, 2 * int64_t(I_e), down, H, s.offset, s.tiles, max_tiles, s.yg, H, allow_bf16_act, n_slots,
               s.amax);
  moe_combine_kernel<<<unsigned(M), kBlock, 0, st>>>(s.yg, H, top_k, idx, weight, s.pos_of, out, ldo);
  DIFFRT_CUDA_LAUNCHED("cuda::moe_combine");
}

}  // namespace diffrt::kernels::cuda

// Model plumbing on the device: positions from the per-row cached lengths, appending K/V to the
// cache and cutting a sliding layer's cache back to its last W-1 entries (spec §5.3). The cached
// lengths live on the device so a captured decoder step reads the current ones at replay.
#include "kernels/cuda/common.cuh"

namespace diffrt::kernels::cuda {
namespace {

__global__ void positions_kernel(const int* rows, const int* n_cached, int n_rows, int S, int32_t* pos) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_rows) * S) return;
  const int r = int(i / S), s = int(i % S);
  pos[i] = n_cached[rows ? rows[r] : r] + s;
}

__global__ void kv_append_kernel(const float* k, const float* v, int64_t ld, const int* rows, const int* n_cached,
                                 int S, int kv, int hd, bool sliding, int W, int cap, int64_t row_stride, float* kc,
                                 float* vc, int* n_keys, int* key_pos0, int* q_pos0) {
  const int r = blockIdx.x / S, s = blockIdx.x % S;
  const int row = rows ? rows[r] : r;
  const int T = n_cached[row];
  const int held = sliding ? min(T, W - 1) : T;
  float* kr = kc + int64_t(row) * row_stride;
  float* vr = vc + int64_t(row) * row_stride;
  for (int i = threadIdx.x; i < kv * hd; i += blockDim.x) {
    const int j = i / hd, d = i % hd;
    const int64_t dst = (int64_t(j) * cap + held + s) * hd + d;
    const int64_t src = (int64_t(r) * S + s) * ld + int64_t(j) * hd + d;
    kr[dst] = k[src];
    vr[dst] = v[src];
  }
  if (s == 0 && threadIdx.x == 0) {
    n_keys[r] = held + S;
    key_pos0[r] = T - held;
    q_pos0[r] = T;
  }
}

// Block (r, j): copy the kept entries out, then back to the start (one block owns its region).
__global__ void kv_compact_kernel(const int* rows, const int* n_cached, int S, int hd, int W, int cap,
                                  int64_t row_stride, float* kc, float* vc, float* tmp) {
  const int r = blockIdx.x, j = blockIdx.y, kv = gridDim.y;
  const int row = rows ? rows[r] : r;
  const int T = n_cached[row];
  const int held = min(T, W - 1);
  const int keep = min(T + S, W - 1), drop = held + S - keep;
  if (drop <= 0) return;
  float* base_k = kc + int64_t(row) * row_stride + int64_t(j) * cap * hd;
  float* base_v = vc + int64_t(row) * row_stride + int64_t(j) * cap * hd;
  float* tk = tmp + (int64_t(r) * kv + j) * 2 * int64_t(cap) * hd;
  float* tv = tk + int64_t(cap) * hd;
  const int64_t n = int64_t(keep) * hd, off = int64_t(drop) * hd;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    tk[i] = base_k[off + i];
    tv[i] = base_v[off + i];
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    base_k[i] = tk[i];
    base_v[i] = tv[i];
  }
}

__global__ void add_n_cached_kernel(const int* rows, int n_rows, int S, int* n_cached) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < n_rows) n_cached[rows ? rows[r] : r] += S;
}

}  // namespace

void positions(cudaStream_t st, const int* rows, const int* n_cached, int n_rows, int S, int32_t* pos) {
  if (n_rows <= 0 || S <= 0) return;
  positions_kernel<<<blocks_for(int64_t(n_rows) * S), kBlock, 0, st>>>(rows, n_cached, n_rows, S, pos);
  DIFFRT_CUDA_LAUNCHED("cuda::positions");
}

void kv_append(cudaStream_t st, const float* k, const float* v, int64_t ld, const int* rows, const int* n_cached,
               int n_rows, int S, int kv, int hd, bool sliding, int W, int cap, int64_t row_stride, float* kc,
               float* vc, int* n_keys, int* key_pos0, int* q_pos0) {
  if (n_rows <= 0 || S <= 0) return;
  kv_append_kernel<<<unsigned(n_rows * S), kBlock, 0, st>>>(k, v, ld, rows, n_cached, S, kv, hd, sliding, W, cap,
                                                            row_stride, kc, vc, n_keys, key_pos0, q_pos0);
  DIFFRT_CUDA_LAUNCHED("cuda::kv_append");
}

void kv_compact(cudaStream_t st, const int* rows, const int* n_cached, int n_rows, int S, int kv, int hd, int W,
                int cap, int64_t row_stride, float* kc, float* vc, float* tmp) {
  if (n_rows <= 0 || S <= 0) return;
  kv_compact_kernel<<<dim3(unsigned(n_rows), unsigned(kv)), kBlock, 0, st>>>(rows, n_cached, S, hd, W, cap, row_stride,
                                                                             kc, vc, tmp);
  DIFFRT_CUDA_LAUNCHED("cuda::kv_compact");
}

void add_to_n_cached(cudaStream_t st, const int* rows, int n_rows, int S, int* n_cached) {
  if (n_rows <= 0) return;
  add_n_cached_kernel<<<blocks_for(n_rows), kBlock, 0, st>>>(rows, n_rows, S, n_cached);
  DIFFRT_CUDA_LAUNCHED("cuda::add_to_n_cached");
}

}  // namespace diffrt::kernels::cuda

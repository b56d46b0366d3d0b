// The ops of kernels/kernels.h for device pointers (the CUDA backend). Same conventions as the CPU
// ops: activations f32 row-major with explicit leading dimensions, nothing allocates (scratch is
// the caller's), every call is asynchronous on `stream` and checks its launch (CudaError).
//
// Weights are DMatrix views of device memory in f32 or bf16. GEMMs accumulate in f32.
// Why no cuBLASLt / CUTLASS: the build machine has neither headers nor libraries (nvcc + static
// cudart only), and our own kernels keep the module free of any runtime dependency beyond the
// driver. The first GEMM is a plain tiled SIMT kernel (obviously right); the bf16 tensor-core
// kernel (WMMA, f32 accumulation) is chosen for bf16 weights when activations may be rounded to bf16.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/moe_spec.h"

namespace diffrt::kernels::cuda {

// A failed CUDA call: message names the call, file:line and the CUDA error string.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void check(cudaError_t e, const char* what, const char* file, int line);
#define DIFFRT_CUDA_CHECK(call) ::diffrt::kernels::cuda::check((call), #call, __FILE__, __LINE__)
#define DIFFRT_CUDA_LAUNCHED(name) ::diffrt::kernels::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)

enum class WType : int { F32 = 0, BF16 = 1, I8 = 2 };

// A device weight matrix. NK (default): W[n][k], row stride ld (= k when dense) -> y = x · Wᵀ.
// KN (kn = true): B[k][n], row stride ld (= n) -> y = x · B.
// I8: value = q * scale[stored row] (scale [n] for NK, [k] for KN). W8A16 (a8 false, and every KN
// matrix): the tensor-core kernel dequantizes to bf16 in shared memory, activations are bf16. W8A8
// (a8, NK): activations are quantized per row to int8 as on the CPU (amax / 127, round half to
// even), int8 tensor cores accumulate in int32, y = acc * (amax_m / 127) * scale[n].
struct DMatrix {
  WType type = WType::F32;
  const void* data = nullptr;
  int64_t n = 0, k = 0, ld = 0;
  bool kn = false;
  const float* scale = nullptr;  // I8 only
  bool a8 = false;               // I8 NK: W8A8 (int8 activations) with the tensor-core kernel
  size_t elem_bytes() const { return type == WType::BF16 ? 2 : type == WType::I8 ? 1 : 4; }
  // Rows [first, first + count) of an NK matrix.
  DMatrix rows(int64_t first, int64_t count) const {
    DMatrix m = *this;
    m.data = static_cast<const char*>(data) + size_t(first) * size_t(ld) * elem_bytes();
    if (scale) m.scale = scale + first;
    m.n = count;
    return m;
  }
};
// Host: per-row symmetric int8 quantization (scale = max|row| / 127, q = round-half-even(x / scale)).
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale);

// ---- GEMM ---------------------------------------------------------------------------------------
// Scratch of gemm(): act_amax [M] floats (needed by W8A8); splitk: a workspace of splitk_floats for
// the partial sums of split-K (used when given and it pays: few output tiles over a long K).
struct GemmScratch {
  float* act_amax = nullptr;
  float* splitk = nullptr;
  int64_t splitk_floats = 0;
};
// y[m][0:N] = x[m][0:K] · Wᵀ (x · B for KN). allow_bf16_act: bf16 / int8 weights may use the
// tensor-core kernels, which round x to bf16 (W8A16) or quantize it to int8 (a8 matrices: W8A8);
// otherwise activations stay f32.
void gemm(cudaStream_t st, const float* x, int64_t ldx, int64_t M, const DMatrix& w, float* y, int64_t ldy,
          bool allow_bf16_act = false, const GemmScratch* scratch = nullptr);

// Grouped by expert (used by grouped_experts): expert e multiplies rows [offset[e], offset[e+1]) of
// x by rows [e*n_per_expert, (e+1)*n_per_expert) of the NK matrix w_all; tiles is the device list
// [count, (expert, first row)...] of at most max_tiles BM-row tiles (gemm_tile_rows()). n_rows: rows
// of x in all (the W8A8 row scales, act_amax [n_rows]).
void grouped_gemm(cudaStream_t st, const float* x, int64_t ldx, const DMatrix& w_all, int64_t n_per_expert,
                  const int32_t* offset, const int32_t* tiles, int64_t max_tiles, float* y, int64_t ldy,
                  bool allow_bf16_act, int64_t n_rows = 0, float* act_amax = nullptr);
int64_t gemm_tile_rows();

// ---- elementwise / normalisation ----------------------------------------------------------------
void rms_norm(cudaStream_t st, const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y,
              int64_t ldy);
void gelu_tanh_mul(cudaStream_t st, const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n,
                   float* h, int64_t ldh);
void soft_cap(cudaStream_t st, float* x, int64_t n, float cap);
// dst[r] = softmax(src[r]) (fp32); dst may equal src.
void softmax_rows(cudaStream_t st, const float* src, float* dst, int64_t ld, int64_t rows, int64_t n);
void round_to_bf16(cudaStream_t st, float* x, int64_t n);
void scale(cudaStream_t st, float* x, int64_t n, float s);
void add(cudaStream_t st, float* x, const float* y, int64_t n);  // x += y
// x[r] += y[r] for the rows r < n_rows of row_elems elements with mask[r] != 0 (mask on the device).
void add_rows(cudaStream_t st, float* x, const float* y, int64_t row_elems, int n_rows, const uint8_t* mask);
void add_scale(cudaStream_t st, float* x, const float* y, int64_t n, float s);  // x = (x + y) * s
// out[t][0:H] = decode(E[ids[t]]) * scale for t < n.
void embed(cudaStream_t st, const DMatrix& E, const int32_t* ids, int64_t n, float scale, float* out);

// ---- RoPE ---------------------------------------------------------------------------------------
// As kernels::rope: tables [position][hd/2]; pos [tokens] on the device.
void rope(cudaStream_t st, float* x, int64_t ldx, int64_t tokens, int n_head, int hd, const int32_t* pos,
          const float* cos, const float* sin);
// Fused: per head, rms_norm with weight w (as rms_norm, w may be nullptr), then rope, in place on
// x [tokens][n_head * hd] — one pass over q or k instead of two.
void rms_norm_rope(cudaStream_t st, float* x, int64_t tokens, int n_head, int hd, const float* w, float eps,
                   const int32_t* pos, const float* cos, const float* sin);

// ---- attention over [cached prefix | new tokens] ------------------------------------------------
// Same meaning as kernels::AttentionArgs (all pointers on the device; n_keys, key_pos0, q_pos0 are
// device arrays [n_rows]). scores: n_rows * n_q * n_head * max_keys floats.
struct AttentionArgs {
  int n_rows = 0, n_q = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
  const float* q = nullptr;
  int64_t ldq = 0;
  const float *k = nullptr, *v = nullptr;
  int64_t kv_row_stride = 0, kv_head_stride = 0;
  const int* kv_rows = nullptr;  // [n_rows] cache row of each batch row (nullptr: row b)
  const int *n_keys = nullptr, *key_pos0 = nullptr, *q_pos0 = nullptr;
  bool causal = false;
  int window = 0;
  float* out = nullptr;
  int64_t ldo = 0;
  float* scores = nullptr;
  int max_keys = 0;
};
void attention(cudaStream_t st, const AttentionArgs& a);

// ---- MoE ----------------------------------------------------------------------------------------
// As kernels::router_topk (the model's RouterSpec, kernels/moe_spec.h; spec.in_scale and
// spec.per_expert_scale in device memory); proj is f32 [E][H]. One block per token.
void router_topk(cudaStream_t st, const float* r, int64_t ldr, int64_t M, int H, const RouterSpec& spec,
                 const float* proj, int E, int32_t* idx, float* weight);

struct MoeScratch {
  int32_t* count = nullptr;    // [E]      slots per expert
  int32_t* offset = nullptr;   // [E + 1]  start of each expert's group
  int32_t* cursor = nullptr;   // [E]
  int32_t* slot_of = nullptr;  // [M * top_k] sorted position -> (token * top_k + k)
  int32_t* pos_of = nullptr;   // [M * top_k] inverse
  int32_t* tiles = nullptr;    // [moe_max_tiles(M * top_k, E) * 2 + 1] (expert, first row) + count
  float* xg = nullptr;         // [M * top_k][H]
  float* hg = nullptr;         // [M * top_k][2 I_e]
  float* yg = nullptr;         // [M * top_k][H]
  float* amax = nullptr;       // [M * top_k]  W8A8 row scales
};
int64_t moe_max_tiles(int64_t n_slots, int E);
// out[t] = Σ_k weight[t,k] · down_e(gelu(gate_e(x[t])) * up_e(x[t])), summed in ascending expert order.
// gate_up: NK [E * 2 I_e][H]; down: NK [E * H][I_e]. Groups and offsets are computed on the device.
void grouped_experts(cudaStream_t st, const float* x, int64_t ldx, int64_t M, int H, const int32_t* idx,
                     const float* weight, int top_k, int E, int I_e, const DMatrix& gate_up, const DMatrix& down,
                     Activation act, const MoeScratch& s, float* out, int64_t ldo, bool allow_bf16_act = false);

// ---- sampler ----------------------------------------------------------------------------------
// Per-row settings of a device step (diffrt::RowStep on the device). Draws of row r are addressed
// by (seed, canvas, step, key, position) as on the CPU.
struct RowParams {
  uint64_t seed = 0;
  double entropy_bound = 0.1;
  float temperature = 1.0f;
  int32_t canvas = 0, step = 0, key = 0;
  uint8_t active = 0;    // 0: the row is skipped (canvas, argmax, entropy and pl stay)
  uint8_t tape = 0;      // samples and renoise come from the tape arrays, not the generator
  uint8_t round_pl = 0;  // pl (the next self-conditioning input) rounded to bf16
};

// Per position i < n (row r = i / L, pos = i % L) of every active row, over V logits: pl = raw / T,
// first argmax, entropy and the exponential-race draw from the SAME Philox stream as the CPU sampler
// (or sampled[i] = tape_samples[i] for a tape row).
void token_stats(cudaStream_t st, const float* raw, float* pl, int64_t n, int V, int L, const RowParams* rows,
                 const int32_t* tape_samples, int32_t* argmax, float* entropy, int32_t* sampled);
// Per active row r < B: entropy-bound acceptance (sort + exclusive prefix sum as accept_by_entropy),
// then canvas[i] = accepted ? sampled[i] : randint(Renoise stream) (tape_renoise[i] for a tape row);
// mean_entropy[r] = mean H. L <= 1024.
void accept_renoise(cudaStream_t st, const float* H, const int32_t* sampled, int B, int L, int V, const RowParams* rows,
                    const int32_t* tape_renoise, uint8_t* accepted, int32_t* canvas, float* mean_entropy);
// canvas[i] = randint(seed, canvas_index, 0, Init, i / L, i % L, V) for i < n.
void init_canvas(cudaStream_t st, int32_t* canvas, int64_t n, int L, int V, int canvas_index, uint64_t seed);

// ---- model helpers (KV cache, positions, random weights) ----------------------------------------
// pos[r * S + s] = n_cached[rows[r]] + s.
void positions(cudaStream_t st, const int* rows, const int* n_cached, int n_rows, int S, int32_t* pos);
// Appends the S new K/V rows of each pass row after the entries its cache row holds (held =
// sliding ? min(T, W-1) : T with T = n_cached[rows[r]]); also fills n_keys/key_pos0/q_pos0 [n_rows].
void kv_append(cudaStream_t st, const float* k, const float* v, int64_t ld, const int* rows, const int* n_cached,
               int n_rows, int S, int kv, int hd, bool sliding, int W, int cap, int64_t row_stride, float* kc,
               float* vc, int* n_keys, int* key_pos0, int* q_pos0);
// Encoder, sliding layer: keeps the last min(T + S, W-1) entries of each row at the start (tmp: one
// row of the cache, kv * cap * hd floats, per pass row).
void kv_compact(cudaStream_t st, const int* rows, const int* n_cached, int n_rows, int S, int kv, int hd, int W,
                int cap, int64_t row_stride, float* kc, float* vc, float* tmp);
void add_to_n_cached(cudaStream_t st, const int* rows, int n_rows, int S, int* n_cached);
// Fills n elements with uniform(-a, a) from a hash of (seed, index) (random benchmark weights);
// I8: uniform integers in [-127, 127] (the caller's scales make the values).
void fill_uniform(cudaStream_t st, void* data, WType t, int64_t n, float a, uint64_t seed);
void fill_value(cudaStream_t st, float* data, int64_t n, float v);
// f32 -> bf16 conversion of n values (uploads).
void f32_to_bf16(cudaStream_t st, const float* src, void* dst, int64_t n);

}  // namespace diffrt::kernels::cuda

// THE op interface of the diffrt engine. The model code calls only these; each backend implements
// them (CPU: kernels/cpu/*.cpp, chosen at run time by cpu_path(); CUDA later: kernels/cuda/).
//
// Conventions: activations are f32, row-major, with an explicit leading dimension (`ld*`, in
// elements). Weights are Matrix views straight into the mmap'd GGUF file in their stored type.
// Nothing here allocates: scratch space is passed in by the caller (the Session owns it) or is a
// fixed thread-local array. Every op may be called with a ThreadPool; *_serial variants run on the
// calling thread (for use inside another op's parallel task).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "diffrt/gguf.h"
#include "kernels/moe_spec.h"

namespace diffrt::kernels {

// A weight matrix in a GGUF storage type (F32, F16, BF16, Q8_0), used in place.
//  layout NK (default): W[n][k], rows of k elements, row_bytes apart  -> gemm computes x · Wᵀ
//  layout KN (kn=true): B[k][n], rows of n elements, row_bytes apart  -> gemm computes x · B
struct PackedMatrix;  // kernels/cpu/pack.h

struct Matrix {
  GGMLType type = GGMLType::F32;
  const void* data = nullptr;
  int64_t n = 0, k = 0;  // output features, input features
  size_t row_bytes = 0;  // bytes between consecutive stored rows
  bool kn = false;
  // compute_type bf16/int8: the same logical W[n][k] repacked at load for the fast GEMMs, as
  // consecutive groups of packed_rows rows packed separately (one group per expert, or one for the
  // whole matrix). gemm() uses it when set; rows() keeps it for a slice that is exactly one group.
  const PackedMatrix* packed = nullptr;
  int64_t packed_rows = 0;
  const uint8_t* row(int64_t i) const { return static_cast<const uint8_t*>(data) + size_t(i) * row_bytes; }
  // Rows [first, first + count) of an NK matrix as a matrix of their own (an expert's slice).
  Matrix rows(int64_t first, int64_t count) const;
};
Matrix f32_matrix(const float* data, int64_t n, int64_t k, int64_t ld);  // NK view of f32 data

// Decode elements [k0, k0 + count) of stored row `row` to f32.
void decode_row(const Matrix& w, int64_t row, int64_t k0, int64_t count, float* out);

// ---- GEMM ---------------------------------------------------------------------------------------
// y[m][0:N] = x[m][0:K] · Wᵀ for m in [0, M)   (x · B for a KN matrix). y must not alias x.
void gemm(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, const Matrix& w, float* y, int64_t ldy);
void gemm_serial(const float* x, int64_t ldx, int64_t M, const Matrix& w, float* y, int64_t ldy);

// ---- elementwise / normalisation ----------------------------------------------------------------
// RMSNorm of `rows` rows of n: y = x * pow(mean(x²) + eps, -0.5) [* w]. w == nullptr: no scale.
// y may equal x (in place).
void rms_norm(ThreadPool& pool, const float* x, int64_t ldx, int64_t rows, int n, const float* w, float eps, float* y,
              int64_t ldy);
// h[i] = gelu_tanh(g[i]) * u[i] for rows × n; h may equal g.
void gelu_tanh_mul(ThreadPool& pool, const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int n,
                   float* h, int64_t ldh);
// x[i] = tanh(x[i] / cap) * cap
void soft_cap(ThreadPool& pool, float* x, int64_t n, float cap);
// Row softmax in place over n elements (fp32: exp(x - max) / sum).
void softmax_rows(ThreadPool& pool, float* x, int64_t ld, int64_t rows, int64_t n);
// The same out of place: dst = softmax(src) (saves a copy of a [rows × vocab] input).
void softmax_rows(ThreadPool& pool, const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t n);

// ---- RoPE ---------------------------------------------------------------------------------------
// Rotate-half RoPE in place on x[t][h][0:hd] (token stride ldx) for `tokens` tokens of n_head heads.
// Token t is at absolute position pos[t]; cos/sin tables are [position][hd/2] (the duplicated
// halves of HF's cat(f, f) are implied): x'[j] = x[j]c - x[j+hd/2]s, x'[j+hd/2] = x[j+hd/2]c + x[j]s.
void rope(ThreadPool& pool, float* x, int64_t ldx, int64_t tokens, int n_head, int hd, const int32_t* pos,
          const float* cos, const float* sin);

// ---- attention over [cached prefix | new tokens] ------------------------------------------------
// For each batch row b and query head h (GQA: kv head h / (n_head / n_kv_head)):
//   out[b, s, h] = softmax_k( q[b, s, h] · K[b, kvh, k] + mask ) · V[b, kvh, k]     (scaling 1.0)
// over the n_keys[b] keys of that row; key i is at absolute position key_pos0[b] + i, query s at
// q_pos0[b] + s. Mask: causal => key_pos <= q_pos; window > 0 => key_pos > q_pos - window.
struct AttentionArgs {
  int n_rows = 0, n_q = 0;  // batch rows, queries per row
  int n_head = 0, n_kv_head = 0, head_dim = 0;
  const float* q = nullptr;  // [n_rows * n_q][ldq], head h at column h*hd
  int64_t ldq = 0;
  const float* k = nullptr;  // K of row b, head j, key i: k + b*kv_row_stride + j*kv_head_stride + i*hd
  const float* v = nullptr;  // same layout as k
  int64_t kv_row_stride = 0, kv_head_stride = 0;
  const int* n_keys = nullptr;    // [n_rows]
  const int* key_pos0 = nullptr;  // [n_rows]
  const int* q_pos0 = nullptr;    // [n_rows]
  bool causal = false;
  int window = 0;
  float* out = nullptr;  // [n_rows * n_q][ldo]
  int64_t ldo = 0;
  float* scratch = nullptr;  // pool.size() * attention_scratch_floats(max_keys)
  int64_t scratch_per_thread = 0;
};
int64_t attention_scratch_floats(int64_t max_keys);
void attention(ThreadPool& pool, const AttentionArgs& a);

// ---- MoE (the model's recipe: kernels/moe_spec.h) ------------------------------------------------
// Router of M tokens r [M][ldr] as `spec` says, proj [E][H]: idx, weight [M][spec.top_k].
// z_scratch: [M][H], score_scratch: [M][E].
void router_topk(ThreadPool& pool, const float* r, int64_t ldr, int64_t M, int H, const RouterSpec& spec,
                 const Matrix& proj, float* z_scratch, float* score_scratch, int32_t* idx, float* weight);

// Scratch of grouped_experts for M tokens, top_k slots (sizes in elements).
struct MoeScratch {
  int32_t* slot_of = nullptr;  // [M * top_k]  token-slot ids sorted by expert
  int32_t* count = nullptr;    // [E + 1]      offsets per expert
  float* xg = nullptr;         // [M * top_k][H]     gathered inputs
  float* hg = nullptr;         // [M * top_k][2 I_e] gate|up, then gelu(gate)*up
  float* yg = nullptr;         // [M * top_k][H]     expert outputs
};
// out[t] = Σ_k weight[t,k] · down_e( act(gate_e(x[t])) * up_e(x[t]) ),  e = idx[t,k]  (fp32 sum).
// gate_up: NK [E * 2 I_e][H] (gate rows first per expert); down: NK [E * H][I_e].
void grouped_experts(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, int H, const int32_t* idx,
                     const float* weight, int top_k, int E, int I_e, const Matrix& gate_up, const Matrix& down,
                     Activation act, const MoeScratch& s, float* out, int64_t ldo);

}  // namespace diffrt::kernels

// Weights repacked once at load for the fast CPU GEMMs (BF16 and INT8), and the GEMM that uses them.
//
// Layout (shared by the AMX and AVX-512 kernels, so one packing serves every path): the output
// features are cut into blocks of 16 (one zmm of f32 results, one AMX C-tile's columns), and inside a
// block the K axis into groups of V (V = 2 for bf16 pairs, 4 for int8 quads):
//     data[n / 16][k / V][n % 16][k % V]
// so one 64-byte line is the VNNI operand of a vdpbf16ps / vpdpbusd for 16 outputs, and 16
// consecutive lines are one AMX B tile (16 rows of 64 bytes). n is padded to a multiple of 32 and k
// to a multiple of 32 (bf16) or 64 (int8) with zero weights, so tiles never read past the end.
//
// INT8 is symmetric per output channel: q[n][k] = round(W[n][k] / s[n]), s[n] = max_k |W[n][k]| / 127.
// (Q8_0 files are decoded and re-quantised this way: one scale per row instead of per 32-block.)
// W8A16 keeps those int8 values but stores them as bf16 (exact: |q| <= 127) with the row scale, so
// the bf16 kernels run it with bf16 activations.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace diffrt::kernels {

struct AlignedFree {  // frees ::operator new(size, std::align_val_t(64))
  void operator()(void* p) const;
};

struct PackedMatrix {
  enum class Kind : uint8_t { BF16, INT8 };
  Kind kind = Kind::BF16;
  int64_t n = 0, k = 0;                          // logical W[n][k] (output, input features)
  int64_t n_pad = 0, k_pad = 0;                  // padded sizes of the packed data
  std::unique_ptr<uint8_t[], AlignedFree> data;  // layout above, 64-byte aligned
  std::vector<float> scale;                      // [n_pad] per output channel; empty for plain bf16
  std::vector<int32_t> row_sum;  // [n_pad] Σ_k q[n][k] (int8): undoes the +128 shift of VNNI u8 activations

  static constexpr int kNBlock = 16;
  int vnni() const { return kind == Kind::BF16 ? 2 : 4; }
  size_t bytes() const { return size_t(n_pad) * size_t(k_pad) * (kind == Kind::BF16 ? 2 : 1); }
  // Start of the 16-column block nb at K group g (element offset for bf16, byte offset for int8).
  const uint16_t* bf16_block(int64_t nb, int64_t g = 0) const {
    return reinterpret_cast<const uint16_t*>(data.get()) + (nb * (k_pad / 2) + g) * 32;
  }
  const int8_t* int8_block(int64_t nb, int64_t g = 0) const {
    return reinterpret_cast<const int8_t*>(data.get()) + (nb * (k_pad / 4) + g) * 64;
  }
};

// Repack any stored Matrix (F32/F16/BF16/Q8_0, NK or KN) once. Threads over row blocks.
PackedMatrix pack_bf16(ThreadPool& pool, const Matrix& w);   // bf16(W), round to nearest even
PackedMatrix pack_int8(ThreadPool& pool, const Matrix& w);   // W8A8: per-row symmetric int8
PackedMatrix pack_w8a16(ThreadPool& pool, const Matrix& w);  // int8 values as bf16 + row scale

// y[m][0:n] = x[m][0:k] · Wᵀ for m in [0, M). The activations are converted per call into a buffer
// owned by the calling thread (bf16, or int8 with one dynamic scale per row: max|x| / 127). That
// buffer is allocated on a thread's first call at max(this call's need, the reserved size) and only
// grows when a call needs more, so a Session that reserves its largest (M, k) up front
// (reserve_packed_gemm_scratch, process-wide, only ever raised) makes its steps allocate nothing.
// `path` picks the kernels (clamped to what this CPU supports): amx -> AMX tiles, avx512 ->
// vdpbf16ps / vpdpbusd, avx2 -> FMA on widened bf16 and vpmaddubsw/vpmaddwd int8 (gemm_packed_avx2.cpp),
// portable -> plain C++.
// y must not alias x.
void gemm_packed(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, const PackedMatrix& w, float* y, int64_t ldy,
                 CpuPath path = cpu_path());
void reserve_packed_gemm_scratch(int64_t M, int64_t k);
// Packed GEMMs called inside a pool task (the MoE's one-task-per-expert dispatch, where they run
// serially on that thread) use a second per-thread buffer, sized for (M, k) of those calls only
// (an expert's k, not the vocabulary's). This allocates it on every thread of `pool` now, so that
// no step does; NestedPackedGemm marks the scope of such calls on the current thread.
void reserve_nested_packed_gemm_scratch(ThreadPool& pool, int64_t M, int64_t k);
struct NestedPackedGemm {
  NestedPackedGemm();
  ~NestedPackedGemm();
  bool prev;
};

// The path gemm_packed really runs for this kind (lowered where the CPU lacks the instructions).
CpuPath packed_gemm_path(PackedMatrix::Kind kind, CpuPath want = cpu_path());

}  // namespace diffrt::kernels

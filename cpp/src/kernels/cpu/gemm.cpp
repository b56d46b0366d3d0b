// CPU GEMM driver: packs panels of W (any stored type -> f32) and runs the ISA's panel kernel.
//
// Why pack per panel instead of repacking the model at load: it decodes BF16/F16/Q8_0 weights to
// f32 one [KC x NR] tile at a time (the file stays the only copy of the weights), and the cost of
// packing is 1/M of the multiply for the M = batch x canvas rows of a denoising step.
#include <algorithm>
#include <cstring>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "kernels/cpu/gemm_panel.h"
#include "kernels/cpu/pack.h"
#include "kernels/kernels.h"

namespace diffrt::kernels {

Matrix Matrix::rows(int64_t first, int64_t count) const {
  Matrix m = *this;
  m.data = row(first);
  m.n = count;
  if (packed) {  // one whole packed group (an expert) keeps its pack; any other slice decodes
    bool group = packed_rows > 0 && first % packed_rows == 0 && count == packed_rows;
    m.packed = group ? packed + first / packed_rows : nullptr;
  }
  return m;
}

Matrix f32_matrix(const float* data, int64_t n, int64_t k, int64_t ld) {
  Matrix m;
  m.type = GGMLType::F32;
  m.data = data;
  m.n = n;
  m.k = k;
  m.row_bytes = size_t(ld) * sizeof(float);
  return m;
}

void decode_row(const Matrix& w, int64_t row, int64_t k0, int64_t count, float* out) {
  const uint8_t* p = w.row(row);
  switch (w.type) {
    case GGMLType::F32: std::memcpy(out, reinterpret_cast<const float*>(p) + k0, size_t(count) * sizeof(float)); break;
    case GGMLType::BF16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p) + k0;
      for (int64_t i = 0; i < count; ++i) out[i] = bf16_to_f32(h[i]);
      break;
    }
    case GGMLType::F16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p) + k0;
      for (int64_t i = 0; i < count; ++i) out[i] = f16_to_f32(h[i]);
      break;
    }
    case GGMLType::Q8_0: {
      // Blocks of 32: f16 scale d, then 32 int8 quants; value = d * q.
      for (int64_t i = 0; i < count; ++i) {
        int64_t e = k0 + i;
        const uint8_t* blk = p + (e / 32) * 34;
        uint16_t d;
        std::memcpy(&d, blk, 2);
        out[i] = f16_to_f32(d) * float(int8_t(blk[2 + e % 32]));
      }
      break;
    }
  }
}

namespace cpu {

// Portable panel kernel (NR = 16): plain loops the compiler vectorises for the baseline ISA.
void gemm_panel_portable(int64_t M, int kc, const float* A, int64_t lda, const float* Bp, float* C, int64_t ldc,
                         int nvalid, bool accumulate) {
  constexpr int MR = 4, NR = 16;
  for (int64_t m0 = 0; m0 < M; m0 += MR) {
    int mr = int(std::min<int64_t>(MR, M - m0));
    // All MR rows every pass (a short pass repeats its last row, not stored): see
    // gemm_packed_generic.h for the GCC -O3 over-read an `i < mr` loop here can turn into.
    const float* ar[MR];
    for (int i = 0; i < MR; ++i) ar[i] = A + (m0 + std::min(i, mr - 1)) * lda;
    float acc[MR][NR] = {};
    for (int k = 0; k < kc; ++k) {
      const float* b = Bp + k * NR;
      for (int i = 0; i < MR; ++i) {
        float a = ar[i][k];
        for (int j = 0; j < NR; ++j) acc[i][j] += a * b[j];
      }
    }
    for (int i = 0; i < mr; ++i) {
      float* c = C + (m0 + i) * ldc;
      for (int j = 0; j < nvalid; ++j) c[j] = accumulate ? c[j] + acc[i][j] : acc[i][j];
    }
  }
}

namespace {

using PackFn = void (*)(const uint8_t* base, size_t row_bytes, int64_t n0, int nvalid, int64_t k0, int kc, float* bp);

struct Path {
  PanelFn fn;
  int nr;
  PackFn pack_f32_nk = nullptr;  // NK panels packed with in-register transposes (else pack_panel)
  PackFn pack_bf16_nk = nullptr;
  PackFn pack_f16_nk = nullptr;
  PackFn packer(GGMLType t) const {
    return t == GGMLType::F32    ? pack_f32_nk
           : t == GGMLType::BF16 ? pack_bf16_nk
           : t == GGMLType::F16  ? pack_f16_nk
                                 : nullptr;
  }
};

Path panel_path() {
  switch (cpu_path()) {
#if defined(DIFFRT_X86)
    case CpuPath::Amx:
    case CpuPath::Avx512: return {gemm_panel_avx512, 32, pack_f32_nk_avx512};
    case CpuPath::Avx2: return {gemm_panel_avx2, 16, pack_f32_nk_avx2, pack_bf16_nk_avx2, pack_f16_nk_avx2};
#elif defined(DIFFRT_ARM64)
    case CpuPath::Neon: return {gemm_panel_neon, 16, pack_f32_nk_neon, pack_bf16_nk_neon, pack_f16_nk_neon};
#endif
    default: return {gemm_panel_portable, 16};
  }
}

// Bp[kk][j] = W(n0 + j, k0 + kk) as f32, zero for j >= nvalid.
void pack_panel(const Matrix& w, int64_t n0, int nvalid, int64_t k0, int kc, int nr, float* bp) {
  if (w.kn) {
    for (int kk = 0; kk < kc; ++kk) {
      float* dst = bp + kk * nr;
      decode_row(w, k0 + kk, n0, nvalid, dst);
      for (int j = nvalid; j < nr; ++j) dst[j] = 0.f;
    }
    return;
  }
  float tmp[KC];
  for (int j = 0; j < nvalid; ++j) {
    decode_row(w, n0 + j, k0, kc, tmp);
    for (int kk = 0; kk < kc; ++kk) bp[kk * nr + j] = tmp[kk];
  }
  for (int j = nvalid; j < nr; ++j)
    for (int kk = 0; kk < kc; ++kk) bp[kk * nr + j] = 0.f;
}

// Asks for the stored bytes of W that pack_panel(n0, nvalid, k0, kc) will read, so that a
// panel's weights stream in from DRAM while the previous panel is being multiplied (without this
// the GEMM waits on memory for large-N weights such as the LM head).
// Byte range [off, off + len) of a stored row that holds its elements [e0, e0 + count): whole
// blocks for a block type, so e0 and count need not be multiples of the block (a KN Q8_0 panel
// starts at any multiple of NR = 16).
void element_span(GGMLType t, int64_t e0, int64_t count, size_t& off, size_t& len) {
  if (t == GGMLType::Q8_0) {
    const int64_t b0 = e0 / 32, b1 = (e0 + count + 31) / 32;
    off = size_t(b0) * 34;
    len = size_t(b1 - b0) * 34;
    return;
  }
  off = ggml_row_bytes(t, e0);
  len = ggml_row_bytes(t, count);
}

void prefetch_panel(const Matrix& w, int64_t n0, int nvalid, int64_t k0, int kc) {
  size_t off, len;
  if (w.kn) {
    element_span(w.type, n0, nvalid, off, len);
    for (int kk = 0; kk < kc; ++kk)
      for (size_t b = 0; b < len; b += 64) __builtin_prefetch(w.row(k0 + kk) + off + b, 0, 2);
    return;
  }
  element_span(w.type, k0, kc, off, len);
  for (int j = 0; j < nvalid; ++j)
    for (size_t b = 0; b < len; b += 64) __builtin_prefetch(w.row(n0 + j) + off + b, 0, 2);
}

// Panels [p0, p1) of NR output columns each, for rows [m0, m1).
void run_panels(const Path& path, const float* x, int64_t ldx, int64_t m0, int64_t m1, const Matrix& w, int64_t p0,
                int64_t p1, float* y, int64_t ldy) {
  alignas(64) thread_local float bp[KC * 32];
  for (int64_t panel = p0; panel < p1; ++panel) {
    const int64_t n0 = panel * path.nr;
    const int nvalid = int(std::min<int64_t>(path.nr, w.n - n0));
    for (int64_t k0 = 0; k0 < w.k; k0 += KC) {
      const int kc = int(std::min<int64_t>(KC, w.k - k0));
      if (PackFn fast = w.kn ? nullptr : path.packer(w.type))
        fast(static_cast<const uint8_t*>(w.data), w.row_bytes, n0, nvalid, k0, kc, bp);
      else
        pack_panel(w, n0, nvalid, k0, kc, path.nr, bp);
      // Two panels ahead, whole panels, while this one computes (the run's first panels on entry).
      if (k0 == 0)
        for (int64_t ahead = panel == p0 ? 1 : 2; ahead <= 2 && panel + ahead < p1; ++ahead) {
          const int64_t na = n0 + ahead * path.nr;
          prefetch_panel(w, na, int(std::min<int64_t>(path.nr, w.n - na)), 0, int(w.k));
        }
      path.fn(m1 - m0, kc, x + m0 * ldx + k0, ldx, bp, y + m0 * ldy + n0, ldy, nvalid, k0 > 0);
    }
  }
}

}  // namespace
}  // namespace cpu

void gemm_serial(const float* x, int64_t ldx, int64_t M, const Matrix& w, float* y, int64_t ldy) {
  cpu::Path path = cpu::panel_path();
  if (M <= 0 || w.n <= 0) return;
  if (w.k == 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(y + m * ldy, y + m * ldy + w.n, 0.f);
    return;
  }
  int64_t panels = (w.n + path.nr - 1) / path.nr;
  cpu::run_panels(path, x, ldx, 0, M, w, 0, panels, y, ldy);
}

void gemm(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, const Matrix& w, float* y, int64_t ldy) {
  if (w.packed) return gemm_packed(pool, x, ldx, M, *w.packed, y, ldy);  // bf16 / int8 compute types
  cpu::Path path = cpu::panel_path();
  if (M <= 0 || w.n <= 0) return;
  if (w.k == 0) return gemm_serial(x, ldx, M, w, y, ldy);
  int64_t panels = (w.n + path.nr - 1) / path.nr;
  // Few panels (a narrow W): also split the rows so every thread gets work.
  int64_t want = 4 * int64_t(pool.size());
  int64_t m_chunks = 1;
  if (panels < want) m_chunks = std::min<int64_t>((want + panels - 1) / panels, (M + 7) / 8);
  m_chunks = std::max<int64_t>(m_chunks, 1);
  int64_t m_step = (M + m_chunks - 1) / m_chunks;
  // Tasks are runs of consecutive panels (so the next panel's weights can be prefetched), about
  // 4 per thread for balance.
  int64_t per = std::max<int64_t>(1, panels * m_chunks / want);
  int64_t runs = (panels + per - 1) / per;
  pool.parallel_for(int(runs * m_chunks), [&](int task, int) {
    int64_t r = task % runs, c = task / runs;
    int64_t m0 = c * m_step, m1 = std::min(M, m0 + m_step);
    int64_t p0 = r * per, p1 = std::min(panels, p0 + per);
    if (m0 < m1) cpu::run_panels(path, x, ldx, m0, m1, w, p0, p1, y, ldy);
  });
}

}  // namespace diffrt::kernels

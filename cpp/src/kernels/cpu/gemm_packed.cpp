// The packed GEMM driver: converts the activations once per call (bf16, or int8 with per-row
// dynamic scales), then runs the chosen ISA's block kernel over (row chunk x 64-column group) tasks.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "kernels/cpu/gemm_packed_generic.h"
#include "kernels/cpu/pack.h"

namespace diffrt::kernels {
namespace cpu {

PackedKernels packed_kernels_portable() { return generic_kernels(); }

namespace {

std::atomic<size_t> g_reserved{0};         // bytes every thread's buffer is allocated with at least
std::atomic<size_t> g_reserved_nested{0};  // the same for the buffer of calls inside a pool task

// Activation buffer of the calling thread: allocated at max(need, reserved), grows only past that.
struct Scratch {
  const std::atomic<size_t>* reserved;
  std::unique_ptr<uint8_t[], AlignedFree> mem;
  size_t bytes = 0;
  uint8_t* get(size_t need) {
    if (need > bytes) {
      size_t grow = (std::max(need, reserved->load(std::memory_order_relaxed)) + 4095) / 4096 * 4096;
      mem.reset(static_cast<uint8_t*>(::operator new(grow, std::align_val_t(64))));
      bytes = grow;
    }
    return mem.get();
  }
};
thread_local Scratch t_scratch{&g_reserved, nullptr, 0};
thread_local Scratch t_scratch_nested{&g_reserved_nested, nullptr, 0};
thread_local bool t_nested = false;

size_t scratch_bytes(int64_t M, int64_t k_pad) {
  int64_t m_pad = (M + 31) / 32 * 32;
  return size_t(m_pad) * size_t(k_pad) * 2 + size_t(m_pad) * sizeof(float) + 64;
}

const PackedKernels& kernels_for(CpuPath p) {
  static const PackedKernels portable = packed_kernels_portable();
#if defined(DIFFRT_X86)
  static const PackedKernels avx2 = packed_kernels_avx2();
  static const PackedKernels avx512 = packed_kernels_avx512();
  static const PackedKernels amx = packed_kernels_amx();
#elif defined(DIFFRT_ARM64)
  static const PackedKernels neon = packed_kernels_neon();
#endif
  switch (p) {
#if defined(DIFFRT_X86)
    case CpuPath::Amx: return amx;
    case CpuPath::Avx512: return avx512;
    case CpuPath::Avx2: return avx2;
#elif defined(DIFFRT_ARM64)
    case CpuPath::Neon: return neon;
#endif
    default: return portable;
  }
}

}  // namespace
}  // namespace cpu

CpuPath packed_gemm_path(PackedMatrix::Kind kind, CpuPath want) {
  const CpuFeatures& f = cpu_features();
  CpuPath p = runnable_cpu_path(want);
  if (p == CpuPath::Amx && !(kind == PackedMatrix::Kind::BF16 ? f.amx_bf16 : f.amx_int8)) p = CpuPath::Avx512;
  if (p == CpuPath::Avx512 && !(kind == PackedMatrix::Kind::BF16 ? f.avx512bf16 : f.avx512vnni)) p = CpuPath::Avx2;
  return p;
}

void reserve_packed_gemm_scratch(int64_t M, int64_t k) {
  const size_t want = cpu::scratch_bytes(M, (k + 63) / 64 * 64);
  size_t have = cpu::g_reserved.load();
  while (want > have && !cpu::g_reserved.compare_exchange_weak(have, want)) {
  }
}

NestedPackedGemm::NestedPackedGemm() : prev(cpu::t_nested) { cpu::t_nested = true; }
NestedPackedGemm::~NestedPackedGemm() { cpu::t_nested = prev; }

void reserve_nested_packed_gemm_scratch(ThreadPool& pool, int64_t M, int64_t k) {
  const size_t want = cpu::scratch_bytes(M, (k + 63) / 64 * 64);
  size_t have = cpu::g_reserved_nested.load();
  while (want > have && !cpu::g_reserved_nested.compare_exchange_weak(have, want)) {
  }
  // One task per pool thread: each waits until all have started, so no thread runs two of them
  // and every thread (workers and the caller) allocates its buffer here.
  const int n = pool.size();
  std::atomic<int> started{0};
  pool.parallel_for(n, [&](int, int) {
    cpu::t_scratch_nested.get(want);
    started.fetch_add(1);
    while (started.load() < n) std::this_thread::yield();
  });
}

void gemm_packed(ThreadPool& pool, const float* x, int64_t ldx, int64_t M, const PackedMatrix& w, float* y, int64_t ldy,
                 CpuPath want) {
  if (M <= 0 || w.n <= 0) return;
  const bool bf16 = w.kind == PackedMatrix::Kind::BF16;
  const CpuPath path = packed_gemm_path(w.kind, want);
  const cpu::PackedKernels& kn = cpu::kernels_for(path);
  const int64_t lda = w.k_pad, m_pad = (M + 31) / 32 * 32;
  uint8_t* buf = (cpu::t_nested ? cpu::t_scratch_nested : cpu::t_scratch).get(cpu::scratch_bytes(M, lda));
  float* a_scale = reinterpret_cast<float*>(buf);
  uint8_t* a = buf + (size_t(m_pad) * sizeof(float) + 63) / 64 * 64;
  const size_t row_bytes = size_t(lda) * (bf16 ? 2 : 1);
  const bool shifted = !bf16 && kn.int8_shifted;

  // 1. Activations, 8 rows a task; for the 32-row AMX tiles rows [M, m_pad) are zero (q = 0).
  const int64_t rows = path == CpuPath::Amx ? m_pad : M;
  pool.parallel_for(int((rows + 7) / 8), [&](int t, int) {
    for (int64_t m = int64_t(t) * 8; m < std::min<int64_t>(rows, int64_t(t) * 8 + 8); ++m) {
      uint8_t* row = a + size_t(m) * row_bytes;
      if (m >= M) {
        std::memset(row, shifted ? 0x80 : 0, row_bytes);
        a_scale[m] = 0.f;
      } else if (bf16) {
        kn.to_bf16(x + m * ldx, w.k, lda, reinterpret_cast<uint16_t*>(row));
      } else {
        kn.quant(x + m * ldx, w.k, lda, shifted, reinterpret_cast<int8_t*>(row), &a_scale[m]);
      }
    }
  });

  // 2. Tasks: groups of 4 column blocks (64 outputs) x row chunks (multiples of 32 rows), enough
  //    tasks to keep every thread busy when W is narrow.
  const int64_t n_blocks = (w.n + 15) / 16, groups = (n_blocks + 3) / 4;
  const int64_t want_tasks = 4 * int64_t(pool.size());
  int64_t m_chunks = groups >= want_tasks ? 1 : std::min((want_tasks + groups - 1) / groups, m_pad / 32);
  m_chunks = std::max<int64_t>(1, m_chunks);
  const int64_t m_step = (m_pad / 32 + m_chunks - 1) / m_chunks * 32;
  m_chunks = (m_pad + m_step - 1) / m_step;
  pool.parallel_for(int(groups * m_chunks), [&](int task, int) {
    int64_t g = task % groups, c = task / groups;
    int64_t m0 = c * m_step, m1 = std::min(M, m0 + m_step);
    if (m0 >= m1) return;
    int64_t nb0 = g * 4, nb1 = std::min(n_blocks, nb0 + 4);
    const uint8_t* ab = a + size_t(m0) * row_bytes;
    if (bf16)
      kn.bf16_block(w, reinterpret_cast<const uint16_t*>(ab), lda, m1 - m0, nb0, nb1, y + m0 * ldy, ldy);
    else
      kn.int8_block(w, reinterpret_cast<const int8_t*>(ab), lda, m1 - m0, a_scale + m0, nb0, nb1, y + m0 * ldy, ldy);
  });
}

}  // namespace diffrt::kernels

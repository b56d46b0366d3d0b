// Run-time CPU feature detection and the choice of kernel path.
//
// The path is detected once: on x86 with cpuid + xgetbv (and for AMX the OS permission requested
// through arch_prctl(ARCH_REQ_XCOMP_PERM)), on ARM64 from the kernel's hwcaps (getauxval; sysctl on
// macOS). DIFFRT_CPU_PATH=portable|neon|avx2|avx512|amx forces a lower path (a higher one than the
// CPU supports is clamped down), so every path can be tested on one machine.
//
// The order is per architecture: portable < neon on ARM64, portable < avx2 < avx512 < amx on x86.
// A path of the other architecture is never runnable; runnable_cpu_path() lowers it to portable
// (neon on x86) or to the best path (avx2 on ARM64, as for any path above the best).
#pragma once
#include <string>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define DIFFRT_X86 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#define DIFFRT_ARM64 1
#endif

namespace diffrt {

enum class CpuPath { Portable = 0, Neon = 1, Avx2 = 2, Avx512 = 3, Amx = 4 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512bf16 = false, avx512vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;           // CPU has it AND the OS enabled it
  bool neon = false, dotprod = false, i8mm = false, arm_bf16 = false;  // ARM64: ASIMD, SDOT, SMMLA, BFDOT
  std::string describe() const;                                        // "avx2 fma f16c avx512f ..."
};

const CpuFeatures& cpu_features();
CpuPath best_cpu_path();                  // what the CPU supports
CpuPath cpu_path();                       // what kernels use: best_cpu_path() lowered by DIFFRT_CPU_PATH
CpuPath runnable_cpu_path(CpuPath want);  // the highest path at or below `want` this CPU runs
const char* cpu_path_name(CpuPath p);

}  // namespace diffrt

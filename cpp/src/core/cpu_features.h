// Run-time CPU feature detection and the choice of kernel path.
//
// The path is detected once (cpuid + xgetbv, and for AMX the OS permission requested through
// arch_prctl(ARCH_REQ_XCOMP_PERM)). DIFFRT_CPU_PATH=portable|avx2|avx512|amx forces a lower path
// (a higher one than the CPU supports is clamped down), so every path can be tested on one machine.
#pragma once
#include <string>

namespace diffrt {

enum class CpuPath { Portable = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512bf16 = false, avx512vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;  // CPU has it AND the OS enabled it
  std::string describe() const;                                // "avx2 fma f16c avx512f ..."
};

const CpuFeatures& cpu_features();
CpuPath best_cpu_path();    // what the CPU supports
CpuPath cpu_path();         // what kernels use: best_cpu_path() lowered by DIFFRT_CPU_PATH
const char* cpu_path_name(CpuPath p);

}  // namespace diffrt

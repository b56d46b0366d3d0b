// CPU feature detection (cpuid/xgetbv on x86, hwcaps on ARM64) and the DIFFRT_CPU_PATH override.
#include "core/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(DIFFRT_X86)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(DIFFRT_ARM64) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(DIFFRT_ARM64) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace diffrt {
namespace {

#ifdef DIFFRT_X86
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// Linux keeps AMX tile data disabled per process until asked for (ARCH_REQ_XCOMP_PERM).
bool request_amx_permission() {
  constexpr int ARCH_REQ_XCOMP_PERM = 0x1023;
  constexpr int XFEATURE_XTILEDATA = 18;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

#if defined(DIFFRT_ARM64) && defined(__APPLE__)
bool sysctl_flag(const char* name) {
  int v = 0;
  size_t len = sizeof(v);
  return sysctlbyname(name, &v, &len, nullptr, 0) == 0 && v != 0;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef DIFFRT_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  bool osxsave = c & (1u << 27);
  bool fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return f;
  uint64_t xcr0 = xgetbv0();
  bool ymm_os = (xcr0 & 0x6) == 0x6;
  bool zmm_os = (xcr0 & 0xe6) == 0xe6;
  bool amx_os = (xcr0 & (3u << 17)) == (3u << 17);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  if (ymm_os) {
    f.avx2 = b & (1u << 5);
    f.fma = fma;
    f.f16c = f16c;
  }
  if (zmm_os) {
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    unsigned a1, b1, c1, d1;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = a1 & (1u << 5);
  }
  bool amx_cpu = d & (1u << 24);
  if (amx_cpu && amx_os && request_amx_permission()) {
    f.amx_tile = true;
    f.amx_int8 = d & (1u << 25);
    f.amx_bf16 = d & (1u << 22);
  }
#elif defined(DIFFRT_ARM64)
  f.neon = true;  // ASIMD is part of every AArch64 CPU
#if defined(__linux__)
  // Bits from the kernel's uapi <asm/hwcap.h>, spelled out for older C libraries' headers.
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.dotprod = hw & (1ul << 20);    // HWCAP_ASIMDDP
  f.i8mm = hw2 & (1ul << 13);      // HWCAP2_I8MM
  f.arm_bf16 = hw2 & (1ul << 14);  // HWCAP2_BF16
#elif defined(__APPLE__)
  f.dotprod = sysctl_flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = sysctl_flag("hw.optional.arm.FEAT_I8MM");
  f.arm_bf16 = sysctl_flag("hw.optional.arm.FEAT_BF16");
#endif
#endif
  return f;
}

CpuPath parse_override(CpuPath best) {
  const char* env = std::getenv("DIFFRT_CPU_PATH");
  if (!env || !*env) return best;
  CpuPath want = best;
  if (!std::strcmp(env, "portable"))
    want = CpuPath::Portable;
  else if (!std::strcmp(env, "neon"))
    want = CpuPath::Neon;
  else if (!std::strcmp(env, "avx2"))
    want = CpuPath::Avx2;
  else if (!std::strcmp(env, "avx512"))
    want = CpuPath::Avx512;
  else if (!std::strcmp(env, "amx"))
    want = CpuPath::Amx;
  return runnable_cpu_path(want);
}

}  // namespace

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512bf16, "avx512bf16");
  add(avx512vnni, "avx512vnni");
  add(amx_tile, "amx-tile");
  add(amx_int8, "amx-int8");
  add(amx_bf16, "amx-bf16");
  add(neon, "neon");
  add(dotprod, "dotprod");
  add(i8mm, "i8mm");
  add(arm_bf16, "bf16");
  return s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

CpuPath best_cpu_path() {
  const CpuFeatures& f = cpu_features();
  bool avx2 = f.avx2 && f.fma && f.f16c;
  bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  // The AMX path has no kernels of its own yet: it runs the AVX-512 ones.
  if (avx512 && f.amx_tile && f.amx_bf16 && f.avx512bf16 && f.avx512vnni) return CpuPath::Amx;
  if (avx512 && f.avx512bf16 && f.avx512vnni) return CpuPath::Avx512;
  if (avx2) return CpuPath::Avx2;
  if (f.neon) return CpuPath::Neon;
  return CpuPath::Portable;
}

CpuPath runnable_cpu_path(CpuPath want) {
  const CpuPath best = best_cpu_path();
  if (want >= best) return best;
  // Below the best, every path of this architecture runs; neon below an x86 best is not one of them.
  if (want == CpuPath::Neon) return CpuPath::Portable;
  return want;
}

CpuPath cpu_path() {
  static const CpuPath p = parse_override(best_cpu_path());
  return p;
}

const char* cpu_path_name(CpuPath p) {
  switch (p) {
    case CpuPath::Portable: return "portable";
    case CpuPath::Neon: return "neon";
    case CpuPath::Avx2: return "avx2";
    case CpuPath::Avx512: return "avx512";
    case CpuPath::Amx: return "amx";
  }
  return "?";
}

}  // namespace diffrt

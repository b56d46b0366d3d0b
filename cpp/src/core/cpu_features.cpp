// CPU feature detection (cpuid/xgetbv) and the DIFFRT_CPU_PATH override.
#include "core/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DIFFRT_X86 1
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
#endif
  return f;
}

CpuPath parse_override(CpuPath best) {
  const char* env = std::getenv("DIFFRT_CPU_PATH");
  if (!env || !*env) return best;
  CpuPath want = best;
  if (!std::strcmp(env, "portable")) want = CpuPath::Portable;
  else if (!std::strcmp(env, "avx2")) want = CpuPath::Avx2;
  else if (!std::strcmp(env, "avx512")) want = CpuPath::Avx512;
  else if (!std::strcmp(env, "amx")) want = CpuPath::Amx;
  return int(want) < int(best) ? want : best;
}

}  // namespace

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2"); add(fma, "fma"); add(f16c, "f16c");
  add(avx512f, "avx512f"); add(avx512bw, "avx512bw"); add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq"); add(avx512bf16, "avx512bf16"); add(avx512vnni, "avx512vnni");
  add(amx_tile, "amx-tile"); add(amx_int8, "amx-int8"); add(amx_bf16, "amx-bf16");
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
  return CpuPath::Portable;
}

CpuPath cpu_path() {
  static const CpuPath p = parse_override(best_cpu_path());
  return p;
}

const char* cpu_path_name(CpuPath p) {
  switch (p) {
    case CpuPath::Portable: return "portable";
    case CpuPath::Avx2: return "avx2";
    case CpuPath::Avx512: return "avx512";
    case CpuPath::Amx: return "amx";
  }
  return "?";
}

}  // namespace diffrt

// Compute types: names, what each device supports, and the rule for "auto" (diffrt/compute_type.h).
#include "diffrt/compute_type.h"

#include "core/cpu_features.h"
#include "diffrt/error.h"

namespace diffrt {

const char* compute_type_name(ComputeType t) {
  switch (t) {
    case ComputeType::Auto: return "auto";
    case ComputeType::F32: return "f32";
    case ComputeType::Bf16: return "bf16";
    case ComputeType::Int8: return "int8";
    case ComputeType::Int8W8A8: return "int8-w8a8";
    case ComputeType::Int8W8A16: return "int8-w8a16";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::Cuda ? "cuda" : "cpu"; }

const std::vector<ComputeType>& supported_compute_types(Device d) {
  using C = ComputeType;
  static const std::vector<C> cpu = {C::Auto, C::F32, C::Bf16, C::Int8, C::Int8W8A8, C::Int8W8A16};
  static const std::vector<C> cuda = {C::Auto, C::F32, C::Bf16, C::Int8, C::Int8W8A16};
  return d == Device::Cuda ? cuda : cpu;
}

ComputeType parse_compute_type(const std::string& name, Device d) {
  std::string known;
  for (ComputeType t : supported_compute_types(d)) {
    if (name == compute_type_name(t)) return t;
    known += std::string(known.empty() ? "" : ", ") + compute_type_name(t);
  }
  throw ConfigError(std::string("compute_type '") + name + "' is not one of " + known + " (device '" + device_name(d) +
                    "')");
}

ComputeType resolve_compute_type(ComputeType requested, GGMLType stored, Device d) {
  if (requested != ComputeType::Auto) return requested;
  if (stored == GGMLType::Q8_0) return ComputeType::Int8;
  // A BF16 file runs in bf16 where the CPU's bf16 GEMMs beat its f32 ones: AVX512-BF16 / AMX, and
  // AVX2 (weights widened in registers: half the bytes of f32 and no per-call panel packing;
  // measured 1.13x the f32 step, docs/perf.md). The portable and (unmeasured) NEON paths stay f32.
  const bool bf16_fast = d == Device::Cuda || cpu_path() >= CpuPath::Avx2;
  return stored == GGMLType::BF16 && bf16_fast ? ComputeType::Bf16 : ComputeType::F32;
}

}  // namespace diffrt

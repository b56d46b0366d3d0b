// The compute types: what arithmetic a loaded model's GEMMs use, chosen once at load.
//
// One enum and one resolution rule for every backend (the CPU model, the CUDA device model, the
// Python API, the CLI and the server all ask here):
//   auto        Q8_0 layer weights -> int8; BF16 -> bf16 where the device computes bf16 natively
//               (CUDA always; the CPU with AVX512-BF16 or AMX on its kernel path); else f32
//   f32         the exact path (weights decoded to f32 per tile; matches transformers f32)
//   bf16        weights repacked to bf16, bf16 activations, f32 accumulation
//   int8        W8A8 per-row symmetric int8 for the layers and LM head; the self-conditioning
//               product probs · E W8A16 (its activations are probabilities: docs/perf.md)
//   int8-w8a8   every int8 GEMM W8A8 (CPU only; measures the int8 policy)
//   int8-w8a16  every int8 GEMM W8A16 (int8 weights, bf16 activations)
#pragma once
#include <string>
#include <vector>

#include "diffrt/gguf.h"

namespace diffrt {

enum class Device { Cpu, Cuda };
enum class ComputeType { Auto, F32, Bf16, Int8, Int8W8A8, Int8W8A16 };

const char* compute_type_name(ComputeType t);  // "auto", "f32", ..., "int8-w8a16"
const char* device_name(Device d);             // "cpu", "cuda"
// The types a device takes, "auto" first.
const std::vector<ComputeType>& supported_compute_types(Device d);
// Parses a name and checks that `d` supports it; ConfigError naming the device's types otherwise.
ComputeType parse_compute_type(const std::string& name, Device d);
// The concrete type (never Auto) for a model whose layer weights are stored as `stored`.
ComputeType resolve_compute_type(ComputeType requested, GGMLType stored, Device d);

}  // namespace diffrt

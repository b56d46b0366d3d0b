// A loaded DiffusionGemma model: hyper-parameters, sampler defaults and weights (from one GGUF file).
//
// Contract:
//  - Model::load() opens the file (mmap), validates architecture, hyper-parameters and every tensor
//    (name, type, shape) and throws FormatError / ConfigError naming what is wrong.
//  - Weights are used in place from the mapping where their type allows; any repacking happens once
//    in load(). A Model is immutable after load(): many Sessions may share it across threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "diffrt/compute_type.h"
#include "diffrt/gguf.h"

namespace diffrt {

struct SamplerDefaults {
  int max_steps = 48;
  float t_min = 0.4f, t_max = 0.8f;
  float entropy_bound = 0.1f;
  int stability_threshold = 1;          // < 0: no adaptive stopping
  float confidence_threshold = 0.005f;  // <= 0: no adaptive stopping
  int max_new_tokens = 256;
  std::vector<int32_t> eos_ids;  // from the generation config; may be empty
  int32_t pad_id = -1;           // -1: no pad rewriting
};

struct ModelConfig {
  int n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_vocab = 0;
  int n_expert = 0, n_expert_used = 0, n_ff_exp = 0;
  int canvas_length = 0;   // L
  int sliding_window = 0;  // W as in config.json
  int context_length = 0;
  float rms_eps = 1e-6f;
  float final_logit_softcapping = 30.0f;
  std::vector<uint8_t> is_sliding;       // per layer
  std::vector<int> head_dim, n_kv_head;  // per layer
  float rope_base = 1e6f, rope_base_swa = 1e4f;
  float rope_partial = 0.25f, rope_partial_swa = 1.0f;
  std::string rope_type = "proportional", rope_type_swa = "default";
  std::string bidirectional = "none";  // encoder: "none" | "vision" | "all"
  SamplerDefaults sampler;
};

struct LoadOptions {
  int threads = 0;                               // 0: all cores
  ComputeType compute_type = ComputeType::Auto;  // diffrt/compute_type.h
};

class Model {
 public:
  static std::shared_ptr<Model> load(const std::string& path, const LoadOptions& opt = {});
  virtual ~Model() = default;
  virtual const char* architecture() const = 0;  // general.architecture (models/architectures.h)
  virtual const ModelConfig& config() const = 0;
  virtual const GGUFFile& file() const = 0;
  // The compute type resolved at load from LoadOptions::compute_type (never Auto).
  virtual ComputeType compute_type() const = 0;
};

}  // namespace diffrt

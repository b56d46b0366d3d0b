// The model's hyper-parameters and sampler defaults as a dict: Model.config() of both modules
// (_core.Model in model.cpp, _cuda.Model in cuda/cuda_bindings.cpp).
#pragma once
#include <diffrt/model.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <vector>

namespace diffrt_py {

inline nanobind::dict config_dict(const diffrt::ModelConfig& c) {
  nanobind::dict d;
  d["n_layer"] = c.n_layer;
  d["n_embd"] = c.n_embd;
  d["n_ff"] = c.n_ff;
  d["n_head"] = c.n_head;
  d["n_vocab"] = c.n_vocab;
  d["n_expert"] = c.n_expert;
  d["n_expert_used"] = c.n_expert_used;
  d["n_ff_exp"] = c.n_ff_exp;
  d["canvas_length"] = c.canvas_length;
  d["sliding_window"] = c.sliding_window;
  d["context_length"] = c.context_length;
  d["rms_eps"] = c.rms_eps;
  d["final_logit_softcapping"] = c.final_logit_softcapping;
  d["is_sliding"] = std::vector<bool>(c.is_sliding.begin(), c.is_sliding.end());
  d["head_dim"] = c.head_dim;
  d["n_kv_head"] = c.n_kv_head;
  d["rope_base"] = c.rope_base;
  d["rope_base_swa"] = c.rope_base_swa;
  d["rope_partial"] = c.rope_partial;
  d["rope_partial_swa"] = c.rope_partial_swa;
  d["rope_type"] = c.rope_type;
  d["rope_type_swa"] = c.rope_type_swa;
  d["bidirectional"] = c.bidirectional;
  nanobind::dict s;
  s["max_steps"] = c.sampler.max_steps;
  s["t_min"] = c.sampler.t_min;
  s["t_max"] = c.sampler.t_max;
  s["entropy_bound"] = c.sampler.entropy_bound;
  s["stability_threshold"] = c.sampler.stability_threshold;
  s["confidence_threshold"] = c.sampler.confidence_threshold;
  s["max_new_tokens"] = c.sampler.max_new_tokens;
  s["eos_ids"] = c.sampler.eos_ids;
  s["pad_id"] = c.sampler.pad_id;
  d["sampler"] = s;
  return d;
}

}  // namespace diffrt_py

// The block-diffusion generation loop of spec §10.2 for a batch of prompts, run entirely in C++.
//
// Contract:
//  - generate() validates everything (parameters, prompts, ids < V, context, tape sizes) before any
//    compute and throws InvalidArgument naming the problem.
//  - Rows may have different prompt lengths; each row is prefilled on its own and keeps its own
//    positions (prompt 0..P_r-1, canvas c at P_r + c*L ...).
//  - Output per row: exactly n_canvas_run * L new tokens (pads included) where n_canvas_run <=
//    ceil(max_new_tokens / L) (the loop ends early once every row has hit EOS).
//  - Every per-step buffer is allocated before the first step; a step allocates nothing.
//  - All rows share `params`; row r draws from (params.seed, row r). A single prompt is row 0, the
//    address BatchEngine (batch_engine.h) gives every request: per-request parameters and seeds,
//    rows joining at canvas boundaries, live there.
//  - Callbacks run on the calling thread between steps. A callback returning false cancels: the
//    loop stops after that step (or commit), commits nothing more and returns cancelled = true;
//    `steps` then also counts the interrupted canvas's steps.
//  - Not thread-safe with respect to the Session (one generate per Session at a time).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "diffrt/model.h"
#include "diffrt/sampler.h"
#include "diffrt/session.h"

namespace diffrt {

struct StepEvent {
  int canvas;    // canvas index (0-based)
  int step;      // executed step within the canvas (0-based)
  int cur_step;  // remaining-steps counter N..1 as in transformers
  float temperature;
  int batch, L;
  const int32_t* argmax;      // [B, L] argmax canvas of this step (the draft)
  const uint8_t* accepted;    // [B, L] 1 where the sampled token was accepted this step
  const uint8_t* finished;    // [B] row has stopped denoising this canvas
  const float* mean_entropy;  // [B]
};

struct CanvasEvent {
  int canvas;
  int batch, L;
  const int32_t* tokens;  // [B, L] committed tokens after the EOS -> pad rewrite
  const uint8_t* done;    // [B] row has finished (EOS seen in this or an earlier canvas)
  int steps;              // denoising steps executed for this canvas
};

using StepCallback = std::function<bool(const StepEvent&)>;  // return false to cancel
using CanvasCallback = std::function<bool(const CanvasEvent&)>;

struct GenerateOptions {
  // dtype the self-conditioning logits are rounded to (transformers casts them to the embedding
  // dtype): true for a bf16 model. Resolved from the file by default_self_cond_bf16().
  bool self_cond_bf16 = false;
  Tape tape;  // inactive by default: the seeded generator is used
  StepCallback on_step;
  CanvasCallback on_canvas;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // per row: new tokens, pads included (k*L each)
  std::vector<int> steps;                    // executed denoising steps per canvas (all rows)
  std::vector<int> decoder_passes;           // per row: steps it was still denoising (transformers'
                                             // tokens_per_forward denominator)
  bool cancelled = false;
  double prefill_s = 0, encode_s = 0, denoise_s = 0, sampler_s = 0, total_s = 0;
};

// True when the file's token embedding is stored as BF16 (self-conditioning then rounds to bf16).
bool default_self_cond_bf16(const Model& model);

// Runs the loop on `session` (reset first; it must have batch == prompts.size() and room for
// max(P) + n_canvas * L positions).
GenerateResult generate(Session& session, const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                        const SamplerParams& params, const GenerateOptions& opt = {});

// Convenience: creates a Session sized for this call.
GenerateResult generate(std::shared_ptr<const Model> model, const std::vector<std::vector<int32_t>>& prompts,
                        const SamplerParams& params, const GenerateOptions& opt = {});

}  // namespace diffrt

// The generation loop of spec §10.2: prefill, then per canvas a random start, up to N denoising
// steps (Session::step: pass, sample, accept, renoise; then the adaptive stop), commit of the last
// argmax, EOS -> pad rewrite.
#include "diffrt/generate.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "diffrt/error.h"
#include "format/gguf_names.h"
#include "runtime/row_update.h"

namespace diffrt {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

[[noreturn]] void bad(const std::string& what) { throw InvalidArgument(what); }

// Everything checked before any compute; returns the number of canvases.
int check_inputs(const Session& S, const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& prompts,
                 const SamplerParams& p, const Tape& tape) {
  p.validate();
  const int B = int(prompts.size()), L = cfg.canvas_length, V = cfg.n_vocab;
  if (B < 1) bad("generate: no prompts");
  if (B != S.batch())
    bad("generate: " + std::to_string(B) + " prompts for a session of batch " + std::to_string(S.batch()));
  if (L < 1 || L > 65535) bad("generate: unsupported canvas_length " + std::to_string(L));
  const int n_canvas = (p.max_new_tokens + L - 1) / L;
  size_t p_max = 0;
  for (int r = 0; r < B; ++r) {
    const auto& ids = prompts[r];
    if (ids.empty()) bad("generate: prompt " + std::to_string(r) + " is empty");
    for (int32_t id : ids)
      if (id < 0 || id >= V)
        bad("generate: prompt " + std::to_string(r) + " has token id " + std::to_string(id) +
            " outside the vocabulary [0, " + std::to_string(V) + ")");
    p_max = std::max(p_max, ids.size());
  }
  const int64_t need = int64_t(p_max) + int64_t(n_canvas) * L;
  const int64_t limit =
      cfg.context_length > 0 ? std::min<int64_t>(cfg.context_length, S.max_context()) : S.max_context();
  if (need > limit)
    bad("generate: prompt of " + std::to_string(p_max) + " tokens + " + std::to_string(n_canvas) + " canvas(es) of " +
        std::to_string(L) + " = " + std::to_string(need) + " positions does not fit the context of " +
        std::to_string(limit));
  if (tape.active()) {
    if (!tape.samples || !tape.renoise) bad("generate: a tape needs init, samples and renoise");
    if (tape.n_init < 1) bad("generate: tape has no initial canvas");
    for (int64_t i = 0; i < int64_t(tape.n_init) * B * L; ++i)
      if (tape.init[i] < 0 || tape.init[i] >= V) bad("generate: tape init has an id outside the vocabulary");
    for (int64_t i = 0; i < int64_t(tape.n_steps) * B * L; ++i)
      if (tape.samples[i] < 0 || tape.samples[i] >= V || tape.renoise[i] < 0 || tape.renoise[i] >= V)
        bad("generate: tape samples/renoise have an id outside the vocabulary");
  }
  return n_canvas;
}

}  // namespace

bool default_self_cond_bf16(const Model& model) {
  const TensorInfo* t = model.file().find_tensor(names::TENSOR_TOKEN_EMBD);
  return t && t->type == GGMLType::BF16;
}

GenerateResult generate(Session& S, const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                        const SamplerParams& p, const GenerateOptions& opt) {
  const ModelConfig& cfg = model.config();
  const Tape& tape = opt.tape;
  const int n_canvas = check_inputs(S, cfg, prompts, p, tape);
  const auto t_start = Clock::now();
  const int B = int(prompts.size()), L = cfg.canvas_length, V = cfg.n_vocab, N = p.steps;
  const int BL = B * L;
  const bool adaptive = p.adaptive_stopping();
  const int s_hist = adaptive ? std::max(0, p.stability_threshold) : 0;
  const float conf = float(p.confidence_threshold);

  // ---- every buffer the loop needs, allocated once (the step's own live in the Session) ----
  std::vector<int32_t> init(L), commit(BL), history(size_t(s_hist) * BL);
  std::vector<uint8_t> finished(B), finished_seq(B), done(B);
  std::vector<RowStep> rows(B);
  std::vector<int> eos_at(B);
  GenerateResult res;
  res.tokens.assign(B, {});
  for (auto& t : res.tokens) t.reserve(size_t(n_canvas) * L);
  res.decoder_passes.assign(B, 0);
  res.steps.reserve(n_canvas);

  int64_t g = 0;  // executed steps so far (tape index)
  StepView view;

  S.reset();
  auto t0 = Clock::now();
  for (int r = 0; r < B; ++r) S.encode(prompts[r].data(), 1, int(prompts[r].size()), &r);
  res.prefill_s = since(t0);

  for (int c = 0; c < n_canvas; ++c) {
    if (c > 0) {  // the previous commit enters the cache only now (the last one never does)
      t0 = Clock::now();
      S.encode(commit.data(), B, L, nullptr);
      res.encode_s += since(t0);
    }
    if (tape.active() && c >= tape.n_init)
      bad("generate: tape has " + std::to_string(tape.n_init) + " initial canvases, canvas " + std::to_string(c) +
          " needs one more");
    for (int r = 0; r < B; ++r) {
      if (tape.active())
        std::copy_n(tape.init + (int64_t(c) * B + r) * L, L, init.begin());
      else
        for (int j = 0; j < L; ++j) init[j] = rng_randint(p.seed, c, 0, DrawPurpose::Init, r, j, V);
      S.start_canvas(r, init.data());
    }
    std::fill(finished.begin(), finished.end(), 0);
    std::fill(history.begin(), history.end(), -1);
    int executed = 0;
    for (int k = 0; k < N; ++k) {
      const int cur_step = N - k;
      if (tape.active() && g >= tape.n_steps)
        bad("generate: tape has " + std::to_string(tape.n_steps) + " steps, the run needs more");
      const float T = temperature(p.t_min, p.t_max, cur_step, N);
      for (int r = 0; r < B; ++r) {
        res.decoder_passes[r] += !(finished[r] || finished_seq[r]);
        RowStep& rs = rows[r];
        rs.active = !finished[r];  // frozen rows keep argmax, canvas and self-conditioning
        rs.self_cond = k > 0;
        rs.temperature = T;
        rs.entropy_bound = p.entropy_bound;
        rs.seed = p.seed;
        rs.canvas = c;
        rs.step = k;
        rs.key = r;
        rs.tape_samples = tape.active() ? tape.samples + g * BL + int64_t(r) * L : nullptr;
        rs.tape_renoise = tape.active() ? tape.renoise + g * BL + int64_t(r) * L : nullptr;
      }
      view = S.step(rows.data(), opt.self_cond_bf16);
      res.denoise_s += view.pass_s;
      res.sampler_s += view.sample_s;
      if (adaptive)
        for (int r = 0; r < B; ++r)
          if (!finished[r] && rowstep::stops(view.argmax + int64_t(r) * L, L, &history[size_t(r) * L], s_hist,
                                             size_t(B) * L, view.mean_entropy[r], conf))
            finished[r] = 1;
      ++g;
      ++executed;

      if (opt.on_step) {
        StepEvent ev{c, k, cur_step, T, B, L, view.argmax, view.accepted, finished.data(), view.mean_entropy};
        if (!opt.on_step(ev)) {
          res.cancelled = true;
          break;
        }
      }
      if (std::all_of(finished.begin(), finished.end(), [](uint8_t f) { return f != 0; })) break;
    }
    res.steps.push_back(executed);
    if (res.cancelled) break;

    // ---- commit the last argmax; EOS -> pad ----
    std::copy_n(view.argmax, BL, commit.begin());
    bool any_end = false;
    for (int r = 0; r < B; ++r) {
      eos_at[r] = rowstep::first_eos(&commit[r * L], L, p.eos_ids);
      done[r] = eos_at[r] >= 0;
      any_end |= (done[r] || finished_seq[r]);
    }
    if (p.pad_id >= 0 && any_end) {
      for (int r = 0; r < B; ++r) {
        int32_t* row = &commit[r * L];
        if (finished_seq[r])
          std::fill(row, row + L, p.pad_id);
        else if (done[r])  // keep the first EOS, pad everything after it
          rowstep::pad_after(row, L, eos_at[r], p.pad_id);
      }
    }
    for (int r = 0; r < B; ++r) {
      finished_seq[r] |= done[r];
      res.tokens[r].insert(res.tokens[r].end(), &commit[r * L], &commit[r * L] + L);
    }
    if (opt.on_canvas) {
      CanvasEvent ev{c, B, L, commit.data(), finished_seq.data(), executed};
      if (!opt.on_canvas(ev)) {
        res.cancelled = true;
        break;
      }
    }
    if (std::all_of(finished_seq.begin(), finished_seq.end(), [](uint8_t f) { return f != 0; })) break;
  }
  res.total_s = since(t_start);
  return res;
}

GenerateResult generate(std::shared_ptr<const Model> model, const std::vector<std::vector<int32_t>>& prompts,
                        const SamplerParams& p, const GenerateOptions& opt) {
  const ModelConfig& cfg = model->config();
  p.validate();
  if (prompts.empty()) bad("generate: no prompts");
  const int L = std::max(1, cfg.canvas_length);
  size_t p_max = 0;
  for (const auto& ids : prompts) p_max = std::max(p_max, ids.size());
  int64_t need = int64_t(p_max) + int64_t((p.max_new_tokens + L - 1) / L) * L;
  if (cfg.context_length > 0 && need > cfg.context_length)
    bad("generate: prompt of " + std::to_string(p_max) + " tokens + the new tokens need " + std::to_string(need) +
        " positions, more than the model's context of " + std::to_string(cfg.context_length));
  auto session = Session::create(model, int(prompts.size()), int(need));
  return generate(*session, *model, prompts, p, opt);
}

}  // namespace diffrt

// The CPU session's denoising step (diffrt/session.h): one decoder pass over the rows up to the last
// active one, then the sampler of spec §10.2 for every active row on the model's thread pool.
#include <algorithm>
#include <chrono>
#include <string>

#include "core/thread_pool.h"
#include "runtime/cpu_session.h"
#include "runtime/row_update.h"
#include "runtime/session_args.h"

namespace diffrt {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

void CpuSession::start_canvas(int row, const int32_t* tokens) {
  n_cached(row);  // range check
  const int L = model_->config().canvas_length;
  check_canvas_tokens(tokens, L, model_->config().n_vocab);
  std::copy_n(tokens, L, canvas_ + int64_t(row) * L);
  std::copy_n(tokens, L, amax_ + int64_t(row) * L);
}

StepView CpuSession::step(const RowStep* rows, bool self_cond_bf16) {
  const ModelConfig& c = model_->config();
  const int L = c.canvas_length, V = c.n_vocab;
  check_row_steps(rows, batch_, L, V);
  int n = 0;
  bool any_sc = false;
  for (int r = 0; r < batch_; ++r) {
    sc_rows_[r] = rows[r].active && rows[r].self_cond;
    any_sc |= sc_rows_[r] != 0;
    if (rows[r].active) n = r + 1;
  }
  StepView view{canvas_, amax_, accepted_, mean_H_, 0, 0};
  if (n == 0) return view;

  // The session's own canvas holds vocabulary ids (start_canvas checks them, renoising draws them):
  // only the rows' room is checked, not the canvas again at every step.
  check_denoise_args(nullptr, n, L, V, max_context_, cache_.n_cached.data(), "step");
  auto t0 = Clock::now();
  const float* logits = pass(canvas_, any_sc ? sc_ : nullptr, sc_rows_, n);
  view.pass_s = since(t0);

  t0 = Clock::now();
  model_->pool().parallel_for(n * L, [&](int i, int) {
    const int r = i / L, pos = i % L;
    const RowStep& p = rows[r];
    if (!p.active) return;
    float* pl = sc_ + size_t(i) * V;  // this step's pl: the row's next self-conditioning input
    const SampleStream ss{p.seed, p.canvas, p.step, p.key, pos};
    const TokenStats st = token_stats(logits + size_t(i) * V, p.temperature, pl, V, p.tape_samples ? nullptr : &ss);
    if (self_cond_bf16) round_to_bf16(pl, V);
    amax_[i] = st.argmax;
    H_[i] = st.entropy;
    sampled_[i] = p.tape_samples ? p.tape_samples[pos] : st.sample;
  });
  for (int r = 0; r < n; ++r) {
    const RowStep& p = rows[r];
    if (!p.active) continue;
    const int64_t o = int64_t(r) * L;
    auto noise = [&](int j) {
      return p.tape_renoise ? p.tape_renoise[j]
                            : rng_randint(p.seed, p.canvas, p.step, DrawPurpose::Renoise, p.key, j, V);
    };
    mean_H_[r] = rowstep::accept_and_renoise(H_ + o, sampled_ + o, L, p.entropy_bound, accepted_ + o, order_ + o,
                                             canvas_ + o, noise);
  }
  view.sample_s = since(t0);
  return view;
}

}  // namespace diffrt

// BatchEngine: the loop of generate.cpp with per-row requests (own params, seed, canvas and step),
// rows joining and leaving at canvas boundaries of a Session allocated once for all slots.
#include "diffrt/batch_engine.h"

#include <algorithm>
#include <string>

#include "core/thread_pool.h"
#include "diffrt/error.h"
#include "runtime/row_update.h"

namespace diffrt {

struct BatchEngine::Slot {
  bool active = false;
  int64_t id = 0;
  SamplerParams p;
  bool want_steps = false;
  int n_canvas = 0, c = 0, k = 0;  // canvases allowed, current canvas, executed steps in it
  bool have_sc = false, finished = false, needs_encode = false, cancel = false;
  float mean_H = 0;
  std::vector<int32_t> history;  // [stability_threshold, L] last argmax canvases, oldest first
};

namespace {
[[noreturn]] void bad(const std::string& what) { throw InvalidArgument(what); }
}  // namespace

BatchEngine::BatchEngine(std::shared_ptr<const Model> model, int slots, int max_context, ThreadPool* pool,
                         bool self_cond_bf16)
    : model_(std::move(model)), self_cond_bf16_(self_cond_bf16) {
  const ModelConfig& cfg = model_->config();
  if (slots < 1) bad("BatchEngine: slots must be >= 1 (got " + std::to_string(slots) + ")");
  B_ = slots;
  L_ = cfg.canvas_length;
  V_ = cfg.n_vocab;
  max_context_ = cfg.context_length > 0 ? std::min(max_context, cfg.context_length) : max_context;
  S_ = Session::create(model_, B_, max_context_);
  if (!pool) own_pool_ = std::make_unique<ThreadPool>(0);
  pool_ = pool ? pool : own_pool_.get();
  const size_t BL = size_t(B_) * L_;
  canvas_.assign(BL, 0);  // free slots denoise a valid all-zero canvas whose result is ignored
  amax_.assign(BL, 0);
  new_amax_.assign(BL, 0);
  sampled_.assign(BL, 0);
  commit_.assign(BL, 0);
  draft_.assign(BL, 0);
  accepted_.assign(BL, 0);
  H_.assign(BL, 0.f);
  T_.assign(B_, 1.f);
  order_.assign(BL, 0);
  enc_rows_.assign(B_, 0);
  sc_.reset(new float[BL * V_]);
  std::fill(sc_.get(), sc_.get() + BL * V_, 0.f);  // finite everywhere, also in free slots
  slot_.resize(B_);
  events_.reserve(size_t(3) * B_);
}

BatchEngine::~BatchEngine() = default;

int BatchEngine::active() const {
  int n = 0;
  for (const Slot& s : slot_) n += s.active;
  return n;
}

int64_t BatchEngine::submit(BatchRequest req) {
  const SamplerParams& p = req.params;
  p.validate();
  if (req.prompt.empty()) bad("the prompt is empty");
  for (int32_t id : req.prompt)
    if (id < 0 || id >= V_)
      bad("prompt has token id " + std::to_string(id) + " outside the vocabulary [0, " + std::to_string(V_) + ")");
  const int64_t n_canvas = (int64_t(p.max_new_tokens) + L_ - 1) / L_;
  const int64_t need = int64_t(req.prompt.size()) + n_canvas * L_;
  if (need > max_context_)
    bad("prompt of " + std::to_string(req.prompt.size()) + " tokens + " + std::to_string(n_canvas) +
        " canvas(es) of " + std::to_string(L_) + " = " + std::to_string(need) +
        " positions does not fit the batch engine's context of " + std::to_string(max_context_));
  const int64_t id = next_id_++;
  queue_.emplace_back(id, std::move(req));
  return id;
}

void BatchEngine::cancel(int64_t id) {
  auto q = std::find_if(queue_.begin(), queue_.end(), [&](const auto& e) { return e.first == id; });
  if (q != queue_.end()) {
    queue_.erase(q);
    return;
  }
  for (Slot& s : slot_)
    if (s.active && s.id == id) s.cancel = true;
}

void BatchEngine::admit(int r, BatchRequest&& req, int64_t id) {
  Slot& s = slot_[r];
  s.active = true;
  s.id = id;
  s.p = std::move(req.params);
  s.want_steps = req.want_steps;
  s.n_canvas = (s.p.max_new_tokens + L_ - 1) / L_;
  s.c = 0;
  s.needs_encode = false;
  s.cancel = false;
  const int s_hist = s.p.adaptive_stopping() ? std::max(0, s.p.stability_threshold) : 0;
  s.history.assign(size_t(s_hist) * L_, -1);
  S_->reset_row(r);
  S_->encode(req.prompt.data(), 1, int(req.prompt.size()), &r);
  start_canvas(r);
}

void BatchEngine::start_canvas(int r) {
  Slot& s = slot_[r];
  int32_t* cv = &canvas_[size_t(r) * L_];
  for (int j = 0; j < L_; ++j) cv[j] = rng_randint(s.p.seed, s.c, 0, DrawPurpose::Init, 0, j, V_);
  std::copy_n(cv, L_, &amax_[size_t(r) * L_]);
  std::fill(s.history.begin(), s.history.end(), -1);
  s.k = 0;
  s.have_sc = false;
  s.finished = false;
}

void BatchEngine::finish(int r, bool cancelled) {
  Slot& s = slot_[r];
  events_.push_back({BatchEvent::Done, s.id, s.c, s.k, L_, nullptr, true, cancelled});
  s.active = false;
  std::fill_n(&canvas_[size_t(r) * L_], L_, 0);
}

void BatchEngine::tick() {
  events_.clear();
  // ---- cancellations, then admissions into free slots ----
  for (int r = 0; r < B_; ++r)
    if (slot_[r].active && slot_[r].cancel) finish(r, true);
  for (int r = 0; r < B_ && !queue_.empty(); ++r) {  // lowest free slots first (see n_rows)
    if (slot_[r].active) continue;
    auto e = std::move(queue_.front());
    queue_.pop_front();
    admit(r, std::move(e.second), e.first);
  }
  bool any_fresh = false, any_sc = false;
  int n_rows = 0, n_fresh = 0;  // passes cover rows 0..n-1: free slots at the end cost nothing
  for (int r = 0; r < B_; ++r) {
    const Slot& s = slot_[r];
    any_fresh |= s.active && !s.have_sc;
    any_sc |= s.active && s.have_sc;
    if (s.active) n_rows = r + 1;
    if (s.active && !s.have_sc) n_fresh = r + 1;
  }
  if (!any_fresh && !any_sc) return;

  // ---- the decoder pass(es): rows at a canvas's first step run without self-conditioning ----
  float* const sc = sc_.get();
  const size_t LV = size_t(L_) * V_;
  const float* logits = nullptr;
  if (any_fresh) {
    logits = S_->denoise_rows(canvas_.data(), nullptr, any_sc ? n_fresh : n_rows);
    if (any_sc)  // park the fresh rows' logits in their own sc rows, which the next pass ignores
      for (int r = 0; r < B_; ++r)
        if (slot_[r].active && !slot_[r].have_sc) std::copy_n(logits + r * LV, LV, sc + r * LV);
  }
  if (any_sc) logits = S_->denoise_rows(canvas_.data(), sc, n_rows);
  const bool parked = any_fresh && any_sc;

  // ---- sample every position of every active row, each row with its own temperature and seed ----
  for (int r = 0; r < B_; ++r) {
    const Slot& s = slot_[r];
    if (s.active) T_[r] = temperature(s.p.t_min, s.p.t_max, s.p.steps - s.k, s.p.steps);
  }
  pool_->parallel_for(n_rows * L_, [&](int i, int) {
    const int r = i / L_, pos = i % L_;
    const Slot& s = slot_[r];
    if (!s.active) return;
    const float* raw = (parked && !s.have_sc ? sc : logits) + size_t(i) * V_;
    float* pl = sc + size_t(i) * V_;
    SampleStream ss{s.p.seed, s.c, s.k, 0, pos};
    TokenStats st = token_stats(raw, T_[r], pl, V_, &ss);
    if (self_cond_bf16_) round_to_bf16(pl, V_);
    new_amax_[i] = st.argmax;
    H_[i] = st.entropy;
    sampled_[i] = st.sample;
  });

  // ---- per row: accept, renoise, stop, commit ----
  int n_enc = 0;
  for (int r = 0; r < B_; ++r) {
    Slot& s = slot_[r];
    if (!s.active) continue;
    const size_t o = size_t(r) * L_;
    auto noise = [&](int j) { return rng_randint(s.p.seed, s.c, s.k, DrawPurpose::Renoise, 0, j, V_); };
    s.mean_H = rowstep::accept_and_renoise(&H_[o], &sampled_[o], L_, s.p.entropy_bound, &accepted_[o], &order_[o],
                                           &canvas_[o], noise);
    if (s.p.adaptive_stopping() && rowstep::stops(&new_amax_[o], L_, s.history.data(), int(s.history.size()) / L_,
                                              size_t(L_), s.mean_H, float(s.p.confidence_threshold)))
      s.finished = true;
    std::copy_n(&new_amax_[o], L_, &amax_[o]);
    s.have_sc = true;
    ++s.k;
    if (s.want_steps) {
      std::copy_n(&amax_[o], L_, &draft_[o]);
      events_.push_back({BatchEvent::Step, s.id, s.c, s.k - 1, L_, &draft_[o], false, false});
    }
    if (!s.finished && s.k < s.p.steps) continue;

    // commit the last argmax; EOS -> pad (keep the first EOS)
    int32_t* row = &commit_[o];
    std::copy_n(&amax_[o], L_, row);
    const int eos_at = rowstep::first_eos(row, L_, s.p.eos_ids);
    if (eos_at >= 0 && s.p.pad_id >= 0) rowstep::pad_after(row, L_, eos_at, s.p.pad_id);
    const bool done = eos_at >= 0 || s.c + 1 >= s.n_canvas;
    events_.push_back({BatchEvent::Canvas, s.id, s.c, s.k, L_, row, done, false});
    if (done) {
      finish(r, false);
      continue;
    }
    enc_rows_[n_enc++] = r;  // the commit enters this row's cache before its next canvas
    ++s.c;
    start_canvas(r);
  }
  // Rows encoded one at a time: each row's pass then has the same shape as in generate() alone.
  for (int e = 0; e < n_enc; ++e) S_->encode(&commit_[size_t(enc_rows_[e]) * L_], 1, L_, &enc_rows_[e]);
}

}  // namespace diffrt

// BatchEngine: the loop of generate.cpp with per-row requests (own params, seed, canvas and step),
// rows joining and leaving at canvas boundaries of a Session allocated once for all slots. The
// step itself (pass + sampler) is the Session's, as in generate().
#include "diffrt/batch_engine.h"

#include <algorithm>
#include <string>

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
  std::vector<int32_t> history;  // [stability_threshold, L] last argmax canvases, oldest first
};

namespace {
[[noreturn]] void bad(const std::string& what) { throw InvalidArgument(what); }
}  // namespace

BatchEngine::BatchEngine(std::shared_ptr<const Model> model, int slots, int max_context, bool self_cond_bf16)
    : BatchEngine(model, make_session(model, slots, max_context), self_cond_bf16) {}

std::unique_ptr<Session> BatchEngine::make_session(const std::shared_ptr<const Model>& model, int slots,
                                                   int max_context) {
  if (!model) bad("BatchEngine: no model");
  if (slots < 1) bad("BatchEngine: slots must be >= 1 (got " + std::to_string(slots) + ")");
  const int ctx = model->config().context_length;
  return Session::create(model, slots, ctx > 0 ? std::min(max_context, ctx) : max_context);
}

BatchEngine::BatchEngine(std::shared_ptr<const Model> model, std::unique_ptr<Session> session, bool self_cond_bf16)
    : model_(std::move(model)), S_(std::move(session)), self_cond_bf16_(self_cond_bf16) {
  const ModelConfig& cfg = model_->config();
  if (!S_) bad("BatchEngine: no session");
  const ModelConfig& sc = S_->config();
  if (sc.canvas_length != cfg.canvas_length || sc.n_vocab != cfg.n_vocab)
    bad("BatchEngine: the session belongs to a model of another shape (canvas " + std::to_string(sc.canvas_length) +
        ", vocabulary " + std::to_string(sc.n_vocab) + ")");
  B_ = S_->batch();
  L_ = cfg.canvas_length;
  V_ = cfg.n_vocab;
  max_context_ = S_->max_context();
  const size_t BL = size_t(B_) * L_;
  commit_.assign(BL, 0);
  draft_.assign(BL, 0);
  init_.assign(size_t(L_), 0);
  rows_.assign(B_, RowStep{});
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
    bad("prompt of " + std::to_string(req.prompt.size()) + " tokens + " + std::to_string(n_canvas) + " canvas(es) of " +
        std::to_string(L_) + " = " + std::to_string(need) + " positions does not fit the batch engine's context of " +
        std::to_string(max_context_));
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
  for (int j = 0; j < L_; ++j) init_[j] = rng_randint(s.p.seed, s.c, 0, DrawPurpose::Init, 0, j, V_);
  S_->start_canvas(r, init_.data());
  std::fill(s.history.begin(), s.history.end(), -1);
  s.k = 0;
  s.have_sc = false;
  s.finished = false;
}

void BatchEngine::finish(int r, bool cancelled) {
  Slot& s = slot_[r];
  events_.push_back({BatchEvent::Done, s.id, s.c, s.k, L_, nullptr, true, cancelled});
  s.active = false;
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
  // ---- one step of every active row, each with its own temperature, stream and self-conditioning ----
  bool any = false;
  for (int r = 0; r < B_; ++r) {
    const Slot& s = slot_[r];
    RowStep& rs = rows_[r];
    rs.active = s.active;
    if (!s.active) continue;
    any = true;
    rs.self_cond = s.have_sc;
    rs.temperature = temperature(s.p.t_min, s.p.t_max, s.p.steps - s.k, s.p.steps);
    rs.entropy_bound = s.p.entropy_bound;
    rs.seed = s.p.seed;
    rs.canvas = s.c;
    rs.step = s.k;
    rs.key = 0;  // draws do not depend on the slot
  }
  if (!any) return;
  const StepView v = S_->step(rows_.data(), self_cond_bf16_);

  // ---- per row: stop, commit ----
  for (int r = 0; r < B_; ++r) {
    Slot& s = slot_[r];
    if (!s.active) continue;
    const size_t o = size_t(r) * L_;
    if (s.p.adaptive_stopping() && rowstep::stops(v.argmax + o, L_, s.history.data(), int(s.history.size()) / L_,
                                                  size_t(L_), v.mean_entropy[r], float(s.p.confidence_threshold)))
      s.finished = true;
    s.have_sc = true;
    ++s.k;
    if (s.want_steps) {
      std::copy_n(v.argmax + o, L_, &draft_[o]);
      events_.push_back({BatchEvent::Step, s.id, s.c, s.k - 1, L_, &draft_[o], false, false});
    }
    if (!s.finished && s.k < s.p.steps) continue;

    // commit the last argmax; EOS -> pad (keep the first EOS)
    int32_t* row = &commit_[o];
    std::copy_n(v.argmax + o, L_, row);
    const int eos_at = rowstep::first_eos(row, L_, s.p.eos_ids);
    if (eos_at >= 0 && s.p.pad_id >= 0) rowstep::pad_after(row, L_, eos_at, s.p.pad_id);
    const bool done = eos_at >= 0 || s.c + 1 >= s.n_canvas;
    events_.push_back({BatchEvent::Canvas, s.id, s.c, s.k, L_, row, done, false});
    if (done) {
      finish(r, false);
      continue;
    }
    // The commit enters this row's cache (a pass of its own: the same shape as in generate()
    // alone) before the row moves on, so a failure cannot leave a row on a canvas without it.
    S_->encode(row, 1, L_, &r);
    ++s.c;
    start_canvas(r);
  }
}

}  // namespace diffrt

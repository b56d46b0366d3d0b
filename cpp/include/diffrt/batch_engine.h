// Canvas-level batching for a server: a fixed number of slots (rows of one Session, allocated up
// front) that requests join and leave at canvas boundaries, all active rows denoised together.
//
// Contract:
//  - Each request has its own SamplerParams, prompt and seed. Its random draws are addressed by
//    (request seed, request-local canvas, step, position) with the row field fixed at 0, so its
//    output does not depend on the slot it occupies or on who else is in the batch, and equals
//    generate() on that prompt alone with the same seed (row 0 of a one-prompt call).
//  - submit() validates (InvalidArgument) and queues; a queued request takes a free slot at the
//    start of the next tick (the slot is reset and the prompt encoded into it).
//  - tick(): one denoising step of every active slot (rows at their own canvas/step). A row whose
//    own stopping rule fires, or which reaches its own step budget, commits its canvas; it starts
//    its next canvas on the next tick, or frees its slot when done (EOS seen or max_new_tokens).
//    Rows at the first step of a canvas get no self-conditioning while the others do (one pass:
//    the Session's step takes it per row).
//  - Requests take the lowest free slot and the decoder pass covers rows 0..(last active row), so
//    free slots at the end cost nothing (free slots in between are computed and ignored).
//  - Events of a tick are kept in events() until the next tick; their token pointers point into
//    the engine's own buffers. A tick allocates nothing (admissions allocate their request state).
//  - Not thread-safe: one caller at a time.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "diffrt/model.h"
#include "diffrt/sampler.h"
#include "diffrt/session.h"

namespace diffrt {

struct BatchRequest {
  std::vector<int32_t> prompt;
  SamplerParams params;     // params.seed is the request's seed
  bool want_steps = false;  // emit a Step event (the draft) after every step
};

struct BatchEvent {
  enum Kind { Step = 0, Canvas = 1, Done = 2 };
  Kind kind;
  int64_t id;
  int canvas;  // request-local canvas index
  int step;    // Step: executed step within the canvas; Canvas: steps it took
  int L;
  const int32_t* tokens;  // Step: draft (argmax) [L]; Canvas: committed tokens after EOS -> pad
  bool done;              // Canvas: the request finishes with it; Done: always
  bool cancelled;         // Done: ended by cancel()
};

class BatchEngine {
 public:
  // A session of `slots` rows on the model's own backend (Session::create).
  BatchEngine(std::shared_ptr<const Model> model, int slots, int max_context, bool self_cond_bf16);
  // The slots are the rows of `session` (any backend: a CUDA session steps on the GPU); `model`
  // gives the configuration.
  BatchEngine(std::shared_ptr<const Model> model, std::unique_ptr<Session> session, bool self_cond_bf16);
  ~BatchEngine();

  int64_t submit(BatchRequest req);  // returns the request id (> 0)
  void cancel(int64_t id);           // queued: dropped; active: freed at the next tick (Done event)
  void tick();                       // see above; no-op when nothing is active or queued
  const std::vector<BatchEvent>& events() const { return events_; }

  int slots() const { return B_; }
  int active() const;
  int queued() const { return int(queue_.size()); }
  bool idle() const { return active() == 0 && queue_.empty(); }

 private:
  struct Slot;
  void admit(int r, BatchRequest&& req, int64_t id);
  void start_canvas(int r);
  void finish(int r, bool cancelled);
  static std::unique_ptr<Session> make_session(const std::shared_ptr<const Model>& model, int slots, int max_context);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<Session> S_;
  int B_, L_, V_, max_context_;
  bool self_cond_bf16_;
  std::vector<Slot> slot_;
  std::deque<std::pair<int64_t, BatchRequest>> queue_;
  std::vector<int64_t> cancel_;  // ids to cancel at the next tick
  int64_t next_id_ = 1;
  // per-tick buffers, allocated once: [B, L] (init_: [L])
  std::vector<int32_t> commit_, draft_, init_;
  std::vector<RowStep> rows_;
  std::vector<BatchEvent> events_;
};

}  // namespace diffrt

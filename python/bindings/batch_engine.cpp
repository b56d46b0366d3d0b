// diffrt._core.BatchEngine: the server's canvas-level batching (diffrt/batch_engine.h). Ticks run
// with the GIL released; events come back as tuples.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <vector>

#include <diffrt/batch_engine.h>
#include <diffrt/error.h>
#include <diffrt/generate.h>

#include "bindings.h"
#include "model.h"
#include "models/diffusion_gemma.h"
#include "sampler_params.h"

namespace {

struct PyBatchEngine {
  std::shared_ptr<diffrt::Model> model;
  std::unique_ptr<diffrt::BatchEngine> engine;
};

PyBatchEngine* make_engine(const PyModel& pm, int slots, int max_context, std::optional<bool> self_cond_bf16) {
  if (!pm.model) throw diffrt::InvalidArgument("BatchEngine: no model");
  const bool bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*pm.model);
  auto* e = new PyBatchEngine{pm.model, nullptr};
  e->engine = std::make_unique<diffrt::BatchEngine>(pm.model, slots, max_context, bf16);
  return e;
}

int64_t submit(PyBatchEngine& e, const std::vector<int32_t>& prompt, std::optional<int> max_new_tokens,
               std::optional<int> steps, std::optional<double> t_min, std::optional<double> t_max,
               std::optional<double> entropy_bound, std::optional<int> stability_threshold,
               std::optional<double> confidence_threshold, std::optional<std::vector<int32_t>> eos_ids,
               std::optional<int32_t> pad_id, uint64_t seed, bool want_steps) {
  diffrt::BatchRequest req;
  req.params = diffrt_py::sampler_params(e.model->config().sampler, max_new_tokens, steps, t_min, t_max, entropy_bound,
                                         stability_threshold, confidence_threshold, eos_ids, pad_id, seed);
  req.prompt = prompt;
  req.want_steps = want_steps;
  return e.engine->submit(std::move(req));
}

// Ticks until some event is ready or nothing is left (at most max_ticks); returns the last tick's
// events as (kind, id, canvas, step, tokens | None, done, cancelled), kind "step"|"canvas"|"done".
nb::list step(PyBatchEngine& e, int max_ticks) {
  diffrt::BatchEngine& eng = *e.engine;
  {
    nb::gil_scoped_release nogil;
    for (int t = 0; t < max_ticks && !eng.idle(); ++t) {
      eng.tick();
      if (!eng.events().empty()) break;
    }
  }
  static const char* kinds[] = {"step", "canvas", "done"};
  nb::list out;
  for (const diffrt::BatchEvent& ev : eng.events()) {
    nb::object toks = nb::none();
    if (ev.tokens) {
      nb::list l;
      for (int j = 0; j < ev.L; ++j) l.append(ev.tokens[j]);
      toks = l;
    }
    out.append(nb::make_tuple(kinds[ev.kind], ev.id, ev.canvas, ev.step, toks, ev.done, ev.cancelled));
  }
  return out;
}

}  // namespace

void register_batch_engine(nb::module_& m) {
  nb::class_<PyBatchEngine>(m, "BatchEngine",
                            "Canvas-level batching: `slots` rows of one Session allocated up front; requests join "
                            "and leave at canvas boundaries (see diffrt/batch_engine.h).")
      .def("__init__",
           [](PyBatchEngine* self, const PyModel& pm, int slots, int max_context, std::optional<bool> bf16) {
             std::unique_ptr<PyBatchEngine> e(make_engine(pm, slots, max_context, bf16));
             new (self) PyBatchEngine{std::move(e->model), std::move(e->engine)};
           },
           nb::arg("model"), nb::arg("slots"), nb::arg("max_context"), nb::arg("self_cond_bf16") = nb::none())
      .def("submit", &submit, nb::arg("prompt"), nb::arg("max_new_tokens") = nb::none(),
           nb::arg("steps") = nb::none(), nb::arg("t_min") = nb::none(), nb::arg("t_max") = nb::none(),
           nb::arg("entropy_bound") = nb::none(), nb::arg("stability_threshold") = nb::none(),
           nb::arg("confidence_threshold") = nb::none(), nb::arg("eos_ids") = nb::none(),
           nb::arg("pad_id") = nb::none(), nb::arg("seed") = 0, nb::arg("want_steps") = false,
           "Queue a request; returns its id. Raises ValueError for bad parameters or a prompt that does not fit.")
      .def("cancel", [](PyBatchEngine& e, int64_t id) { e.engine->cancel(id); }, nb::arg("id"))
      .def("step", &step, nb::arg("max_ticks") = 1 << 30,
           "Run ticks (GIL released) until one yields events or the engine is idle; returns those events.")
      .def_prop_ro("slots", [](const PyBatchEngine& e) { return e.engine->slots(); })
      .def_prop_ro("active", [](const PyBatchEngine& e) { return e.engine->active(); })
      .def_prop_ro("queued", [](const PyBatchEngine& e) { return e.engine->queued(); })
      .def_prop_ro("idle", [](const PyBatchEngine& e) { return e.engine->idle(); });
}

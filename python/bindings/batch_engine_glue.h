// The Python face of diffrt::BatchEngine, shared by _core.BatchEngine (CPU session) and
// _cuda.BatchEngine (GPU session): submit / cancel / step / counters. Ticks run with the GIL
// released; events come back as tuples. Tag keeps the two modules' holder types distinct.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <vector>

#include <diffrt/batch_engine.h>

#include "sampler_params.h"

namespace diffrt_py {

namespace nb = nanobind;

template <int Tag>
struct PyBatchEngine {
  std::shared_ptr<const diffrt::Model> model;  // configuration and sampler defaults
  std::shared_ptr<const void> keep;            // what the session's weights live in (device model)
  std::unique_ptr<diffrt::BatchEngine> engine;
};

// Ticks until some event is ready or nothing is left (at most max_ticks); returns the last tick's
// events as (kind, id, canvas, step, tokens | None, done, cancelled), kind "step"|"canvas"|"done".
inline nb::list engine_step(diffrt::BatchEngine& eng, int max_ticks) {
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

// Everything but __init__ on a nb::class_<PyBatchEngine<Tag>>.
template <int Tag>
void engine_methods(nb::class_<PyBatchEngine<Tag>>& cls) {
  using E = PyBatchEngine<Tag>;
  cls.def(
         "submit",
         [](E& e, const std::vector<int32_t>& prompt, std::optional<int> max_new_tokens, std::optional<int> steps,
            std::optional<double> t_min, std::optional<double> t_max, std::optional<double> entropy_bound,
            std::optional<int> stability_threshold, std::optional<double> confidence_threshold,
            std::optional<std::vector<int32_t>> eos_ids, std::optional<int32_t> pad_id, uint64_t seed,
            bool want_steps) {
           diffrt::BatchRequest req;
           req.params = sampler_params(e.model->config().sampler, max_new_tokens, steps, t_min, t_max, entropy_bound,
                                       stability_threshold, confidence_threshold, eos_ids, pad_id, seed);
           req.prompt = prompt;
           req.want_steps = want_steps;
           return e.engine->submit(std::move(req));
         },
         nb::arg("prompt"), nb::arg("max_new_tokens") = nb::none(), nb::arg("steps") = nb::none(),
         nb::arg("t_min") = nb::none(), nb::arg("t_max") = nb::none(), nb::arg("entropy_bound") = nb::none(),
         nb::arg("stability_threshold") = nb::none(), nb::arg("confidence_threshold") = nb::none(),
         nb::arg("eos_ids") = nb::none(), nb::arg("pad_id") = nb::none(), nb::arg("seed") = 0,
         nb::arg("want_steps") = false,
         "Queue a request; returns its id. Raises ValueError for bad parameters or a prompt that does not fit.")
      .def(
          "cancel", [](E& e, int64_t id) { e.engine->cancel(id); }, nb::arg("id"))
      .def(
          "step", [](E& e, int max_ticks) { return engine_step(*e.engine, max_ticks); }, nb::arg("max_ticks") = 1 << 30,
          "Run ticks (GIL released) until one yields events or the engine is idle; returns those events.")
      .def_prop_ro("slots", [](const E& e) { return e.engine->slots(); })
      .def_prop_ro("active", [](const E& e) { return e.engine->active(); })
      .def_prop_ro("queued", [](const E& e) { return e.engine->queued(); })
      .def_prop_ro("idle", [](const E& e) { return e.engine->idle(); });
}

}  // namespace diffrt_py

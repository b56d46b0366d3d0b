// diffrt._core.BatchEngine: the server's canvas-level batching (diffrt/batch_engine.h) on a CPU
// session; the methods are batch_engine_glue.h's (shared with _cuda.BatchEngine).
#include <nanobind/stl/optional.h>

#include <memory>
#include <optional>

#include <diffrt/batch_engine.h>
#include <diffrt/error.h>
#include <diffrt/generate.h>

#include "batch_engine_glue.h"
#include "bindings.h"
#include "model.h"

void register_batch_engine(nb::module_& m) {
  using E = diffrt_py::PyBatchEngine<0>;
  nb::class_<E> cls(m, "BatchEngine",
                    "Canvas-level batching: `slots` rows of one Session allocated up front; requests join "
                    "and leave at canvas boundaries (see diffrt/batch_engine.h).");
  cls.def(
      "__init__",
      [](E* self, const PyModel& pm, int slots, int max_context, std::optional<bool> self_cond_bf16) {
        if (!pm.model) throw diffrt::InvalidArgument("BatchEngine: no model");
        const bool bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*pm.model);
        auto engine = std::make_unique<diffrt::BatchEngine>(pm.model, slots, max_context, bf16);
        new (self) E{pm.model, nullptr, std::move(engine)};
      },
      nb::arg("model"), nb::arg("slots"), nb::arg("max_context"), nb::arg("self_cond_bf16") = nb::none());
  diffrt_py::engine_methods(cls);
}

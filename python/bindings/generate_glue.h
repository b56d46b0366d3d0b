// What the CPU and CUDA bindings of the generation loop share: Python step/canvas callbacks wired
// into GenerateOptions, and the result dict.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <diffrt/generate.h>
#include <diffrt/sampler.h>

#include "ndarray_util.h"

namespace nb = nanobind;

namespace diffrt_py {

// A Python callback that may raise: the error is kept as the pending Python error and the loop is
// cancelled; the binding re-raises it (throw nb::python_error()) once the loop has returned.
struct CallbackGuard {
  bool failed = false;
  bool call(const nb::object& fn, nb::dict ev) {
    try {
      nb::object r = fn(ev);
      return !(r.is(nb::bool_(false)));
    } catch (nb::python_error& e) {
      e.restore();
      failed = true;
      return false;
    }
  }
};

// The callbacks run on the loop's thread with the GIL released around the loop: each re-acquires it.
// They hold references (copying a Python object without the GIL is not allowed): `guard`, `on_step`
// and `on_canvas` must outlive the generate() call.
inline void wire_callbacks(diffrt::GenerateOptions& opt, CallbackGuard& guard, const nb::object& on_step,
                           const nb::object& on_canvas) {
  if (!on_step.is_none()) {
    opt.on_step = [&guard, &on_step](const diffrt::StepEvent& e) {
      nb::gil_scoped_acquire gil;
      nb::dict d;
      d["kind"] = "step";
      d["canvas"] = e.canvas;
      d["step"] = e.step;
      d["cur_step"] = e.cur_step;
      d["temperature"] = e.temperature;
      d["argmax"] = copy_array(e.argmax, {size_t(e.batch), size_t(e.L)});
      d["accepted"] = copy_array(e.accepted, {size_t(e.batch), size_t(e.L)});
      d["finished"] = copy_array(e.finished, {size_t(e.batch)});
      d["mean_entropy"] = copy_array(e.mean_entropy, {size_t(e.batch)});
      return guard.call(on_step, d);
    };
  }
  if (!on_canvas.is_none()) {
    opt.on_canvas = [&guard, &on_canvas](const diffrt::CanvasEvent& e) {
      nb::gil_scoped_acquire gil;
      nb::dict d;
      d["kind"] = "canvas";
      d["canvas"] = e.canvas;
      d["steps"] = e.steps;
      d["tokens"] = copy_array(e.tokens, {size_t(e.batch), size_t(e.L)});
      d["done"] = copy_array(e.done, {size_t(e.batch)});
      return guard.call(on_canvas, d);
    };
  }
}

inline nb::dict generate_result(const diffrt::GenerateResult& res, const diffrt::SamplerParams& p, int L) {
  nb::dict out;
  nb::list toks;
  for (auto& t : res.tokens) toks.append(nb::cast(t));
  out["tokens"] = toks;
  out["steps"] = nb::cast(res.steps);
  out["decoder_passes"] = nb::cast(res.decoder_passes);
  out["cancelled"] = res.cancelled;
  out["prefill_s"] = res.prefill_s;
  out["encode_s"] = res.encode_s;
  out["denoise_s"] = res.denoise_s;
  out["sampler_s"] = res.sampler_s;
  out["total_s"] = res.total_s;
  out["canvas_length"] = L;
  out["eos_ids"] = nb::cast(p.eos_ids);
  out["pad_id"] = p.pad_id;
  return out;
}

}  // namespace diffrt_py

// diffrt._cuda.Model / Session / random_model / generate and the _cuda._kernels op bindings (tests).
// Every entry point checks shapes before touching the device; CUDA failures raise RuntimeError,
// bad arguments ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <diffrt/error.h>
#include <diffrt/generate.h>

#include "kernels/cuda/cuda_model.h"
#include "kernels/cuda/cuda_session.h"
#include "kernels/cuda/kernels_cuda.h"
#include "models/diffusion_gemma.h"

#include "../batch_engine_glue.h"
#include "../config_dict.h"
#include "../generate_glue.h"
#include "../ndarray_util.h"
#include "../sampler_params.h"

namespace nb = nanobind;
namespace kc = diffrt::kernels::cuda;
using diffrt::InvalidArgument;
using diffrt::cuda::CudaSession;
using diffrt::cuda::DeviceModel;

namespace {

using IdArray = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Array3 = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using I32Array3 = diffrt_py::TapeArray;
using diffrt_py::config_dict;
using diffrt_py::need;
using diffrt_py::zeros_array;

// Config of a random benchmark model from a dict (keys as config_dict; head_dim / n_kv_head may be
// ints, with global_head_dim / n_kv_head_full for the full layers; is_sliding defaults to 5:1).
diffrt::ModelConfig config_from(const nb::dict& d) {
  auto get_i = [&](const char* k, int def) { return d.contains(k) ? nb::cast<int>(d[k]) : def; };
  auto get_f = [&](const char* k, float def) { return d.contains(k) ? nb::cast<float>(d[k]) : def; };
  diffrt::ModelConfig c;
  c.n_layer = get_i("n_layer", 0);
  c.n_embd = get_i("n_embd", 0);
  c.n_ff = get_i("n_ff", 0);
  c.n_head = get_i("n_head", 0);
  c.n_vocab = get_i("n_vocab", 0);
  c.n_expert = get_i("n_expert", 0);
  c.n_expert_used = get_i("n_expert_used", 0);
  c.n_ff_exp = get_i("n_ff_exp", 0);
  c.canvas_length = get_i("canvas_length", 256);
  c.sliding_window = get_i("sliding_window", 1024);
  c.context_length = get_i("context_length", 262144);
  c.rms_eps = get_f("rms_eps", 1e-6f);
  c.final_logit_softcapping = get_f("final_logit_softcapping", 30.f);
  need(c.n_layer > 0, "random_model: n_layer must be > 0");
  if (d.contains("is_sliding")) {
    for (auto v : nb::cast<std::vector<bool>>(d["is_sliding"])) c.is_sliding.push_back(v ? 1 : 0);
  } else {
    for (int i = 0; i < c.n_layer; ++i) c.is_sliding.push_back((i + 1) % 6 != 0 && i + 1 != c.n_layer ? 1 : 0);
  }
  need(int(c.is_sliding.size()) == c.n_layer, "random_model: is_sliding must have n_layer entries");
  auto per_layer = [&](const char* key, const char* full_key, std::vector<int>& out) {
    if (d.contains(key) && nb::isinstance<nb::list>(d[key])) {
      out = nb::cast<std::vector<int>>(d[key]);
      return;
    }
    const int swa = get_i(key, 0), full = get_i(full_key, swa);
    for (int i = 0; i < c.n_layer; ++i) out.push_back(c.is_sliding[i] ? swa : full);
  };
  per_layer("head_dim", "global_head_dim", c.head_dim);
  per_layer("n_kv_head", "n_kv_head_full", c.n_kv_head);
  need(int(c.head_dim.size()) == c.n_layer && int(c.n_kv_head.size()) == c.n_layer, "random_model: per-layer sizes");
  for (int i = 0; i < c.n_layer; ++i)
    need(c.head_dim[i] > 0 && c.head_dim[i] <= 512 && c.head_dim[i] % 2 == 0 && c.n_kv_head[i] > 0 &&
             c.n_head % c.n_kv_head[i] == 0,
         "random_model: bad head geometry");
  return c;
}

struct PyCudaModel {
  std::shared_ptr<DeviceModel> m;
};

struct PyCudaSession {
  std::shared_ptr<DeviceModel> model;
  std::unique_ptr<CudaSession> s;
};

}  // namespace

void register_cuda_kernels(nb::module_& parent);

void register_cuda_engine(nb::module_& m) {
  nb::class_<PyCudaModel>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path, const std::string& compute_type) {
            const diffrt::ComputeType ct = diffrt::parse_compute_type(compute_type, diffrt::Device::Cuda);
            PyCudaModel pm;
            nb::gil_scoped_release nogil;
            pm.m = DeviceModel::from_file(path, ct);
            return pm;
          },
          nb::arg("path"), nb::arg("compute_type") = "auto")
      .def("config", [](const PyCudaModel& m) { return config_dict(m.m->config()); })
      .def_prop_ro("compute_type", [](const PyCudaModel& m) { return diffrt::compute_type_name(m.m->compute_type()); })
      .def_prop_ro("weight_bytes", [](const PyCudaModel& m) { return m.m->weight_bytes(); });

  m.def(
      "random_model",
      [](nb::dict cfg, const std::string& dtype, uint64_t seed) {
        diffrt::ModelConfig c = config_from(cfg);
        const diffrt::ComputeType ct = diffrt::parse_compute_type(dtype, diffrt::Device::Cuda);
        if (ct == diffrt::ComputeType::Auto)
          throw diffrt::InvalidArgument("random_model: dtype must be a concrete compute type, not 'auto'");
        PyCudaModel pm;
        nb::gil_scoped_release nogil;
        pm.m = DeviceModel::random(c, ct, seed);
        return pm;
      },
      nb::arg("config"), nb::arg("dtype") = "bf16", nb::arg("seed") = 0,
      "A model of the given shape with random weights made on the device (benchmarks).");

  nb::class_<PyCudaSession>(m, "Session")
      .def(
          "__init__",
          [](PyCudaSession* self, const PyCudaModel& m, int batch, int max_context) {
            new (self) PyCudaSession();
            self->model = m.m;
            nb::gil_scoped_release nogil;
            self->s = std::make_unique<CudaSession>(m.m, batch, max_context);
          },
          nb::arg("model"), nb::arg("batch"), nb::arg("max_context"))
      .def_prop_ro("batch", [](const PyCudaSession& s) { return s.s->batch(); })
      .def_prop_ro("max_context", [](const PyCudaSession& s) { return s.s->max_context(); })
      .def_prop_ro("device_bytes", [](const PyCudaSession& s) { return s.s->device_bytes(); })
      .def_prop_ro("graph_used", [](const PyCudaSession& s) { return s.s->graph_used(); })
      .def(
          "n_cached", [](const PyCudaSession& s, int row) { return s.s->n_cached(row); }, nb::arg("row") = 0)
      .def("reset", [](PyCudaSession& s) { s.s->reset(); })
      .def("reset_row", [](PyCudaSession& s, int row) { s.s->reset_row(row); })
      .def(
          "encode",
          [](PyCudaSession& s, IdArray ids, std::vector<int> rows) {
            const int n_rows = int(ids.shape(0)), T = int(ids.shape(1));
            if (!rows.empty() && int(rows.size()) != n_rows)
              throw InvalidArgument("encode: " + std::to_string(rows.size()) + " row indices for " +
                                    std::to_string(n_rows) + " rows of ids");
            nb::gil_scoped_release nogil;
            s.s->encode(ids.data(), n_rows, T, rows.empty() ? nullptr : rows.data());
          },
          nb::arg("ids"), nb::arg("rows") = std::vector<int>{})
      .def(
          "denoise",
          [](PyCudaSession& s, IdArray canvas, std::optional<F32Array3> self_cond) {
            const auto& c = s.model->config();
            const size_t B = size_t(s.s->batch()), L = size_t(c.canvas_length), V = size_t(c.n_vocab);
            if (canvas.shape(0) != B || canvas.shape(1) != L)
              throw InvalidArgument("denoise: canvas must be [" + std::to_string(B) + ", " + std::to_string(L) + "]");
            if (self_cond && (self_cond->shape(0) != B || self_cond->shape(1) != L || self_cond->shape(2) != V))
              throw InvalidArgument("denoise: self_cond_logits must be [" + std::to_string(B) + ", " +
                                    std::to_string(L) + ", " + std::to_string(V) + "]");
            auto out = zeros_array<float>({B, L, V});
            {
              nb::gil_scoped_release nogil;
              const float* logits = s.s->denoise(canvas.data(), self_cond ? self_cond->data() : nullptr);
              std::memcpy(out.data(), logits, sizeof(float) * B * L * V);
            }
            return out;
          },
          nb::arg("canvas"), nb::arg("self_cond").none() = nb::none())
      .def(
          "set_canvas",
          [](PyCudaSession& s, IdArray canvas) {
            const auto& c = s.model->config();
            need(canvas.shape(0) == size_t(s.s->batch()) && canvas.shape(1) == size_t(c.canvas_length),
                 "set_canvas: canvas must be [batch, L]");
            s.s->set_canvas(canvas.data());
          },
          nb::arg("canvas"))
      .def(
          "random_canvas", [](PyCudaSession& s, int canvas, uint64_t seed) { s.s->random_canvas(canvas, seed); },
          nb::arg("canvas"), nb::arg("seed"))
      .def(
          "step",
          [](PyCudaSession& s, int canvas, int step, float temperature, uint64_t seed, double entropy_bound,
             bool self_cond, bool round_sc_bf16, bool graph) {
            diffrt::cuda::StepParams p;
            p.canvas = canvas;
            p.step = step;
            p.temperature = temperature;
            p.seed = seed;
            p.entropy_bound = entropy_bound;
            p.self_cond = self_cond;
            p.round_sc_bf16 = round_sc_bf16;
            nb::gil_scoped_release nogil;
            s.s->step_all(p, graph);
          },
          nb::arg("canvas"), nb::arg("step"), nb::arg("temperature"), nb::arg("seed"), nb::arg("entropy_bound"),
          nb::arg("self_cond"), nb::arg("round_sc_bf16") = false, nb::arg("graph") = false,
          "One denoising step on the device canvas (decoder + sampler + acceptance + renoise).")
      .def(
          "read_step",
          [](PyCudaSession& s, bool logits) {
            const auto& c = s.model->config();
            const size_t B = size_t(s.s->batch()), L = size_t(c.canvas_length), V = size_t(c.n_vocab);
            auto canvas = zeros_array<int32_t>({B, L});
            auto amax = zeros_array<int32_t>({B, L});
            auto H = zeros_array<float>({B, L});
            auto acc = zeros_array<uint8_t>({B, L});
            auto smp = zeros_array<int32_t>({B, L});
            nb::dict d;
            if (logits) {
              auto lg = zeros_array<float>({B, L, V});
              s.s->read_step(canvas.data(), amax.data(), H.data(), acc.data(), smp.data(), lg.data());
              d["logits"] = lg;
            } else {
              s.s->read_step(canvas.data(), amax.data(), H.data(), acc.data(), smp.data(), nullptr);
            }
            d["canvas"] = canvas;
            d["argmax"] = amax;
            d["entropy"] = H;
            d["accepted"] = acc;
            d["sampled"] = smp;
            return d;
          },
          nb::arg("logits") = false)
      .def(
          "time_steps",
          [](PyCudaSession& s, int n, float temperature, uint64_t seed, double entropy_bound, bool graph) {
            diffrt::cuda::StepParams p;
            p.temperature = temperature;
            p.seed = seed;
            p.entropy_bound = entropy_bound;
            p.self_cond = true;
            nb::gil_scoped_release nogil;
            return s.s->time_steps(n, p, graph);
          },
          nb::arg("n"), nb::arg("temperature") = 0.8f, nb::arg("seed") = 0, nb::arg("entropy_bound") = 0.1,
          nb::arg("graph") = true, "Mean ms per self-conditioned device step over n steps (after a warm-up step).")
      .def(
          "profile_step",
          [](PyCudaSession& s, float temperature, uint64_t seed, double entropy_bound, bool self_cond) {
            diffrt::cuda::StepParams p;
            p.temperature = temperature;
            p.seed = seed;
            p.entropy_bound = entropy_bound;
            p.self_cond = self_cond;
            std::vector<diffrt::cuda::OpProfile> prof;
            {
              nb::gil_scoped_release nogil;
              prof = s.s->profile_step(p);
            }
            nb::list out;
            for (const auto& o : prof) out.append(nb::make_tuple(o.name, o.ms, o.calls));
            return out;
          },
          nb::arg("temperature") = 0.8f, nb::arg("seed") = 0, nb::arg("entropy_bound") = 0.1,
          nb::arg("self_cond") = true, "One step of plain launches timed op by op: [(op, ms, calls)], most time first.")
      .def(
          "generate",
          [](PyCudaSession& s, const std::vector<std::vector<int32_t>>& prompts, std::optional<int> max_new_tokens,
             std::optional<int> steps, std::optional<double> t_min, std::optional<double> t_max,
             std::optional<double> entropy_bound, std::optional<int> stability_threshold,
             std::optional<double> confidence_threshold, std::optional<std::vector<int32_t>> eos_ids,
             std::optional<int32_t> pad_id, uint64_t seed, std::optional<I32Array3> tape_init,
             std::optional<I32Array3> tape_samples, std::optional<I32Array3> tape_renoise,
             std::optional<bool> self_cond_bf16, nb::object on_step, nb::object on_canvas) {
            const diffrt::dg::DiffusionGemma* host = s.model->host();
            if (!host) throw InvalidArgument("generate: needs a model loaded from a file");
            const diffrt::ModelConfig& cfg = host->config();
            const diffrt::SamplerParams p =
                diffrt_py::sampler_params(cfg.sampler, max_new_tokens, steps, t_min, t_max, entropy_bound,
                                          stability_threshold, confidence_threshold, eos_ids, pad_id, seed);
            diffrt::GenerateOptions opt;
            opt.self_cond_bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*host);
            const size_t B = prompts.size(), L = size_t(cfg.canvas_length);
            diffrt_py::set_tape(opt.tape, tape_init, tape_samples, tape_renoise, int(B), int(L));
            diffrt_py::CallbackGuard guard;
            diffrt_py::wire_callbacks(opt, guard, on_step, on_canvas);
            diffrt::GenerateResult r;
            {
              nb::gil_scoped_release nogil;
              r = diffrt::generate(*s.s, *host, prompts, p, opt);
            }
            if (guard.failed) throw nb::python_error();
            return diffrt_py::generate_result(r, p, int(L));
          },
          nb::arg("prompts"), nb::arg("max_new_tokens").none() = nb::none(), nb::arg("steps").none() = nb::none(),
          nb::arg("t_min").none() = nb::none(), nb::arg("t_max").none() = nb::none(),
          nb::arg("entropy_bound").none() = nb::none(), nb::arg("stability_threshold").none() = nb::none(),
          nb::arg("confidence_threshold").none() = nb::none(), nb::arg("eos_ids").none() = nb::none(),
          nb::arg("pad_id").none() = nb::none(), nb::arg("seed") = 0, nb::arg("tape_init").none() = nb::none(),
          nb::arg("tape_samples").none() = nb::none(), nb::arg("tape_renoise").none() = nb::none(),
          nb::arg("self_cond_bf16").none() = nb::none(), nb::arg("on_step") = nb::none(),
          nb::arg("on_canvas") = nb::none(),
          "The C++ generation loop (runtime/generate.cpp) on this GPU session: every step runs on the device.");

  using Engine = diffrt_py::PyBatchEngine<1>;
  nb::class_<Engine> engine(m, "BatchEngine",
                            "Canvas-level batching on a GPU session: as _core.BatchEngine, every step on the device.");
  engine.def(
      "__init__",
      [](Engine* self, const PyCudaModel& m, int slots, int max_context, std::optional<bool> self_cond_bf16) {
        auto host = m.m->host_model();
        if (!host) throw InvalidArgument("BatchEngine: needs a model loaded from a file");
        if (slots < 1) throw InvalidArgument("BatchEngine: slots must be >= 1 (got " + std::to_string(slots) + ")");
        const int ctx = host->config().context_length;
        const bool bf16 = self_cond_bf16 ? *self_cond_bf16 : diffrt::default_self_cond_bf16(*host);
        std::unique_ptr<diffrt::BatchEngine> e;
        {
          nb::gil_scoped_release nogil;
          auto session = std::make_unique<CudaSession>(m.m, slots, ctx > 0 ? std::min(max_context, ctx) : max_context);
          e = std::make_unique<diffrt::BatchEngine>(host, std::move(session), bf16);
        }
        new (self) Engine{host, m.m, std::move(e)};
      },
      nb::arg("model"), nb::arg("slots"), nb::arg("max_context"), nb::arg("self_cond_bf16") = nb::none());
  diffrt_py::engine_methods(engine);

  register_cuda_kernels(m);
}

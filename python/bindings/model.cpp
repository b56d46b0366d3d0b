// diffrt._core.Model / _core.Session: the CPU engine (load, encode, denoise) for Python, plus
// _core.cpu_info(), _core._debug_alloc_count() and the _core._kernels test bindings.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <diffrt/error.h>

#include "bindings.h"
#include "config_dict.h"
#include "core/alloc_counter.h"
#include "core/cpu_features.h"
#include "model.h"
#include "models/architectures.h"
#include "ndarray_util.h"
#include "runtime/cpu_session.h"

namespace {

using IdArray = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Array3 = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using F32OutArray3 = nb::ndarray<float, nb::numpy, nb::ndim<3>, nb::c_contig, nb::device::cpu>;

using diffrt_py::config_dict;
using diffrt_py::empty_array;

diffrt::CpuSession& cpu(PySession& s) { return static_cast<diffrt::CpuSession&>(*s.session); }

}  // namespace

void register_kernels(nb::module_& m);

void register_model(nb::module_& m) {
  m.def(
      "cpu_info",
      [] {
        nb::dict d;
        d["features"] = diffrt::cpu_features().describe();
        d["best_path"] = diffrt::cpu_path_name(diffrt::best_cpu_path());
        d["path"] = diffrt::cpu_path_name(diffrt::cpu_path());
        return d;
      },
      "CPU features found at run time, the best kernel path and the one in use (DIFFRT_CPU_PATH).");
  m.def(
      "compute_types",
      [](const std::string& device) {
        diffrt::Device d = device == "cuda" ? diffrt::Device::Cuda : diffrt::Device::Cpu;
        if (device != "cpu" && device != "cuda")
          throw diffrt::InvalidArgument("device must be 'cpu' or 'cuda', got '" + device + "'");
        std::vector<std::string> names;
        for (diffrt::ComputeType t : diffrt::supported_compute_types(d)) names.push_back(diffrt::compute_type_name(t));
        return names;
      },
      nb::arg("device") = "cpu", "The compute types a device takes, \"auto\" first (diffrt/compute_type.h).");
  m.def(
      "architectures",
      [] {
        std::vector<std::string> names;
        for (const diffrt::Architecture& a : diffrt::architectures()) names.push_back(a.name);
        return names;
      },
      "The general.architecture values this build runs (models/architectures.h).");
  m.def(
      "_debug_alloc_count", [] { return diffrt::alloc_count(); },
      "Number of global operator new calls in this process so far.");

  nb::class_<PyModel>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path, int threads, const std::string& compute_type) {
            diffrt::LoadOptions opt;
            opt.threads = threads;
            opt.compute_type = diffrt::parse_compute_type(compute_type, diffrt::Device::Cpu);
            PyModel pm;
            {
              nb::gil_scoped_release nogil;
              pm.model = diffrt::Model::load(path, opt);
            }
            return pm;
          },
          nb::arg("path"), nb::arg("threads") = 0, nb::arg("compute_type") = "auto")
      .def("config", [](const PyModel& m) { return config_dict(m.model->config()); })
      .def_prop_ro("compute_type", [](const PyModel& m) { return diffrt::compute_type_name(m.model->compute_type()); })
      .def_prop_ro("threads", [](const PyModel& m) {
        return static_cast<const diffrt::dg::DiffusionGemma&>(*m.model).pool().size();
      });

  nb::class_<PySession>(m, "Session")
      .def(
          "__init__",
          [](PySession* self, const PyModel& m, int batch, int max_context) {
            new (self) PySession();
            self->model = m.model;
            nb::gil_scoped_release nogil;
            self->session = diffrt::Session::create(m.model, batch, max_context);
          },
          nb::arg("model"), nb::arg("batch"), nb::arg("max_context"))
      .def_prop_ro("batch", [](const PySession& s) { return s.session->batch(); })
      .def_prop_ro("max_context", [](const PySession& s) { return s.session->max_context(); })
      .def(
          "n_cached", [](const PySession& s, int row) { return s.session->n_cached(row); }, nb::arg("row") = 0)
      .def("reset", [](PySession& s) { s.session->reset(); })
      .def("reset_row", [](PySession& s, int row) { s.session->reset_row(row); })
      .def(
          "encode",
          [](PySession& s, IdArray ids, std::vector<int> rows) {
            const int n_rows = int(ids.shape(0)), T = int(ids.shape(1));
            if (!rows.empty() && int(rows.size()) != n_rows)
              throw diffrt::InvalidArgument("encode: " + std::to_string(rows.size()) + " row indices for " +
                                            std::to_string(n_rows) + " rows of ids");
            nb::gil_scoped_release nogil;
            s.session->encode(ids.data(), n_rows, T, rows.empty() ? nullptr : rows.data());
          },
          nb::arg("ids"), nb::arg("rows") = std::vector<int>{})
      .def(
          "denoise",
          [](PySession& s, IdArray canvas, std::optional<F32Array3> self_cond,
             std::optional<F32OutArray3> out_arg) -> nb::object {
            const auto& c = s.model->config();
            const size_t B = size_t(s.session->batch()), L = size_t(c.canvas_length), V = size_t(c.n_vocab);
            if (canvas.shape(0) != B || canvas.shape(1) != L)
              throw diffrt::InvalidArgument("denoise: canvas must be [" + std::to_string(B) + ", " + std::to_string(L) +
                                            "]");
            if (self_cond && (self_cond->shape(0) != B || self_cond->shape(1) != L || self_cond->shape(2) != V))
              throw diffrt::InvalidArgument("denoise: self_cond_logits must be [" + std::to_string(B) + ", " +
                                            std::to_string(L) + ", " + std::to_string(V) + "]");
            // out: a caller's float32 [B, L, V] buffer reused across steps (no fresh 32 MB array,
            // and no page faults on it, per step).
            if (out_arg && (out_arg->shape(0) != B || out_arg->shape(1) != L || out_arg->shape(2) != V))
              throw diffrt::InvalidArgument("denoise: out must be float32 [" + std::to_string(B) + ", " +
                                            std::to_string(L) + ", " + std::to_string(V) + "]");
            if (out_arg) {
              {
                nb::gil_scoped_release nogil;
                const float* logits = s.session->denoise(canvas.data(), self_cond ? self_cond->data() : nullptr);
                std::memcpy(out_arg->data(), logits, sizeof(float) * B * L * V);
              }
              return nb::cast(*out_arg);
            }
            auto out = empty_array<float>({B, L, V});
            {
              nb::gil_scoped_release nogil;
              const float* logits = s.session->denoise(canvas.data(), self_cond ? self_cond->data() : nullptr);
              std::memcpy(out.data(), logits, sizeof(float) * B * L * V);
            }
            return nb::cast(out);
          },
          nb::arg("canvas"), nb::arg("self_cond").none() = nb::none(), nb::arg("out").none() = nb::none())
      .def(
          "_debug_denoise_allocs",
          [](PySession& s, IdArray canvas, int n, std::optional<F32Array3> self_cond) {
            // Runs n denoising steps in C++ and returns the operator-new calls they made.
            const auto& c = s.model->config();
            const size_t B = size_t(s.session->batch()), L = size_t(c.canvas_length), V = size_t(c.n_vocab);
            if (canvas.shape(0) != B || canvas.shape(1) != L) throw diffrt::InvalidArgument("canvas shape");
            if (self_cond && (self_cond->shape(0) != B || self_cond->shape(1) != L || self_cond->shape(2) != V))
              throw diffrt::InvalidArgument("self_cond shape");
            const float* sc = self_cond ? self_cond->data() : nullptr;
            nb::gil_scoped_release nogil;
            uint64_t before = diffrt::alloc_count();
            for (int i = 0; i < n; ++i) s.session->denoise(canvas.data(), sc);
            return diffrt::alloc_count() - before;
          },
          nb::arg("canvas"), nb::arg("n"), nb::arg("self_cond").none() = nb::none())
      .def(
          "_debug_encode_allocs",
          [](PySession& s, IdArray ids) {
            // Runs one encoder pass in C++ and returns the operator-new calls it made.
            const int n_rows = int(ids.shape(0)), T = int(ids.shape(1));
            nb::gil_scoped_release nogil;
            uint64_t before = diffrt::alloc_count();
            s.session->encode(ids.data(), n_rows, T, nullptr);
            return diffrt::alloc_count() - before;
          },
          nb::arg("ids"))
      .def(
          "_capture",
          [](PySession& s, bool on) {
            if (!on) {
              cpu(s).set_debug_hook(nullptr);
              return;
            }
            s.dumps = std::make_shared<std::map<std::string, std::vector<float>>>();
            auto store = s.dumps;
            cpu(s).set_debug_hook([store](const std::string& name, const float* d, int64_t rows, int64_t cols) {
              (*store)[name].assign(d, d + rows * cols);
            });
          },
          nb::arg("on"), "Capture per-layer outputs of the following passes (read them with _dumps()).")
      .def(
          "_kv",
          [](PySession& s, int layer, int row) {
            // The cache entries held for (layer, row): K and V as [kv, n, hd] (n = T, or min(T, W-1)).
            const auto& cs = cpu(s);
            const auto& lw = cs.model().layers();
            if (layer < 0 || layer >= int(lw.size())) throw diffrt::InvalidArgument("layer out of range");
            const int T = cs.n_cached(row);
            const auto& L = lw[layer];
            const auto& c = cs.cache();
            const int n = L.sliding ? std::min(T, cs.model().config().sliding_window - 1) : T;
            const size_t kv = size_t(L.n_kv), hd = size_t(L.head_dim);
            auto k = empty_array<float>({kv, size_t(n), hd});
            auto v = empty_array<float>({kv, size_t(n), hd});
            for (size_t j = 0; j < kv; ++j) {
              const int64_t off = row * c.row_stride(layer, L) + int64_t(j) * c.cap[layer] * hd;
              std::memcpy(k.data() + j * n * hd, c.k[layer] + off, sizeof(float) * n * hd);
              std::memcpy(v.data() + j * n * hd, c.v[layer] + off, sizeof(float) * n * hd);
            }
            return nb::make_tuple(k, v);
          },
          nb::arg("layer"), nb::arg("row") = 0)
      .def(
          "_load_kv",
          [](PySession& s, int layer, int row, int T, F32Array3 k, F32Array3 v) {
            const auto& lw = cpu(s).model().layers();
            if (layer < 0 || layer >= int(lw.size())) throw diffrt::InvalidArgument("layer out of range");
            const auto& L = lw[layer];
            const size_t n = L.sliding ? size_t(std::min(T, cpu(s).model().config().sliding_window - 1)) : size_t(T);
            for (const auto* a : {&k, &v})
              if (a->shape(0) != size_t(L.n_kv) || a->shape(1) != n || a->shape(2) != size_t(L.head_dim))
                throw diffrt::InvalidArgument("_load_kv: k/v must be [kv, n_held, hd]");
            cpu(s).load_cache(layer, row, T, k.data(), v.data());
          },
          nb::arg("layer"), nb::arg("row"), nb::arg("T"), nb::arg("k"), nb::arg("v"),
          "Test support: replace the cache of (layer, row) by reference K/V and set its length to T.")
      .def("_dumps", [](PySession& s) {
        nb::dict d;
        if (!s.dumps) return d;
        for (auto& [name, v] : *s.dumps) {
          auto a = empty_array<float>({v.size()});
          std::memcpy(a.data(), v.data(), v.size() * sizeof(float));
          d[name.c_str()] = a;
        }
        return d;
      });

  register_kernels(m);
}

// diffrt._core._fast_gemm: the packed bf16/int8 GEMMs, for tests and the GEMM microbenchmark.
// Not an API: shapes are checked only as far as needed to stay memory-safe.
#include <diffrt/error.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstring>
#include <string>

#include "bindings.h"
#include "core/cpu_features.h"
#include "kernels/cpu/pack.h"
#include "raw_matrix.h"

namespace {

using namespace diffrt;
using F32 = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using U8 = nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

CpuPath path_of(const std::string& s) {
  if (s == "portable") return CpuPath::Portable;
  if (s == "neon") return CpuPath::Neon;
  if (s == "avx2") return CpuPath::Avx2;
  if (s == "avx512") return CpuPath::Avx512;
  if (s == "amx") return CpuPath::Amx;
  if (s.empty() || s == "auto") return cpu_path();
  throw InvalidArgument("unknown cpu path " + s);
}

// A packed weight: packing copies, so the numpy array it came from need not outlive it.
struct Packed {
  kernels::PackedMatrix p;
};

}  // namespace

void register_fast_gemm(nb::module_& parent) {
  nb::module_ m = parent.def_submodule("_fast_gemm", "packed bf16/int8 CPU GEMMs, for tests and benchmarks");
  m.def("best_path", [] { return std::string(cpu_path_name(best_cpu_path())); });

  nb::class_<Packed>(m, "Packed")
      // w: raw stored rows ([n][row_bytes], or [k][row_bytes] when kn) of a `type` matrix.
      .def(
          "__init__",
          [](Packed* self, U8 w, const std::string& type, int64_t n, int64_t k, bool kn, const std::string& kind) {
            kernels::Matrix mat = diffrt_py::raw_matrix(w.data(), w.shape(1), type, n, k, kn);
            if (n <= 0 || k <= 0 || int64_t(w.shape(0)) != (kn ? k : n) ||
                mat.row_bytes < ggml_row_bytes(mat.type, kn ? n : k))
              throw InvalidArgument("Packed: w does not hold a [" + std::to_string(n) + ", " + std::to_string(k) +
                                    "] " + type);
            new (self) Packed();
            if (kind == "bf16")
              self->p = kernels::pack_bf16(pool(), mat);
            else if (kind == "int8")
              self->p = kernels::pack_int8(pool(), mat);
            else if (kind == "w8a16")
              self->p = kernels::pack_w8a16(pool(), mat);
            else
              throw InvalidArgument("Packed: kind must be bf16, int8 or w8a16, not " + kind);
          },
          nb::arg("w"), nb::arg("type"), nb::arg("n"), nb::arg("k"), nb::arg("kn") = false, nb::arg("kind") = "bf16")
      .def_prop_ro("nbytes", [](const Packed& s) { return s.p.bytes(); })
      // The path a call with `path` really runs on this CPU.
      .def(
          "path",
          [](const Packed& s, const std::string& path) {
            return std::string(cpu_path_name(kernels::packed_gemm_path(s.p.kind, path_of(path))));
          },
          nb::arg("path") = "auto")
      // y = x · Wᵀ; `out` (optional [M, n] f32) is overwritten and returned, so a benchmark allocates nothing.
      .def(
          "gemm",
          [](const Packed& s, F32 x, const std::string& path, int repeat) {
            if (int64_t(x.shape(1)) != s.p.k) throw InvalidArgument("gemm: x must be [M, k]");
            const int64_t M = x.shape(0), n = s.p.n;
            float* y = new float[size_t(M * n)];
            nb::capsule owner(y, [](void* p) noexcept { delete[] static_cast<float*>(p); });
            CpuPath cp = path_of(path);
            {
              nb::gil_scoped_release nogil;
              for (int r = 0; r < std::max(1, repeat); ++r)
                kernels::gemm_packed(pool(), x.data(), s.p.k, M, s.p, y, n, cp);
            }
            size_t shape[2] = {size_t(M), size_t(n)};
            return nb::ndarray<nb::numpy, float>(y, 2, shape, owner);
          },
          nb::arg("x"), nb::arg("path") = "auto", nb::arg("repeat") = 1);
}

// diffrt._core.sampler: the sampler primitives, exposed for unit and statistical tests.
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <vector>

#include <diffrt/error.h>
#include <diffrt/sampler.h>

#include "bindings.h"
#include "sampler_params.h"

namespace {

using F32Rows = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32Vec = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <typename T>
nb::ndarray<nb::numpy, T> owned(std::vector<T>&& v, std::initializer_list<size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule del(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(heap->data(), shape, del);
}

}  // namespace

void register_sampler(nb::module_& root) {
  nb::module_ m = root.def_submodule("sampler", "sampler primitives (for tests)");

  m.def(
      "check_params",
      [](int max_new_tokens, int steps, double t_min, double t_max, double entropy_bound, int stability_threshold,
         double confidence_threshold) {
        diffrt_py::sampler_params({}, max_new_tokens, steps, t_min, t_max, entropy_bound, stability_threshold,
                                  confidence_threshold, std::nullopt, std::nullopt, 0)
            .validate();
      },
      nb::arg("max_new_tokens"), nb::arg("steps"), nb::arg("t_min"), nb::arg("t_max"), nb::arg("entropy_bound"),
      nb::arg("stability_threshold"), nb::arg("confidence_threshold"),
      "SamplerParams::validate(): ValueError naming the first bad setting (diffrt/sampler.h).");
  m.def("temperature", &diffrt::temperature, nb::arg("t_min"), nb::arg("t_max"), nb::arg("cur_step"),
        nb::arg("n_steps"));

  m.def("randint", [](uint64_t seed, int canvas, int step, int purpose, int row, int pos, int32_t n) {
    if (n < 1) throw diffrt::InvalidArgument("randint: n must be >= 1");
    return diffrt::rng_randint(seed, canvas, step, diffrt::DrawPurpose(purpose), row, pos, n);
  });

  // Per row of `raw` [n, V]: (pl [n, V], argmax [n], entropy [n], sample [n]); row i draws from the
  // stream (seed, canvas, step, row=i // L, pos=i % L).
  m.def(
      "token_stats",
      [](F32Rows raw, float T, uint64_t seed, int canvas, int step, int L) {
        const size_t n = raw.shape(0), V = raw.shape(1);
        std::vector<float> pl(n * V), H(n);
        std::vector<int32_t> amax(n), smp(n);
        {
          nb::gil_scoped_release nogil;
          for (size_t i = 0; i < n; ++i) {
            diffrt::SampleStream ss{seed, canvas, step, int(i / L), int(i % L)};
            auto st = diffrt::token_stats(raw.data() + i * V, T, pl.data() + i * V, int(V), &ss);
            amax[i] = st.argmax;
            H[i] = st.entropy;
            smp[i] = st.sample;
          }
        }
        return std::make_tuple(owned(std::move(pl), {n, V}), owned(std::move(amax), {n}), owned(std::move(H), {n}),
                               owned(std::move(smp), {n}));
      },
      nb::arg("raw"), nb::arg("T"), nb::arg("seed") = 0, nb::arg("canvas") = 0, nb::arg("step") = 0,
      nb::arg("L") = 1 << 16);

  // n draws from softmax(logits) using streams (seed, canvas=0, step=d // 65536, row=0, pos=d % 65536).
  m.def("multinomial_many", [](F32Vec logits, uint64_t seed, int n) {
    std::vector<int32_t> out(static_cast<size_t>(n));
    {
      nb::gil_scoped_release nogil;
      for (int d = 0; d < n; ++d)
        out[d] = diffrt::rng_multinomial(seed, 0, d >> 16, 0, d & 0xFFFF, logits.data(), int(logits.shape(0)));
    }
    return owned(std::move(out), {size_t(n)});
  });

  m.def("accept", [](F32Vec H, double bound) {
    const size_t L = H.shape(0);
    std::vector<uint8_t> acc(L);
    std::vector<int> scratch(L);
    diffrt::accept_by_entropy(H.data(), int(L), bound, acc.data(), scratch.data());
    return owned(std::move(acc), {L});
  });

  m.def("round_to_bf16", [](F32Vec x) {
    std::vector<float> v(x.data(), x.data() + x.shape(0));
    diffrt::round_to_bf16(v.data(), int64_t(v.size()));
    return owned(std::move(v), {x.shape(0)});
  });
}

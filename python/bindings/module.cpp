// diffrt._core: the CPU engine's Python module.
#include "bindings.h"

NB_MODULE(_core, m) {
  m.doc() = "diffrt CPU core";
  register_errors(m);
  register_gguf(m);
  register_model(m);
  register_sampler(m);
  register_generate(m);
  register_batch_engine(m);
  register_fast_gemm(m);
}

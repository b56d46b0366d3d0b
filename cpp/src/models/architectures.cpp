// The architecture table (models/architectures.h).
#include "models/architectures.h"

#include "diffrt/error.h"
#include "format/gguf_names.h"
#include "models/diffusion_gemma.h"
#include "runtime/cpu_session.h"

namespace diffrt {
namespace {

std::unique_ptr<Session> diffusion_gemma_session(std::shared_ptr<const Model> model, int batch, int max_context) {
  auto m = std::dynamic_pointer_cast<const dg::DiffusionGemma>(model);
  if (!m) throw InvalidArgument("Session::create: the model is not a DiffusionGemma model");
  return std::make_unique<CpuSession>(std::move(m), batch, max_context);
}

}  // namespace

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {names::ARCH,
       [](const std::string& path, const LoadOptions& opt) -> std::shared_ptr<Model> {
         return dg::DiffusionGemma::open(path, opt);
       },
       diffusion_gemma_session},
  };
  return table;
}

const Architecture& find_architecture(const std::string& name, const std::string& path) {
  std::string known;
  for (const Architecture& a : architectures()) {
    if (name == a.name) return a;
    known += std::string(known.empty() ? "'" : ", '") + a.name + "'";
  }
  throw ConfigError(path + ": architecture '" + name + "' is not supported (diffrt runs " + known + ")");
}

}  // namespace diffrt

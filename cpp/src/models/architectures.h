// The table from a file's `general.architecture` to the model that runs it: Model::load and
// Session::create look the architecture up here, so a second architecture adds one row (and its
// model file), not a branch in the runtime.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "diffrt/model.h"
#include "diffrt/session.h"

namespace diffrt {

struct Architecture {
  const char* name;  // general.architecture
  std::shared_ptr<Model> (*open)(const std::string& path, const LoadOptions& opt);
  std::unique_ptr<Session> (*cpu_session)(std::shared_ptr<const Model> model, int batch, int max_context);
};

const std::vector<Architecture>& architectures();
// The row for `name`; ConfigError naming the file and the supported architectures otherwise.
const Architecture& find_architecture(const std::string& name, const std::string& path);

}  // namespace diffrt

// The Python-side holders of a Model and a Session (shared with other binding files, e.g. the
// generation loop, which needs the C++ Session of a _core.Session).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <diffrt/model.h>
#include <diffrt/session.h>

struct PyModel {
  std::shared_ptr<diffrt::Model> model;
};

struct PySession {
  std::shared_ptr<diffrt::Model> model;  // keeps the weights alive as long as the session
  std::unique_ptr<diffrt::Session> session;
  // Per-layer dumps of the last pass when capture is on (parity debugging).
  std::shared_ptr<std::map<std::string, std::vector<float>>> dumps;
};

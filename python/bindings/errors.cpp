// Maps the core's typed C++ errors onto the Python exceptions defined in diffrt/errors.py.
#include <diffrt/error.h>

#include "bindings.h"

namespace {
void raise_as(const char* cls, const char* what) {
  nb::object mod = nb::module_::import_("diffrt.errors");
  PyErr_SetString(mod.attr(cls).ptr(), what);
}
}  // namespace

void register_errors(nb::module_& m) {
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const diffrt::FormatError& e) {
      raise_as("FormatError", e.what());
    } catch (const diffrt::ConfigError& e) {
      raise_as("ConfigError", e.what());
    } catch (const diffrt::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

// The core's typed C++ errors as the Python exceptions of diffrt/errors.py. Header-only so that both
// extension modules (_core: errors.cpp, _cuda: cuda/module.cpp) register the very same translator.
#pragma once
#include <diffrt/error.h>
#include <nanobind/nanobind.h>

#include <exception>

namespace diffrt_py {

inline void raise_as(const char* cls, const char* what) {
  nanobind::object mod = nanobind::module_::import_("diffrt.errors");
  PyErr_SetString(mod.attr(cls).ptr(), what);
}

inline void register_error_translation() {
  nanobind::register_exception_translator([](const std::exception_ptr& p, void*) {
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

}  // namespace diffrt_py

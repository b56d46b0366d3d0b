// Maps the core's typed C++ errors onto the Python exceptions defined in diffrt/errors.py.
#include "bindings.h"
#include "error_translation.h"

void register_errors(nb::module_& m) { diffrt_py::register_error_translation(); }

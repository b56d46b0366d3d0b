// Typed errors of the diffrt core. Each maps to a Python exception in the bindings:
// FormatError -> diffrt.FormatError, ConfigError -> diffrt.ConfigError,
// InvalidArgument -> ValueError. Messages name the file, key or tensor at fault.
#pragma once
#include <stdexcept>
#include <string>

namespace diffrt {

// A file that is not a valid diffrt/GGUF file: truncated, corrupt, foreign, missing tensors.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A valid file whose hyper-parameters we cannot run (wrong architecture, inconsistent geometry).
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A caller error: wrong shapes, ids out of range, context overflow, bad sampler parameters.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace diffrt

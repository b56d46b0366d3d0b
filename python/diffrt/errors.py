"""diffrt's exception types. The C++ core raises these too (see python/bindings/errors.cpp)."""


class DiffrtError(Exception):
    """Base class of diffrt's own errors."""


class FormatError(DiffrtError, ValueError):
    """A file that is not a valid diffrt model: truncated, corrupt, foreign or missing tensors."""


class ConfigError(DiffrtError, ValueError):
    """A model whose configuration diffrt cannot run or convert."""


class ModelfileError(DiffrtError, ValueError):
    """A Modelfile that cannot be parsed or used; the message carries the line number."""

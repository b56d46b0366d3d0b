"""diffrt: a standalone runtime for diffusion language models (DiffusionGemma)."""

from .errors import ConfigError, DiffrtError, FormatError, ModelfileError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DiffrtError", "FormatError", "ModelfileError", "__version__"]

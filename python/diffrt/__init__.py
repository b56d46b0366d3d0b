"""diffrt: a standalone runtime for diffusion language models (DiffusionGemma)."""

from .errors import ConfigError, DiffrtError, FormatError, ModelfileError
from .cuda import cuda_available
from .model import Model, load

__version__ = "0.1.0"

__all__ = ["ConfigError", "DiffrtError", "FormatError", "Model", "ModelfileError", "__version__", "cuda_available", "load"]

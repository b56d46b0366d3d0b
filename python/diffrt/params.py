"""The generation parameters, once: every front end (the Python API's keywords, `diffrt run`'s flags,
Modelfile PARAMETERs, the Ollama API's `options`, the OpenAI API's fields, the GGUF keys a file
carries its defaults under) reads this table, and the sampler's settings are checked in one place,
the C++ SamplerParams::validate() (`check_sampler`).

A row: `name` (Modelfile PARAMETER and Ollama option), `type`, `key` (GGUF key of the file's
default), `check` (the parameter's own range; value -> error text or None), `help`, `default`
(transformers' default, used when the file has none), `generate` (keyword of Model.generate, None
for application-level settings), `cli` (flag of `diffrt run`), `openai` (field of an OpenAI request).
"""

from __future__ import annotations

import dataclasses

from .gguf_names import KEYS


def _ge(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _gt(lo):
    return lambda v: None if v > lo else f"must be > {lo}"


def _u64(v):
    return None if 0 <= v < 2**64 else "must be in [0, 2^64)"


def _nonempty(v):
    return None if v else "must not be empty"


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: type  # int, float or str
    key: str | None
    check: object
    help: str
    default: object = None
    generate: str | None = None
    cli: str | None = None
    openai: str | None = None


TABLE = (
    Param("steps", int, KEYS["MAX_STEPS"], _ge(1), "denoising steps per canvas (at most)", 48,
          generate="steps", cli="--steps", openai="steps"),
    Param("t_min", float, KEYS["T_MIN"], _ge(0), "temperature schedule: lower end (never reached)", 0.4,
          generate="t_min", cli="--t-min", openai="t_min"),
    Param("t_max", float, KEYS["T_MAX"], _gt(0), "temperature schedule: first step's temperature", 0.8,
          generate="t_max", cli="--t-max", openai="t_max"),
    Param("entropy_bound", float, KEYS["ENTROPY_BOUND"], _gt(0), "entropy budget for the tokens accepted per step",
          0.1, generate="entropy_bound", cli="--entropy-bound", openai="entropy_bound"),
    Param("stability_threshold", int, KEYS["STABILITY_THRESHOLD"], _ge(0),
          "adaptive stop: identical argmax canvases needed (s + 1)", 1,
          generate="stability_threshold", cli="--stability-threshold", openai="stability_threshold"),
    Param("confidence_threshold", float, KEYS["CONFIDENCE_THRESHOLD"], _gt(0),
          "adaptive stop: mean entropy must fall below this", 0.005,
          generate="confidence_threshold", cli="--confidence-threshold", openai="confidence_threshold"),
    Param("num_predict", int, KEYS["DIFFRT_MAX_NEW_TOKENS"], _ge(1), "max new tokens (rounded up to whole canvases)",
          256, generate="max_new_tokens", cli="--max-new-tokens"),  # OpenAI: max_tokens (see server/openai.py)
    Param("seed", int, KEYS["DIFFRT_SEED"], _u64, "random seed (unset: a fresh seed per request)",
          generate="seed", cli="--seed", openai="seed"),
    Param("stop", str, KEYS["DIFFRT_STOP"], _nonempty, "stop string; may repeat; output is cut before it",
          openai="stop"),
    Param("num_ctx", int, KEYS["DIFFRT_NUM_CTX"], _ge(1), "context window (prompt + output tokens)",
          "the model's context_length"),
)
BY_NAME = {p.name: p for p in TABLE}
# The settings SamplerParams::validate() checks, as Model.generate keywords.
SAMPLER_KWARGS = ("max_new_tokens", "steps", "t_min", "t_max", "entropy_bound", "stability_threshold",
                  "confidence_threshold")
_INT32_MAX = 2**31 - 1


def transformers_defaults() -> dict:
    """transformers' DiffusionGemmaGenerationConfig defaults (spec §10.1), by generate keyword."""
    return {p.generate: p.default for p in TABLE if p.generate in SAMPLER_KWARGS}


def check_sampler(values: dict) -> None:
    """Checks the sampler settings `values` (generate keywords; all of SAMPLER_KWARGS) with the C++
    SamplerParams::validate(). Raises ValueError naming the first bad setting."""
    from . import _core

    args = {k: values[k] for k in SAMPLER_KWARGS}
    for k, v in args.items():
        if isinstance(v, int) and not -_INT32_MAX <= v <= _INT32_MAX:
            raise ValueError(f"invalid sampler parameter: {k} is out of range (got {v})")
    _core.sampler.check_params(**args)

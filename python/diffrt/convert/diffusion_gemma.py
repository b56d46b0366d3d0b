"""DiffusionGemma (transformers `DiffusionGemmaForBlockDiffusion`) → diffrt GGUF.

load → validate → transform → quantize → write, as one class. Config semantics follow
spec/diffusiongemma.md §2 (per-layer geometry, derived defaults) and §10.1 (generation config).
Text only: the vision tower and the vision embedder are not converted.
"""

import json
import math
import os

import numpy as np

from ..errors import ConfigError, FormatError
from ..gguf_names import (
    FORMAT_VERSION,
    GLOBAL_TENSORS,
    IGNORED_HF_PREFIXES,
    KEEP_F32,
    KEYS,
    LAYER_TENSORS,
    SLIDING_ONLY,
)
from .checkpoint import read_checkpoint_tensors, read_json
from .hf_tokenizer import HFTokenizer
from .writer import FILE_TYPE, StreamingGGUFWriter, atomic_output, progress_bar, resolve_out_type, tensor_type

SLIDING, FULL = "sliding_attention", "full_attention"
DEFAULT_ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 1e4},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
}
# generation_config.json defaults that generate() applies when a field is missing (spec §10.1).
GEN_DEFAULTS = {
    "max_new_tokens": 256,
    "max_denoising_steps": 48,
    "entropy_bound": 0.1,
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}
ROPE_FREQ_OFF = 1e30  # a frequency factor this large makes a pair's angle ~0: no rotation


def tensor_shapes(
    *, vocab, hidden, intermediate, n_expert, moe_intermediate, n_head, layer_types, head_dims, n_kv, hd_full
):
    """(ident, gguf name, hf name, HF shape) for every tensor of a DiffusionGemma text model, in file
    order; hf name is None for derived tensors. Also the table of tools/make_synthetic_checkpoint.py."""
    H, I, E, Ie, V, nh = hidden, intermediate, n_expert, moe_intermediate, vocab, n_head
    shapes = {
        "TOKEN_EMBD": (V, H),
        "OUTPUT_NORM": (H,),
        "ROPE_FREQS": (hd_full // 2,),
        "SELF_COND_PRE_NORM": (H,),
        "SELF_COND_GATE": (I, H),
        "SELF_COND_UP": (I, H),
        "SELF_COND_DOWN": (H, I),
    }
    out = [(ident, gguf_name, hf, shapes[ident]) for ident, gguf_name, hf in GLOBAL_TENSORS]
    for i, layer_type in enumerate(layer_types):
        hd, kv = head_dims[i], n_kv[i]
        layer = {
            "ATTN_Q": (nh * hd, H),
            "ATTN_K": (kv * hd, H),
            "ATTN_V": (kv * hd, H),
            "ATTN_Q_NORM": (hd,),
            "ATTN_K_NORM": (hd,),
            "ATTN_OUT": (H, nh * hd),
            "FFN_GATE": (I, H),
            "FFN_UP": (I, H),
            "FFN_DOWN": (H, I),
            "FFN_GATE_INP": (E, H),
            "FFN_GATE_UP_EXPS": (E, 2 * Ie, H),
            "FFN_DOWN_EXPS": (E, H, Ie),
            "FFN_DOWN_EXPS_SCALE": (E,),
            "LAYER_OUT_SCALE": (1,),
            "ENC_LAYER_OUT_SCALE": (1,),
        }
        for ident, gguf_name, hf in LAYER_TENSORS:
            if ident in SLIDING_ONLY and layer_type != SLIDING:
                continue
            out.append((ident, gguf_name.format(bid=i), hf.format(bid=i), layer.get(ident, (H,))))
    return out


class DiffusionGemmaConverter:
    ARCHITECTURES = ("DiffusionGemmaForBlockDiffusion",)
    MODEL_TYPES = ("diffusion_gemma",)

    def __init__(self, checkpoint_dir):
        self.dir = checkpoint_dir

    # --- load -----------------------------------------------------------------------------------
    def load(self):
        self.config_path = os.path.join(self.dir, "config.json")
        with open(self.config_path, encoding="utf-8") as f:
            self.config_text = f.read()
        try:
            self.config = json.loads(self.config_text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{self.config_path}: not valid JSON ({e})") from None
        self.text = self.config.get("text_config") if isinstance(self.config, dict) else None
        if not isinstance(self.text, dict):
            raise ConfigError(f"{self.config_path}: no 'text_config' object")
        self.gen = read_json(os.path.join(self.dir, "generation_config.json"), required=False) or {}
        self.tensors = read_checkpoint_tensors(self.dir)
        self._read_hparams()
        self._read_generation_config()
        self.tokenizer = HFTokenizer(self.dir, self.vocab_size)

    def _need(self, key, kind=int):
        value = self.text.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self.config_path}: text_config.{key} must be {kind.__name__}, got {value!r}")
        return value

    def _read_hparams(self):
        t, where = self.text, self.config_path
        self.n_layer = self._need("num_hidden_layers")
        self.n_embd = self._need("hidden_size")
        self.n_ff = self._need("intermediate_size")
        self.n_head = self._need("num_attention_heads")
        self.vocab_size = self._need("vocab_size")
        self.n_expert = self._need("num_experts")
        self.n_expert_used = self._need("top_k_experts")
        self.n_ff_exp = self._need("moe_intermediate_size")
        self.sliding_window = self._need("sliding_window")
        self.context_length = t.get("max_position_embeddings", 131072)
        self.rms_eps = float(t.get("rms_norm_eps", 1e-6))
        self.softcap = t.get("final_logit_softcapping", self.config.get("final_logit_softcapping", 30.0))
        if not isinstance(self.softcap, (int, float)) or isinstance(self.softcap, bool):
            raise ConfigError(
                f"{where}: final_logit_softcapping must be a number (the model applies it "
                f"unconditionally), got {self.softcap!r}"
            )
        self.canvas_length = self.config.get("canvas_length", 256)

        # The tied LM head is stored only as the decoder's embed_tokens: false would need an
        # lm_head.weight and separate encoder weights, which this format does not have.
        for scope, cfg in (("", self.config), ("text_config.", t)):
            if cfg.get("tie_word_embeddings", True) is not True:
                raise ConfigError(
                    f"{where}: {scope}tie_word_embeddings is false; diffrt supports only "
                    "tied checkpoints (one embedding shared by encoder, decoder and LM head)"
                )
        if t.get("attention_bias", False):
            raise ConfigError(
                f"{where}: text_config.attention_bias is true; q/k/v/o biases are not supported"
            )
        act = t.get("hidden_activation", "gelu_pytorch_tanh")
        if act != "gelu_pytorch_tanh":
            raise ConfigError(
                f"{where}: text_config.hidden_activation {act!r} is not supported "
                "(expected 'gelu_pytorch_tanh')"
            )
        bidir = t.get("use_bidirectional_attention")
        if bidir not in (None, "vision", "all"):
            raise ConfigError(
                f"{where}: text_config.use_bidirectional_attention {bidir!r} is not one of "
                "null, 'vision', 'all'"
            )
        self.bidirectional = bidir or "none"

        # Layer types (§2.2 steps 2–3).
        types = t.get("layer_types")
        if types is None:
            types = [SLIDING if (i + 1) % 6 else FULL for i in range(self.n_layer)]
        if not isinstance(types, list) or len(types) != self.n_layer or set(types) - {SLIDING, FULL}:
            raise ConfigError(
                f"{where}: text_config.layer_types must list {self.n_layer} of "
                f"'{SLIDING}'/'{FULL}', got {types!r}"
            )
        types = list(types)
        types[-1] = FULL  # transformers forces the last layer to full attention
        self.layer_types = types

        # Per-layer geometry (§2.2 step 5): saved configs carry per_layer_config with zero-padded
        # string keys; raw configs carry global_head_dim / num_global_key_value_heads instead.
        head_dim, n_kv = self._need("head_dim"), self._need("num_key_value_heads")
        plc = t.get("per_layer_config")
        if plc is None:
            g_hd = t.get("global_head_dim", 512)
            g_kv = t.get("num_global_key_value_heads")
            if not t.get("attention_k_eq_v", True):
                g_kv = None
            plc = {
                str(i): {"head_dim": g_hd, **({"num_key_value_heads": g_kv} if g_kv else {})}
                for i, lt in enumerate(types)
                if lt == FULL
            }
        if not isinstance(plc, dict):
            raise ConfigError(f"{where}: text_config.per_layer_config must be an object")
        overrides = {}
        for k, v in plc.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) < self.n_layer and isinstance(v, dict)):
                raise ConfigError(f"{where}: text_config.per_layer_config has a bad entry {k!r}")
            unknown = set(v) - {"head_dim", "num_key_value_heads"}
            if unknown:
                raise ConfigError(
                    f"{where}: text_config.per_layer_config[{k!r}] overrides {sorted(unknown)}, "
                    "which diffrt does not support"
                )
            overrides[int(k)] = v
        self.head_dims = [overrides.get(i, {}).get("head_dim", head_dim) for i in range(self.n_layer)]
        self.n_kv = [overrides.get(i, {}).get("num_key_value_heads", n_kv) for i in range(self.n_layer)]
        self.hd_swa = self._uniform(SLIDING, self.head_dims, "head_dim", default=head_dim)
        self.hd_full = self._uniform(FULL, self.head_dims, "head_dim", default=head_dim)

        # RoPE per layer type (§4.1).
        rope = t.get("rope_parameters") or DEFAULT_ROPE
        self.rope = {}
        for lt in (SLIDING, FULL):
            p = rope.get(lt) if isinstance(rope, dict) else None
            if not isinstance(p, dict):
                raise ConfigError(f"{where}: text_config.rope_parameters has no '{lt}' entry")
            rtype = p.get("rope_type", "default")
            if rtype not in ("default", "proportional"):
                raise ConfigError(f"{where}: rope_type {rtype!r} for {lt} is not supported")
            if float(p.get("factor", 1.0)) != 1.0:
                raise ConfigError(f"{where}: rope_parameters.{lt}.factor != 1 is not supported")
            self.rope[lt] = {
                "type": rtype,
                "theta": float(p.get("rope_theta", DEFAULT_ROPE[lt]["rope_theta"])),
                "partial": float(p.get("partial_rotary_factor", 1.0)),
            }
        if self.rope[FULL]["type"] == "default" and self.rope[FULL]["partial"] != 1.0:
            raise ConfigError(f"{where}: partial rotary 'default' RoPE on full layers is not supported")
        self.source_dtype = self.config.get("dtype") or self.config.get("torch_dtype") or "float32"

    def _uniform(self, layer_type, values, what, default):
        found = {v for v, lt in zip(values, self.layer_types) if lt == layer_type}
        if len(found) > 1:
            raise ConfigError(
                f"{self.config_path}: {layer_type} layers have different {what}s {sorted(found)}; "
                "the format stores one per layer type"
            )
        return found.pop() if found else default

    # --- validate -------------------------------------------------------------------------------
    def expected_shapes(self):
        """(ident, gguf name, hf name, HF shape) for every tensor the file holds, in file order."""
        return tensor_shapes(
            vocab=self.vocab_size,
            hidden=self.n_embd,
            intermediate=self.n_ff,
            n_expert=self.n_expert,
            moe_intermediate=self.n_ff_exp,
            n_head=self.n_head,
            layer_types=self.layer_types,
            head_dims=self.head_dims,
            n_kv=self.n_kv,
            hd_full=self.hd_full,
        )

    def validate(self):
        self.plan = self.expected_shapes()
        wanted = {hf for _, _, hf, _ in self.plan if hf}
        for _, gguf_name, hf, shape in self.plan:
            if hf is None:
                continue
            ref = self.tensors.get(hf)
            if ref is None:
                raise FormatError(f"{self.dir}: tensor {hf!r} (→ {gguf_name}) is missing from the checkpoint")
            if ref.shape != shape:
                raise FormatError(
                    f"{ref.path}: tensor {hf!r} has shape {list(ref.shape)}, expected "
                    f"{list(shape)} from config.json"
                )
        extra = sorted(n for n in self.tensors if n not in wanted and not n.startswith(IGNORED_HF_PREFIXES))
        if extra:
            more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
            raise FormatError(
                f"{self.dir}: unexpected tensors {extra[:5]}{more}; diffrt does not know what to do with them"
            )

    # --- transform + quantize + write -----------------------------------------------------------
    def _rope_freqs(self):
        n = self.hd_full // 2
        if self.rope[FULL]["type"] != "proportional":
            return np.ones((1, n), np.float32)
        rotated = int(self.rope[FULL]["partial"] * self.hd_full // 2)
        return np.where(np.arange(n) < rotated, 1.0, ROPE_FREQ_OFF).astype(np.float32).reshape(1, n)

    def _chunks(self, ident, hf):
        if ident == "ROPE_FREQS":
            return iter([self._rope_freqs()])
        return self.tensors[hf].read_rows()

    def _write_keys(self, w, out_type):
        K = KEYS
        is_swa = [lt == SLIDING for lt in self.layer_types]
        w.add_string(K["NAME"], os.path.basename(os.path.abspath(self.dir)))
        w.add_uint32(K["FILE_TYPE"], int(FILE_TYPE[out_type]))
        for key, value in (
            ("BLOCK_COUNT", self.n_layer),
            ("CONTEXT_LENGTH", self.context_length),
            ("EMBEDDING_LENGTH", self.n_embd),
            ("FEED_FORWARD_LENGTH", self.n_ff),
            ("HEAD_COUNT", self.n_head),
            ("KEY_LENGTH", self.hd_full),
            ("VALUE_LENGTH", self.hd_full),
            ("KEY_LENGTH_SWA", self.hd_swa),
            ("VALUE_LENGTH_SWA", self.hd_swa),
            ("SLIDING_WINDOW", self.sliding_window),
            ("SHARED_KV_LAYERS", 0),
            ("EMBEDDING_LENGTH_PER_LAYER_INPUT", 0),
            ("ROPE_DIMENSION_COUNT", self.hd_full),
            ("ROPE_DIMENSION_COUNT_SWA", self.hd_swa),
            ("EXPERT_COUNT", self.n_expert),
            ("EXPERT_USED_COUNT", self.n_expert_used),
            ("EXPERT_FEED_FORWARD_LENGTH", self.n_ff_exp),
            ("CANVAS_LENGTH", self.canvas_length),
        ):
            w.add_uint32(K[key], value)
        w.add_array(K["HEAD_COUNT_KV"], self.n_kv)
        w.add_array(K["SLIDING_WINDOW_PATTERN"], is_swa)
        w.add_float32(K["RMS_EPS"], self.rms_eps)
        w.add_bool(K["CAUSAL"], False)
        w.add_float32(K["ROPE_FREQ_BASE"], self.rope[FULL]["theta"])
        w.add_float32(K["ROPE_FREQ_BASE_SWA"], self.rope[SLIDING]["theta"])
        w.add_float32(K["FINAL_LOGIT_SOFTCAPPING"], float(self.softcap))
        self._write_sampler_keys(w)
        self.tokenizer.write_keys(w, fallback_eos=self.eos_ids[0] if self.eos_ids else None)
        w.add_uint32(K["DIFFRT_FORMAT_VERSION"], FORMAT_VERSION)
        w.add_float32(K["DIFFRT_ROPE_PARTIAL_FACTOR"], self.rope[FULL]["partial"])
        w.add_float32(K["DIFFRT_ROPE_PARTIAL_FACTOR_SWA"], self.rope[SLIDING]["partial"])
        w.add_string(K["DIFFRT_ROPE_TYPE"], self.rope[FULL]["type"])
        w.add_string(K["DIFFRT_ROPE_TYPE_SWA"], self.rope[SLIDING]["type"])
        w.add_string(K["DIFFRT_BIDIRECTIONAL"], self.bidirectional)
        if self.eos_ids:  # gguf-py cannot write an empty array: absent = no EOS
            w.add_array(K["DIFFRT_EOS_IDS"], self.eos_ids)
        w.add_int32(K["DIFFRT_PAD_ID"], self.pad_id)
        w.add_string(K["DIFFRT_SOURCE_DTYPE"], self.source_dtype)
        w.add_string(K["DIFFRT_HF_CONFIG"], self.config_text)

    def _gen(self, key, kind):
        where = os.path.join(self.dir, "generation_config.json")
        value = self.gen.get(key)
        if key == "entropy_bound":
            value = (self.gen.get("sampler_config") or {}).get("entropy_bound")
        if value is None:
            return GEN_DEFAULTS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}")
        return value

    def _read_generation_config(self):
        g = self.gen
        eos = g.get("eos_token_id")
        self.eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else eos
        if not isinstance(self.eos_ids, list) or not all(type(i) is int for i in self.eos_ids):
            raise ConfigError(
                f"{os.path.join(self.dir, 'generation_config.json')}: eos_token_id must be an "
                f"int or a list of ints, got {eos!r}"
            )
        self.pad_id = g.get("pad_token_id") if isinstance(g.get("pad_token_id"), int) else -1
        self.max_new_tokens = self._gen("max_new_tokens", int)
        self.max_steps = self._gen("max_denoising_steps", int)
        self.t_min = float(self._gen("t_min", (int, float)))
        self.t_max = float(self._gen("t_max", (int, float)))
        self.entropy_bound = float(self._gen("entropy_bound", float))
        self.stability = self._gen("stability_threshold", int)
        self.confidence = float(self._gen("confidence_threshold", float))

    def _write_sampler_keys(self, w):
        K = KEYS
        w.add_uint32(K["MAX_STEPS"], self.max_steps)
        w.add_float32(K["T_MIN"], self.t_min)
        w.add_float32(K["T_MAX"], self.t_max)
        w.add_float32(K["ENTROPY_BOUND"], self.entropy_bound)
        w.add_uint32(K["STABILITY_THRESHOLD"], self.stability)
        w.add_float32(K["CONFIDENCE_THRESHOLD"], self.confidence)
        w.add_uint32(K["DIFFRT_MAX_NEW_TOKENS"], self.max_new_tokens)

    def write(self, out_path, out_type="auto", progress=True):
        out_type = resolve_out_type(out_type, self.source_dtype)
        total = sum(math.prod(shape) * 4 for _, _, _, shape in self.plan)
        with atomic_output(out_path) as tmp:
            w = StreamingGGUFWriter(tmp)
            try:
                self._write_keys(w.kv, out_type)
                types = {}
                for ident, name, _, shape in self.plan:
                    types[name] = tensor_type(out_type, shape, ident in KEEP_F32)
                    w.declare_tensor(name, shape, types[name])
                w.begin_data()
                with progress_bar(total, progress, "converting") as bar:
                    for ident, name, hf, _ in self.plan:
                        w.write_tensor(name, self._chunks(ident, hf), on_bytes=bar.update)
                w.finish()
            finally:
                w.close()
        return out_path

    def convert(self, out_path, out_type="auto", progress=True):
        self.load()
        self.validate()
        return self.write(out_path, out_type, progress)

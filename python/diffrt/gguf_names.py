"""The one table of GGUF key and tensor names for diffrt files.

Names follow the layout the community already publishes for DiffusionGemma (llama.cpp PR #24423);
our own additions live under ``diffrt.*``. The C++ reader gets the same names from
``cpp/src/format/gguf_names.h``, generated from this module by ``tools/gen_names_header.py``
(a test checks the committed header is current).
"""

ARCH = "diffusion-gemma"
FORMAT_VERSION = 1  # diffrt.format_version: bump on an incompatible change of our own keys

# --- metadata keys -------------------------------------------------------------------------------
# (python identifier, key). "{arch}" is replaced by ARCH.
KEYS = {
    # general
    "ARCHITECTURE": "general.architecture",
    "NAME": "general.name",
    "FILE_TYPE": "general.file_type",
    "LICENSE": "general.license",
    # hyper-parameters (community layout)
    "BLOCK_COUNT": "{arch}.block_count",
    "CONTEXT_LENGTH": "{arch}.context_length",
    "EMBEDDING_LENGTH": "{arch}.embedding_length",
    "FEED_FORWARD_LENGTH": "{arch}.feed_forward_length",
    "HEAD_COUNT": "{arch}.attention.head_count",
    "HEAD_COUNT_KV": "{arch}.attention.head_count_kv",  # per-layer array
    "KEY_LENGTH": "{arch}.attention.key_length",  # full-attention layers
    "VALUE_LENGTH": "{arch}.attention.value_length",
    "KEY_LENGTH_SWA": "{arch}.attention.key_length_swa",  # sliding layers
    "VALUE_LENGTH_SWA": "{arch}.attention.value_length_swa",
    "SLIDING_WINDOW": "{arch}.attention.sliding_window",  # W as in config.json
    "SLIDING_WINDOW_PATTERN": "{arch}.attention.sliding_window_pattern",  # per-layer bools
    "RMS_EPS": "{arch}.attention.layer_norm_rms_epsilon",
    "CAUSAL": "{arch}.attention.causal",
    "SHARED_KV_LAYERS": "{arch}.attention.shared_kv_layers",
    "EMBEDDING_LENGTH_PER_LAYER_INPUT": "{arch}.embedding_length_per_layer_input",
    "ROPE_FREQ_BASE": "{arch}.rope.freq_base",
    "ROPE_FREQ_BASE_SWA": "{arch}.rope.freq_base_swa",
    "ROPE_DIMENSION_COUNT": "{arch}.rope.dimension_count",
    "ROPE_DIMENSION_COUNT_SWA": "{arch}.rope.dimension_count_swa",
    "EXPERT_COUNT": "{arch}.expert_count",
    "EXPERT_USED_COUNT": "{arch}.expert_used_count",
    "EXPERT_FEED_FORWARD_LENGTH": "{arch}.expert_feed_forward_length",
    "FINAL_LOGIT_SOFTCAPPING": "{arch}.final_logit_softcapping",
    # sampler defaults (community layout)
    "CANVAS_LENGTH": "diffusion.canvas_length",
    "MAX_STEPS": "diffusion.eb_max_steps",
    "T_MIN": "diffusion.eb_t_min",
    "T_MAX": "diffusion.eb_t_max",
    "ENTROPY_BOUND": "diffusion.eb_entropy_bound",
    "STABILITY_THRESHOLD": "diffusion.eb_stability_threshold",
    "CONFIDENCE_THRESHOLD": "diffusion.eb_confidence_threshold",
    # tokenizer
    "TOKENIZER_MODEL": "tokenizer.ggml.model",
    "TOKENIZER_TOKENS": "tokenizer.ggml.tokens",
    "TOKENIZER_SCORES": "tokenizer.ggml.scores",
    "TOKENIZER_TOKEN_TYPE": "tokenizer.ggml.token_type",
    "TOKENIZER_MERGES": "tokenizer.ggml.merges",
    "BOS_ID": "tokenizer.ggml.bos_token_id",
    "EOS_ID": "tokenizer.ggml.eos_token_id",
    "UNK_ID": "tokenizer.ggml.unknown_token_id",
    "PAD_ID": "tokenizer.ggml.padding_token_id",
    "MASK_ID": "tokenizer.ggml.mask_token_id",
    "ADD_BOS": "tokenizer.ggml.add_bos_token",
    "ADD_SPACE_PREFIX": "tokenizer.ggml.add_space_prefix",
    "TOKENIZER_HF_JSON": "tokenizer.huggingface.json",  # the original tokenizer.json, verbatim
    "CHAT_TEMPLATE": "tokenizer.chat_template",
    # diffrt additions
    "DIFFRT_FORMAT_VERSION": "diffrt.format_version",
    "DIFFRT_ROPE_PARTIAL_FACTOR": "diffrt.rope.partial_rotary_factor",  # full layers (proportional)
    "DIFFRT_ROPE_PARTIAL_FACTOR_SWA": "diffrt.rope.partial_rotary_factor_swa",  # sliding (default)
    "DIFFRT_ROPE_TYPE": "diffrt.rope.type",  # full layers: "proportional" | "default"
    "DIFFRT_ROPE_TYPE_SWA": "diffrt.rope.type_swa",
    "DIFFRT_BIDIRECTIONAL": "diffrt.use_bidirectional_attention",  # "none" | "vision" | "all"
    "DIFFRT_EOS_IDS": "diffrt.eos_token_ids",  # generation config's eos list (may be empty)
    "DIFFRT_PAD_ID": "diffrt.pad_token_id",  # generation config's pad id, -1 = none
    "DIFFRT_MAX_NEW_TOKENS": "diffrt.max_new_tokens",
    "DIFFRT_SOURCE_DTYPE": "diffrt.source_dtype",  # checkpoint dtype: "float32" | "bfloat16" | ...
    "DIFFRT_HF_CONFIG": "diffrt.hf_config_json",  # config.json verbatim, for show/debugging
    "DIFFRT_MODELFILE": "diffrt.modelfile",  # embedded Ollama-style Modelfile text
    "DIFFRT_SYSTEM": "diffrt.system",
    "DIFFRT_LICENSE": "diffrt.license_text",
    "DIFFRT_SEED": "diffrt.seed",  # Modelfile PARAMETER seed (uint64); absent = fresh seed per request
    "DIFFRT_STOP": "diffrt.stop",  # Modelfile PARAMETER stop (array of strings)
    "DIFFRT_NUM_CTX": "diffrt.num_ctx",  # Modelfile PARAMETER num_ctx
    "DIFFRT_MESSAGES": "diffrt.messages_json",  # Modelfile MESSAGEs: JSON [{"role", "content"}]
}
KEYS = {k: v.replace("{arch}", ARCH) for k, v in KEYS.items()}
globals().update({"KEY_" + k: v for k, v in KEYS.items()})

# --- tensors -------------------------------------------------------------------------------------
# (python identifier, GGUF name, HF safetensors name). "{bid}" is the layer index. Shapes: GGUF
# stores ggml order (fastest dimension first), i.e. the HF shape reversed; no tensor is transposed.
GLOBAL_TENSORS = [
    ("TOKEN_EMBD", "token_embd.weight", "model.decoder.embed_tokens.weight"),
    ("OUTPUT_NORM", "output_norm.weight", "model.decoder.norm.weight"),
    ("ROPE_FREQS", "rope_freqs.weight", None),  # derived: 1 = rotated pair, 1e30 = not rotated
    ("SELF_COND_PRE_NORM", "self_cond_pre_norm.weight", "model.decoder.self_conditioning.pre_norm.weight"),
    ("SELF_COND_GATE", "self_cond_gate.weight", "model.decoder.self_conditioning.gate_proj.weight"),
    ("SELF_COND_UP", "self_cond_up.weight", "model.decoder.self_conditioning.up_proj.weight"),
    ("SELF_COND_DOWN", "self_cond_down.weight", "model.decoder.self_conditioning.down_proj.weight"),
]

_L = "model.decoder.layers.{bid}."
LAYER_TENSORS = [
    ("ATTN_NORM", "blk.{bid}.attn_norm.weight", _L + "input_layernorm.weight"),
    ("ATTN_Q", "blk.{bid}.attn_q.weight", _L + "self_attn.q_proj.weight"),
    ("ATTN_K", "blk.{bid}.attn_k.weight", _L + "self_attn.k_proj.weight"),
    ("ATTN_V", "blk.{bid}.attn_v.weight", _L + "self_attn.v_proj.weight"),  # sliding layers only
    ("ATTN_Q_NORM", "blk.{bid}.attn_q_norm.weight", _L + "self_attn.q_norm.weight"),
    ("ATTN_K_NORM", "blk.{bid}.attn_k_norm.weight", _L + "self_attn.k_norm.weight"),
    ("ATTN_OUT", "blk.{bid}.attn_output.weight", _L + "self_attn.o_proj.weight"),
    ("POST_ATTN_NORM", "blk.{bid}.post_attention_norm.weight", _L + "post_attention_layernorm.weight"),
    ("FFN_NORM", "blk.{bid}.ffn_norm.weight", _L + "pre_feedforward_layernorm.weight"),
    ("FFN_GATE", "blk.{bid}.ffn_gate.weight", _L + "mlp.gate_proj.weight"),
    ("FFN_UP", "blk.{bid}.ffn_up.weight", _L + "mlp.up_proj.weight"),
    ("FFN_DOWN", "blk.{bid}.ffn_down.weight", _L + "mlp.down_proj.weight"),
    ("POST_FFW_NORM_1", "blk.{bid}.post_ffw_norm_1.weight", _L + "post_feedforward_layernorm_1.weight"),
    ("PRE_FFW_NORM_2", "blk.{bid}.pre_ffw_norm_2.weight", _L + "pre_feedforward_layernorm_2.weight"),
    ("FFN_GATE_INP", "blk.{bid}.ffn_gate_inp.weight", _L + "router.proj.weight"),
    ("FFN_GATE_INP_SCALE", "blk.{bid}.ffn_gate_inp.scale", _L + "router.scale"),
    ("FFN_GATE_UP_EXPS", "blk.{bid}.ffn_gate_up_exps.weight", _L + "experts.gate_up_proj"),
    ("FFN_DOWN_EXPS", "blk.{bid}.ffn_down_exps.weight", _L + "experts.down_proj"),
    ("FFN_DOWN_EXPS_SCALE", "blk.{bid}.ffn_down_exps.scale", _L + "router.per_expert_scale"),
    ("POST_FFW_NORM_2", "blk.{bid}.post_ffw_norm_2.weight", _L + "post_feedforward_layernorm_2.weight"),
    ("POST_FFW_NORM", "blk.{bid}.post_ffw_norm.weight", _L + "post_feedforward_layernorm.weight"),
    ("LAYER_OUT_SCALE", "blk.{bid}.layer_output_scale.weight", _L + "layer_scalar"),
    (
        "ENC_LAYER_OUT_SCALE",
        "blk.{bid}.enc_layer_output_scale.weight",
        "model.encoder.language_model.layers.{bid}.layer_scalar",
    ),
]

# Layer tensors a full-attention layer does not have (K = V sharing).
SLIDING_ONLY = {"ATTN_V"}
# Tensors kept in f32 whatever --type says: norms, scales, router (small, and precision-sensitive).
KEEP_F32 = {
    "OUTPUT_NORM", "ROPE_FREQS", "SELF_COND_PRE_NORM",
    "ATTN_NORM", "ATTN_Q_NORM", "ATTN_K_NORM", "POST_ATTN_NORM", "FFN_NORM", "POST_FFW_NORM_1",
    "PRE_FFW_NORM_2", "FFN_GATE_INP", "FFN_GATE_INP_SCALE", "FFN_DOWN_EXPS_SCALE",
    "POST_FFW_NORM_2", "POST_FFW_NORM", "LAYER_OUT_SCALE", "ENC_LAYER_OUT_SCALE",
}

TENSORS = {ident: gguf for ident, gguf, _ in GLOBAL_TENSORS + LAYER_TENSORS}
HF_NAMES = {ident: hf for ident, _, hf in GLOBAL_TENSORS + LAYER_TENSORS}
globals().update({"TENSOR_" + k: v for k, v in TENSORS.items()})

# HF checkpoint prefixes that are deliberately not converted (text-only scope).
IGNORED_HF_PREFIXES = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")


def layer_tensor_name(ident: str, bid: int) -> str:
    return TENSORS[ident].format(bid=bid)

"""diffrt convert: round trip, metadata, tokenizer, shards, bad inputs, atomic output, diffrt show."""

import json
import math
import os
import shutil
from pathlib import Path

import gguf
import ml_dtypes
import numpy as np
import pytest
from diffrt import ConfigError, FormatError
from diffrt.cli import main
from diffrt.convert import convert
from diffrt.gguf_names import GLOBAL_TENSORS, KEEP_F32, KEYS, LAYER_TENSORS, SLIDING_ONLY
from diffrt.model import load
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def checkpoint_tensors(ckpt):
    """{hf name: float32 array} read with safetensors' torch backend (an independent reader)."""
    import torch

    out = {}
    files = sorted(p for p in os.listdir(ckpt) if p.endswith(".safetensors"))
    for fname in files:
        with safe_open(os.path.join(ckpt, fname), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out[name] = f.get_tensor(name).to(torch.float32).numpy()
    return out


def expected_pairs(ckpt):
    """(ident, gguf name, hf name) of every converted tensor, from config.json's layer types."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())["text_config"]
    pairs = [(i, g, h) for i, g, h in GLOBAL_TENSORS]
    for bid, lt in enumerate(cfg["layer_types"]):
        for ident, g, h in LAYER_TENSORS:
            if ident in SLIDING_ONLY and lt != "sliding_attention":
                continue
            pairs.append((ident, g.format(bid=bid), h.format(bid=bid)))
    return pairs


def q8_0_bound(ref):
    """Largest error Q8_0 may make per element: half a quantisation step d = amax/127 of the
    element's 32-block, plus the f16 rounding of d (≤ 2^-11 relative) times |q| ≤ 127."""
    blocks = ref.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    return np.broadcast_to(d * (0.5 + 127 * 2.0**-11) + 1e-12, blocks.shape).reshape(ref.shape)


# --- round trip -------------------------------------------------------------------------------
@pytest.mark.parametrize("out_type", ["f32", "f16", "bf16", "q8_0"])
def test_round_trip(tiny_checkpoint, converted, out_type):
    ckpt = tiny_checkpoint("default")
    ref = checkpoint_tensors(ckpt)
    model = load(converted("default", out_type))
    pairs = expected_pairs(ckpt)
    assert set(model.tensors) == {g for _, g, _ in pairs}
    for ident, name, hf in pairs:
        t = model.tensors[name]
        if hf is None:
            continue
        want = ref[hf]
        assert t.shape == want.shape, name
        got = np.asarray(t.numpy(), dtype=np.float32)
        if ident in KEEP_F32 or out_type == "f32":
            assert t.type == "F32", name
            np.testing.assert_array_equal(got, want, err_msg=name)  # exact
        elif out_type == "f16":
            assert t.type == "F16"
            # Round-to-nearest f16: equal to numpy's own rounding, so within 2^-11 relative.
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        elif out_type == "bf16":
            assert t.type == "BF16"
            # Round-to-nearest-even bf16: within 2^-8 relative of the f32 value.
            np.testing.assert_array_equal(got, want.astype(ml_dtypes.bfloat16).astype(np.float32))
            assert np.all(np.abs(got - want) <= np.abs(want) * 2.0**-8), name
        else:
            assert t.type == "Q8_0", name  # every tiny weight matrix has rows of a multiple of 32
            assert np.all(np.abs(got - want) <= q8_0_bound(want)), name


def test_layer_scalars_of_both_stacks(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("default")
    ref = checkpoint_tensors(ckpt)
    model = load(converted("default", "f32"))
    for bid in range(4):
        dec = model.tensors[f"blk.{bid}.layer_output_scale.weight"].numpy()
        enc = model.tensors[f"blk.{bid}.enc_layer_output_scale.weight"].numpy()
        assert dec.shape == enc.shape == (1,)
        assert dec[0] == ref[f"model.decoder.layers.{bid}.layer_scalar"][0]
        assert enc[0] == ref[f"model.encoder.language_model.layers.{bid}.layer_scalar"][0]
        assert dec[0] != enc[0]  # the tiny model randomises them, so a mix-up shows


def test_bf16_checkpoint_auto_keeps_bits(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("bf16")
    ref = checkpoint_tensors(ckpt)
    model = load(converted("bf16", "auto"))
    assert model.metadata[KEYS["DIFFRT_SOURCE_DTYPE"]] == "bfloat16"
    assert model.metadata[KEYS["FILE_TYPE"]] == int(gguf.LlamaFileType.MOSTLY_BF16)
    for ident, name, hf in expected_pairs(ckpt):
        if hf is None:
            continue
        t = model.tensors[name]
        assert t.type == ("F32" if ident in KEEP_F32 else "BF16"), name
        np.testing.assert_array_equal(np.asarray(t.numpy(), np.float32), ref[hf], err_msg=name)  # exact


def test_rope_freqs(converted):
    model = load(converted("default", "f32"))
    # full layers: hd 32, partial factor 0.25 → int(0.25 * 32 // 2) = 4 rotated pairs of 16
    want = np.array([1.0] * 4 + [1e30] * 12, np.float32)
    np.testing.assert_array_equal(model.tensors["rope_freqs.weight"].numpy(), want)


def test_gguf_py_reader_opens_every_type(tiny_checkpoint, converted):
    pairs = expected_pairs(tiny_checkpoint("default"))
    for out_type in ("f32", "q8_0"):
        r = gguf.GGUFReader(converted("default", out_type))
        assert r.fields[KEYS["ARCHITECTURE"]].contents() == "diffusion-gemma"
        assert [t.name for t in r.tensors] == [g for _, g, _ in pairs]
        ours = load(converted("default", out_type))
        for t in r.tensors:
            assert tuple(int(d) for d in reversed(t.shape)) == ours.tensors[t.name].shape
            if out_type == "f32":
                np.testing.assert_array_equal(
                    t.data.reshape(ours.tensors[t.name].shape), ours.tensors[t.name].numpy()
                )


def test_q8_0_falls_back_to_f16_for_odd_rows(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("odd")  # moe_intermediate 48: experts.down_proj rows are not 32-multiples
    ref = checkpoint_tensors(ckpt)
    model = load(converted("odd", "q8_0"))
    seen = set()
    for ident, name, hf in expected_pairs(ckpt):
        if hf is None or ident in KEEP_F32:
            continue
        t, want = model.tensors[name], ref[hf]
        got = np.asarray(t.numpy(), np.float32)
        if want.shape[-1] % 32 == 0:
            assert t.type == "Q8_0", name
            assert np.all(np.abs(got - want) <= q8_0_bound(want)), name
        else:
            assert t.type == "F16", name
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        seen.add(t.type)
    assert seen == {"Q8_0", "F16"}


# --- metadata ---------------------------------------------------------------------------------
def test_metadata_matches_config(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("default")
    cfg = json.loads((ckpt / "config.json").read_text())
    tc = cfg["text_config"]
    gen = json.loads((ckpt / "generation_config.json").read_text())
    md = load(converted("default", "f32")).metadata
    K = KEYS
    assert md[K["ARCHITECTURE"]] == "diffusion-gemma"
    assert md[K["BLOCK_COUNT"]] == tc["num_hidden_layers"] == 4
    assert md[K["EMBEDDING_LENGTH"]] == tc["hidden_size"]
    assert md[K["FEED_FORWARD_LENGTH"]] == tc["intermediate_size"]
    assert md[K["HEAD_COUNT"]] == tc["num_attention_heads"]
    assert md[K["CONTEXT_LENGTH"]] == tc["max_position_embeddings"]
    assert list(md[K["HEAD_COUNT_KV"]]) == [2, 1, 2, 1]
    assert list(md[K["SLIDING_WINDOW_PATTERN"]]) == [True, False, True, False]
    assert (md[K["KEY_LENGTH_SWA"]], md[K["KEY_LENGTH"]]) == (tc["head_dim"], 32)
    assert (md[K["VALUE_LENGTH_SWA"]], md[K["VALUE_LENGTH"]]) == (tc["head_dim"], 32)
    assert md[K["SLIDING_WINDOW"]] == tc["sliding_window"]
    assert md[K["EXPERT_COUNT"]] == tc["num_experts"]
    assert md[K["EXPERT_USED_COUNT"]] == tc["top_k_experts"]
    assert md[K["EXPERT_FEED_FORWARD_LENGTH"]] == tc["moe_intermediate_size"]
    assert md[K["CANVAS_LENGTH"]] == cfg["canvas_length"]
    assert md[K["CAUSAL"]] is False
    assert md[K["RMS_EPS"]] == pytest.approx(tc["rms_norm_eps"], rel=1e-7)  # stored as f32
    assert md[K["ROPE_FREQ_BASE"]] == tc["rope_parameters"]["full_attention"]["rope_theta"]
    assert md[K["ROPE_FREQ_BASE_SWA"]] == tc["rope_parameters"]["sliding_attention"]["rope_theta"]
    assert md[K["DIFFRT_ROPE_TYPE"]] == "proportional" and md[K["DIFFRT_ROPE_TYPE_SWA"]] == "default"
    assert md[K["DIFFRT_ROPE_PARTIAL_FACTOR"]] == 0.25
    assert md[K["FINAL_LOGIT_SOFTCAPPING"]] == 30.0  # class default: absent from config.json
    assert md[K["DIFFRT_BIDIRECTIONAL"]] == "none"
    assert json.loads(md[K["DIFFRT_HF_CONFIG"]]) == cfg
    # generation config (spec §10.1)
    assert md[K["MAX_STEPS"]] == gen["max_denoising_steps"]
    assert md[K["T_MIN"]] == pytest.approx(gen["t_min"], rel=1e-7)
    assert md[K["T_MAX"]] == pytest.approx(gen["t_max"], rel=1e-7)
    assert md[K["ENTROPY_BOUND"]] == pytest.approx(gen["sampler_config"]["entropy_bound"], rel=1e-7)
    assert md[K["STABILITY_THRESHOLD"]] == gen["stability_threshold"]
    assert md[K["CONFIDENCE_THRESHOLD"]] == pytest.approx(gen["confidence_threshold"], rel=1e-7)
    assert md[K["DIFFRT_MAX_NEW_TOKENS"]] == gen["max_new_tokens"]
    eos = gen["eos_token_id"]
    assert list(md[K["DIFFRT_EOS_IDS"]]) == (eos if isinstance(eos, list) else [eos])
    assert md[K["DIFFRT_PAD_ID"]] == gen["pad_token_id"]


def test_missing_generation_config_gives_defaults_and_no_eos(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("default"), ckpt)
    os.remove(ckpt / "generation_config.json")
    out = tmp_path / "m.gguf"
    convert(str(ckpt), str(out), "f32", progress=False)
    md = load(out).metadata
    assert KEYS["DIFFRT_EOS_IDS"] not in md  # absent = no EOS (generate() has none either)
    assert md[KEYS["DIFFRT_PAD_ID"]] == -1
    assert (md[KEYS["MAX_STEPS"]], md[KEYS["DIFFRT_MAX_NEW_TOKENS"]], md[KEYS["STABILITY_THRESHOLD"]]) == (
        48,
        256,
        1,
    )
    assert md[KEYS["T_MIN"]] == pytest.approx(0.4) and md[KEYS["T_MAX"]] == pytest.approx(0.8)


def test_config_variants(tiny_checkpoint, tmp_path):
    """A raw config (global_head_dim instead of per_layer_config) gives the same geometry; an explicit
    soft-cap and the 'all' bidirectional mode are carried into the file."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("default"), ckpt)

    def edit(cfg):
        tc = cfg["text_config"]
        del tc["per_layer_config"]
        tc.update(
            global_head_dim=32,
            num_global_key_value_heads=1,
            final_logit_softcapping=20.0,
            use_bidirectional_attention="all",
        )

    _edit_config(ckpt, edit)
    out = tmp_path / "m.gguf"
    convert(str(ckpt), str(out), "f32", progress=False)
    md = load(out).metadata
    assert list(md[KEYS["HEAD_COUNT_KV"]]) == [2, 1, 2, 1]
    assert (md[KEYS["KEY_LENGTH_SWA"]], md[KEYS["KEY_LENGTH"]]) == (16, 32)
    assert md[KEYS["FINAL_LOGIT_SOFTCAPPING"]] == 20.0
    assert md[KEYS["DIFFRT_BIDIRECTIONAL"]] == "all"
    assert md[KEYS["SLIDING_WINDOW"]] == 8  # as in config.json; the engine applies the halving


# --- tokenizer --------------------------------------------------------------------------------
def test_tokenizer_in_file_encodes_like_checkpoint(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("default")
    md = load(converted("default", "f32")).metadata
    ours = Tokenizer.from_str(md[KEYS["TOKENIZER_HF_JSON"]])
    theirs = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    texts = [
        "Hello, world!",
        "",
        "  leading spaces and\ttabs\n",
        "<start_of_turn>user\nhi<end_of_turn>",
        "ünïcødé — 日本語 🙂",
        "The quick brown fox jumps over the lazy dog. 1234567890",
    ]
    for text in texts:
        assert ours.encode(text).ids == theirs.encode(text).ids, text
    # The ggml token list is the same vocabulary, by id.
    tokens = md[KEYS["TOKENIZER_TOKENS"]]
    for text, i in theirs.get_vocab(with_added_tokens=True).items():
        assert tokens[i] == text
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    for key, ggml_key in (
        ("bos_token", "BOS_ID"),
        ("eos_token", "EOS_ID"),
        ("pad_token", "PAD_ID"),
        ("unk_token", "UNK_ID"),
        ("mask_token", "MASK_ID"),
    ):
        assert md[KEYS[ggml_key]] == theirs.token_to_id(cfg[key]), key
    tmpl_file = ckpt / "chat_template.jinja"
    want = tmpl_file.read_text() if tmpl_file.exists() else cfg["chat_template"]
    assert md[KEYS["CHAT_TEMPLATE"]] == want


# --- shards -----------------------------------------------------------------------------------
def test_sharded_converts_like_unsharded(tiny_checkpoint, converted):
    assert (tiny_checkpoint("sharded") / "model.safetensors.index.json").exists()
    a, b = load(converted("default", "f32")), load(converted("sharded", "f32"))
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name].numpy(), b.tensors[name].numpy(), err_msg=name)
    skip = {KEYS["NAME"]}  # the directory name
    assert {k: v for k, v in a.metadata.items() if k not in skip} == {
        k: v for k, v in b.metadata.items() if k not in skip
    }


# --- bad inputs -------------------------------------------------------------------------------
def _edit_config(ckpt, fn):
    path = ckpt / "config.json"
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def _edit_tensors(ckpt, fn):
    path = ckpt / "model.safetensors"
    tensors = load_file(str(path))  # the default tiny model is f32: numpy reads it
    fn(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _truncate(ckpt):
    path = ckpt / "model.safetensors"
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)


BAD = {
    "wrong architecture": (
        lambda c: _edit_config(c, lambda j: j.update(architectures=["LlamaForCausalLM"], model_type="llama")),
        ConfigError,
        "LlamaForCausalLM",
    ),
    "missing tensor": (
        lambda c: _edit_tensors(c, lambda t: t.pop("model.decoder.layers.2.mlp.up_proj.weight")),
        FormatError,
        "model.decoder.layers.2.mlp.up_proj.weight",
    ),
    "mis-shaped tensor": (
        lambda c: _edit_tensors(
            c,
            lambda t: t.update(
                {"model.decoder.layers.1.self_attn.k_proj.weight": np.zeros((64, 64), np.float32)}
            ),
        ),
        FormatError,
        "[64, 64], expected [32, 64]",
    ),
    "unknown tensor": (
        lambda c: _edit_tensors(
            c, lambda t: t.update({"model.decoder.extra.weight": np.zeros((2,), np.float32)})
        ),
        FormatError,
        "model.decoder.extra.weight",
    ),
    "truncated safetensors": (_truncate, FormatError, "truncated"),
    "untied embeddings": (
        lambda c: _edit_config(c, lambda j: j.update(tie_word_embeddings=False)),
        ConfigError,
        "tie_word_embeddings",
    ),
    "attention bias": (
        lambda c: _edit_config(c, lambda j: j["text_config"].update(attention_bias=True)),
        ConfigError,
        "attention_bias",
    ),
    "bad eos list": (
        lambda c: (c / "generation_config.json").write_text('{"eos_token_id": ["x"]}'),
        ConfigError,
        "eos_token_id",
    ),
    "missing config": (lambda c: os.remove(c / "config.json"), ConfigError, "config.json"),
    "config not json": (lambda c: (c / "config.json").write_text("{nope"), ConfigError, "config.json"),
    "missing tokenizer": (lambda c: os.remove(c / "tokenizer.json"), ConfigError, "tokenizer.json"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_cleanly(tiny_checkpoint, tmp_path, case):
    mutate, error, text = BAD[case]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint("default"), ckpt)
    mutate(ckpt)
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    with pytest.raises(error, match=None) as e:
        convert(str(ckpt), str(out), "f32", progress=False)
    assert text in str(e.value)
    assert os.listdir(out.parent) == []  # no .gguf, no .tmp
    # An existing output is left untouched.
    out.write_bytes(b"previous")
    with pytest.raises(error):
        convert(str(ckpt), str(out), "f32", progress=False)
    assert os.listdir(out.parent) == ["model.gguf"] and out.read_bytes() == b"previous"


def test_not_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        convert(str(tmp_path / "nowhere"), str(tmp_path / "m.gguf"), progress=False)
    assert os.listdir(tmp_path) == []


def test_interrupt_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    from diffrt.convert import checkpoint

    calls = []
    original = checkpoint.TensorRef.read_rows

    def interrupted(self, *a, **kw):
        calls.append(self.name)
        if len(calls) == 20:  # mid-file, after data has been written
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(checkpoint.TensorRef, "read_rows", interrupted)
    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        convert(str(tiny_checkpoint("default")), str(out), "f32", progress=False)
    assert os.listdir(tmp_path) == ["model.gguf"] and out.read_bytes() == b"previous"


# --- CLI --------------------------------------------------------------------------------------
def test_cli_convert_refuses_overwrite_without_force(tiny_checkpoint, tmp_path, capsys):
    ckpt, out = str(tiny_checkpoint("default")), tmp_path / "m.gguf"
    assert main(["convert", ckpt, "-o", str(out), "--type", "q8_0", "--no-progress"]) == 0
    first = out.read_bytes()
    assert main(["convert", ckpt, "-o", str(out), "--type", "f32", "--no-progress"]) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == first
    assert main(["convert", ckpt, "-o", str(out), "--type", "f32", "--force", "--no-progress"]) == 0
    assert load(out).tensors["token_embd.weight"].type == "F32"
    assert main(["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_show_prints_the_model(converted, capsys):
    path = converted("default", "q8_0")
    assert main(["show", str(path)]) == 0
    text = capsys.readouterr().out
    for want in (
        "diffusion-gemma",
        "4 (2 sliding, 2 full)",
        "2,1,2,1",
        "16/32",
        "4 (top-2), width 32",
        "vocabulary",
        "512",
        "canvas length",
        "Q8_0",
        "F32",
        "max denoising steps",
        "48",
        "entropy bound",
        "0.1",
        "eos token ids",
        "chat template",
        "yes",
    ):
        assert want in text, want
    n_params = sum(math.prod(t.shape) for n, t in load(path).tensors.items() if n != "rope_freqs.weight")
    assert f"({n_params:,})" in text

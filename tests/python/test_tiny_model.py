"""The tiny-checkpoint and reference-dump tools (tools/make_tiny_model.py, tools/dump_reference.py)."""

import json

import numpy as np
import pytest
from safetensors import safe_open

# spec Appendix A, the text_config fields that define the architecture.
APPENDIX_A_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_experts": 4, "top_k_experts": 2,
    "moe_intermediate_size": 32, "sliding_window": 8, "vocab_size": 512,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    "per_layer_config": {"1": {"head_dim": 32, "num_key_value_heads": 1},
                         "3": {"head_dim": 32, "num_key_value_heads": 1}},
    "rope_parameters": {
        "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "use_bidirectional_attention": None, "tie_word_embeddings": True, "rms_norm_eps": 1e-06,
}


def _tensors(ckpt):
    out = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(f), "pt") as s:  # "pt": numpy has no bfloat16
            for k in s.keys():
                out[k] = s.get_tensor(k)
    return out


def test_default_checkpoint_files_and_config(tiny_checkpoint):
    ckpt = tiny_checkpoint("default")
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json"]:
        assert (ckpt / f).is_file(), f
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["DiffusionGemmaForBlockDiffusion"]
    assert cfg["canvas_length"] == 16 and cfg["dtype"] == "float32"
    for k, v in APPENDIX_A_TEXT.items():
        assert cfg["text_config"][k] == v, k
    for k in ("global_head_dim", "num_global_key_value_heads", "final_logit_softcapping"):
        assert k not in cfg["text_config"]
    assert cfg["vision_config"]["num_hidden_layers"] == 1 and cfg["vision_config"]["hidden_size"] == 32
    gen = json.loads((ckpt / "generation_config.json").read_text())
    assert gen["max_denoising_steps"] == 48 and gen["t_min"] == 0.4 and gen["t_max"] == 0.8
    assert gen["sampler_config"] == {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1}
    assert gen["eos_token_id"] == [1, 6] and gen["pad_token_id"] == 0 and gen["max_new_tokens"] == 32
    # Appendix B: 112 tensors, no lm_head, no encoder text weights except layer_scalar.
    t = _tensors(ckpt)
    assert len(t) == 112
    assert t["model.decoder.layers.1.self_attn.k_proj.weight"].shape == (32, 64)
    assert "model.decoder.layers.1.self_attn.v_proj.weight" not in t


def test_constant_init_weights_are_randomised(tiny_checkpoint):
    t = _tensors(tiny_checkpoint("default"))
    for name, arr in t.items():
        if name.endswith(("norm.weight", "router.scale", "router.per_expert_scale")):
            assert arr.unique().numel() == arr.numel(), name  # random, no repeated constant
    for i in range(4):
        dec = t[f"model.decoder.layers.{i}.layer_scalar"]
        enc = t[f"model.encoder.language_model.layers.{i}.layer_scalar"]
        assert dec.item() != 1.0 and enc.item() != 1.0 and dec.item() != enc.item()


def test_deterministic(tiny_checkpoint, tmp_path):
    from make_tiny_model import make_tiny_model

    again = make_tiny_model(tmp_path / "again")
    first = tiny_checkpoint("default")
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json"]:
        assert (first / f).read_bytes() == (again / f).read_bytes(), f


def test_tokenizer_and_chat_template(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("default"))
    assert len(tok) == 512
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_tokens_to_ids(["<mask>", "<start_of_turn>", "<end_of_turn>"]) == [4, 5, 6]
    text = "Beautiful is better than ugly. The model reads 42 tokens!"
    ids = tok(text)["input_ids"]
    assert ids[0] == 2 and len(ids) < len(text)  # BOS, and merges actually compress
    assert tok.decode(ids, skip_special_tokens=True) == text
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}]
    s = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert s == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello"
                 "<end_of_turn>\n<start_of_turn>user\nAgain<end_of_turn>\n<start_of_turn>model\n")
    ids = tok.apply_chat_template(msgs[1:2], add_generation_prompt=False, return_dict=True)["input_ids"]
    assert ids[:2] == [2, 5] and ids.count(2) == 1


@pytest.mark.parametrize("name", ["odd", "sharded", "bf16"])
def test_variant_checkpoints(tiny_checkpoint, name):
    ckpt = tiny_checkpoint(name)
    cfg = json.loads((ckpt / "config.json").read_text())
    t = _tensors(ckpt)
    assert len(t) == 112
    if name == "odd":
        assert cfg["text_config"]["hidden_size"] == 96 and cfg["text_config"]["vocab_size"] == 300
        assert t["model.decoder.embed_tokens.weight"].shape == (300, 96)
        from transformers import AutoTokenizer

        assert len(AutoTokenizer.from_pretrained(ckpt)) == 300
    if name == "sharded":
        assert len(list(ckpt.glob("model-0000?-of-00003.safetensors"))) == 3
        index = json.loads((ckpt / "model.safetensors.index.json").read_text())
        assert len(index["weight_map"]) == 112
    if name == "bf16":
        import torch

        assert cfg["dtype"] == "bfloat16"
        assert all(v.dtype == torch.bfloat16 for v in t.values())


def test_dump_reference_shapes(tiny_reference):
    d = tiny_reference("long", prompt_len=12, n_canvas=2, batch=2)  # 6 layers: 5 sliding (W=8), 1 full
    B, P, L, V, H = 2, 12, 16, 512, 64
    assert d["prompt_ids"].shape == (B, P) and int(d["canvas_length"]) == L
    for c, T in [(0, P), (1, P + L)]:
        assert int(d[f"enc{c}.seq_len"]) == T
        for i in range(5):
            assert d[f"enc{c}.layer{i}.k"].shape == (B, 2, 7, 16)  # sliding: last W-1 entries
            assert d[f"enc{c}.layer{i}.v"].shape == (B, 2, 7, 16)
        assert d[f"enc{c}.layer5.k"].shape == (B, 1, T, 32)
        assert d[f"dec{c}.pos"].tolist() == list(range(T, T + L))
        for k in ("logits", "sc_logits_in", "logits_sc"):
            assert d[f"dec{c}.{k}"].shape == (B, L, V)
        assert d[f"dec{c}.layer5.out"].shape == (B, L, H) and d[f"dec{c}.sc.norm"].shape == (B, L, H)
        assert not np.array_equal(d[f"dec{c}.logits"], d[f"dec{c}.logits_sc"])
        assert np.abs(d[f"dec{c}.logits"]).max() <= 30.0  # soft cap
    assert np.array_equal(d["enc1.ids"], d["dec0.commit"])
    for k, v in d.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k


def test_dump_matches_generate(tiny_checkpoint, tiny_hf_model):
    """The dump calls the modules as generate() does: same logits, same SC input, same cache."""
    import torch
    from dump_reference import default_prompt, dump_reference
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    model = tiny_hf_model("long")
    prompt = default_prompt(12, 512)
    d = dump_reference(tiny_checkpoint("long"), prompt, 2, 0, model=model, commit_from="logits")
    calls = []
    orig = model.forward

    def spy(**kw):
        out = orig(**kw)
        calls.append((kw["decoder_input_ids"].clone(), kw["self_conditioning_logits"], out.logits.clone()))
        return out

    gc = DiffusionGemmaGenerationConfig(max_new_tokens=32, max_denoising_steps=1, t_min=0.4, t_max=0.8,
                                        stability_threshold=None, confidence_threshold=None)
    model.forward = spy
    try:
        torch.manual_seed(0)
        res = model.generate(torch.as_tensor(prompt), generation_config=gc,
                             decoder_input_ids=torch.as_tensor(d["dec0.canvas"]))
    finally:
        del model.forward
    # canvas 0, step 1 of 1: no SC, exactly dec0.logits; its argmax is committed and encoded.
    assert calls[0][1] is None
    np.testing.assert_array_equal(calls[0][2].numpy(), d["dec0.logits"])
    np.testing.assert_array_equal(res.sequences[:, 12:28].numpy(), d["dec0.commit"])
    for i in range(6):  # the returned cache holds prompt + commit 0 (the last canvas is never encoded)
        np.testing.assert_array_equal(res.past_key_values.layers[i].keys.numpy(), d[f"enc1.layer{i}.k"])
        np.testing.assert_array_equal(res.past_key_values.layers[i].values.numpy(), d[f"enc1.layer{i}.v"])
    # With two steps the second call's SC input is exactly what the dump feeds.
    gc.max_denoising_steps = 2
    calls.clear()
    model.forward = spy
    try:
        model.generate(torch.as_tensor(prompt), generation_config=gc, max_new_tokens=16,
                       decoder_input_ids=torch.as_tensor(d["dec0.canvas"]))
    finally:
        del model.forward
    np.testing.assert_array_equal(calls[0][2].numpy(), d["dec0.logits"])
    sc = calls[1][1].numpy()
    # The dump's SC input is the step-N temperature; with N=2, T(step 2) = t_max as for any N.
    np.testing.assert_array_equal(sc, d["dec0.sc_logits_in"])

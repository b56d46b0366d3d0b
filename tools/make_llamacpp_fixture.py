#!/usr/bin/env python3
"""Regenerate tests/data/llamacpp/: GGUF files made by llama.cpp's own DiffusionGemma tools.

The community's DiffusionGemma GGUFs are made with the converter of llama.cpp's open pull request
#24423 ("diffusion-gemma"). These test files are made the same way, from a tiny random checkpoint, so
that the tests can check, without llama.cpp installed, that such files load in diffrt, tokenize from
their tokenizer.ggml.* arrays, and compute what diffrt's own conversions of the same weights compute
(tests/python/test_llamacpp_files.py).

Source used for the committed files: PR #24423 head c3fb97241295c196e09b783e705e84b96cd1bd74
("Add tool calling"), from the fork snapshot unslothai/llama.cpp (the commit holds
conversion/diffusion_gemma.py and src/models/diffusion-gemma.cpp). Build it CPU-only first:

    cd LLAMA_TREE
    cmake -B build -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build build -j2 --target llama-quantize

then (transformers 5.23, torch, tokenizers, safetensors and numpy installed; the PR's own gguf-py
is used by its converter):

    python tools/make_llamacpp_fixture.py LLAMA_TREE [--out tests/data/llamacpp]

Steps (each one what a user of the PR would do, plus the three fixes a transformers-5.23 checkpoint
needs, see /work/shared/spec/gguf-community-layout.md "Making such files with the PR's own tools"):
  1. tools/make_tiny_model.py's default tiny model (spec Appendix A: hidden 64, 4 layers s,f,s,f,
     4 experts top-2 of width 32, vocab 512, canvas 16, f32). Every matrix row is a multiple of 32,
     so Q8_0 quantises all of them (none is left in F32/F16 for lack of whole blocks).
  2. config.json: the pre-5.15 keys the PR's converter reads are added to text_config
     (global_head_dim, num_global_key_value_heads from per_layer_config; attention_k_eq_v and
     enable_moe_block true). The converter must also not round-trip config.json through AutoConfig
     (transformers >= 5.15 drops those keys again): it is run with AutoConfig disabled in its hparams
     loader (conversion/base.py), which then falls back to the raw config.json.
  3. tokenizer.json: the tiny model's GPT-2-style byte-level BPE is refused by the PR's converter
     ("Cannot find Llama BPE tokenizer"), so it is replaced by a Gemma-style one of exactly 512
     entries: BPE with byte_fallback, "▁" for spaces, a Sequence decoder, <bos> post-processor; ids 0..8
     are the tiny model's specials (<pad> <eos> <bos> <unk> <mask> <start_of_turn> <end_of_turn>
     <start_of_thinking> <end_of_thinking>; mask_token <mask> = 4 in tokenizer_config.json, which
     llama.cpp's CLI requires), ids 9..264 the <0x00>..<0xFF> byte pieces, then 247 pieces/merges
     trained on make_tiny_model's corpus.
  4. convert_hf_to_gguf.py --outtype f32  -> llamacpp-f32.gguf
  5. llama-quantize llamacpp-f32.gguf llamacpp-q8_0.gguf Q8_0
The checkpoint (config.json with the added keys, the new tokenizer files, model.safetensors) is
written to OUT/checkpoint: the tests convert it with diffrt's converter and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

PR_COMMIT = "c3fb97241295c196e09b783e705e84b96cd1bd74"
VOCAB = 512
# Files kept from the checkpoint (chat_template.jinja is left out: tokenizer_config.json carries the same
# template, and both converters read it from there).
CHECKPOINT_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json"]


def patch_config(ckpt: Path) -> dict:
    """Add the pre-5.15 Gemma-4 keys the PR's converter reads, taken from per_layer_config."""
    p = ckpt / "config.json"
    cfg = json.loads(p.read_text())
    tc = cfg["text_config"]
    full = [i for i, t in enumerate(tc["layer_types"]) if t == "full_attention"]
    plc = tc.get("per_layer_config", {})
    hd = {plc[str(i)]["head_dim"] for i in full}
    kv = {plc[str(i)]["num_key_value_heads"] for i in full}
    assert len(hd) == 1 and len(kv) == 1, (hd, kv)
    tc["global_head_dim"] = hd.pop()
    tc["num_global_key_value_heads"] = kv.pop()
    tc["attention_k_eq_v"] = True
    tc["enable_moe_block"] = True
    p.write_text(json.dumps(cfg, indent=2) + "\n")
    return {k: tc[k] for k in ("global_head_dim", "num_global_key_value_heads", "attention_k_eq_v", "enable_moe_block")}


def gemma_style_tokenizer(n: int):
    """SentencePiece-style BPE (byte fallback) of exactly n entries: specials, the 256 byte pieces, then
    pieces trained on make_tiny_model's corpus (in the trainer's order, with its merges)."""
    from make_tiny_model import SPECIAL_TOKENS, _corpus
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers

    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    n_trained = n - len(byte_pieces)  # the trained vocabulary includes the specials
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Replace(" ", "\u2581")
    trainer = trainers.BpeTrainer(vocab_size=n_trained, special_tokens=SPECIAL_TOKENS, show_progress=False)
    t.train_from_iterator(_corpus(), trainer=trainer)
    trained = json.loads(t.to_str())["model"]
    order = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    assert [tok for tok, _ in order[: len(SPECIAL_TOKENS)]] == SPECIAL_TOKENS
    pieces = [tok for tok, _ in order[len(SPECIAL_TOKENS):]]
    assert not set(pieces) & set(byte_pieces)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + byte_pieces + pieces)}
    if len(vocab) != n:
        raise ValueError(f"tokenizer has {len(vocab)} entries, wanted {n} (corpus too small?)")
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i
    return tok


CONVERT = r"""
import runpy, sys
tree = sys.argv[1]
sys.path.insert(0, tree)
sys.path.insert(1, tree + "/gguf-py")
import conversion.base as base

class _NoAutoConfig:
    @staticmethod
    def from_pretrained(*a, **k):
        raise RuntimeError("AutoConfig disabled for hparams: read the raw config.json")

base.AutoConfig = _NoAutoConfig  # AutoTokenizer keeps the real AutoConfig
script = tree + "/convert_hf_to_gguf.py"
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("llama_tree", type=Path, help="llama.cpp PR #24423 source tree, built (build/bin/llama-quantize)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "llamacpp")
    ap.add_argument("--quantize", type=Path, default=None, help="llama-quantize (default LLAMA_TREE/build/bin/)")
    args = ap.parse_args(argv)
    tree = args.llama_tree.resolve()
    quantize = args.quantize or tree / "build" / "bin" / "llama-quantize"
    if not (tree / "convert_hf_to_gguf.py").is_file() or not (tree / "conversion" / "diffusion_gemma.py").is_file():
        sys.exit(f"{tree}: not a llama.cpp tree with the DiffusionGemma converter (PR #24423, {PR_COMMIT[:9]})")
    if not quantize.is_file():
        sys.exit(f"{quantize}: not found (build the llama-quantize target)")
    commit = (tree / "COMMIT").read_text().strip() if (tree / "COMMIT").is_file() else None
    if commit is None and (tree / ".git").exists():
        git = ["git", "-C", str(tree), "rev-parse", "HEAD"]
        commit = subprocess.run(git, check=False, capture_output=True, text=True).stdout.strip()
    if commit != PR_COMMIT:
        print(f"warning: tree is at {commit or 'an unknown commit'}, the committed files were made at {PR_COMMIT}")

    from make_tiny_model import make_tiny_model

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_model(Path(tmp) / "ckpt")  # the default tiny config
        print("config keys added:", patch_config(ckpt))
        gemma_style_tokenizer(VOCAB).save(str(ckpt / "tokenizer.json"))
        (ckpt / "chat_template.jinja").unlink(missing_ok=True)  # tokenizer_config.json has it
        dest = out / "checkpoint"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        for name in CHECKPOINT_FILES:
            shutil.copy2(ckpt / name, dest / name)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        f32 = out / "llamacpp-f32.gguf"
        subprocess.run([sys.executable, "-c", CONVERT, str(tree), str(dest), "--outtype", "f32",
                        "--outfile", str(f32)], check=True, env=env)
        subprocess.run([str(quantize), str(f32), str(out / "llamacpp-q8_0.gguf"), "Q8_0", "1"], check=True, env=env)
    for f in sorted(out.rglob("*")):
        if f.is_file():
            print(f"{f.stat().st_size:>9}  {f.relative_to(out)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train the small default DiffusionGemma (the model shipped in models/) on CPU.

Architecture: `DiffusionGemmaForBlockDiffusion` of transformers 5.23.0, built with the same config
helper as tools/make_tiny_model.py (tiny vision tower included), at a size that learns readable
English in about an hour on two CPU cores.

Objective (uniform-noise block diffusion, as the model is used by `generate()`):
  * a clean prefix goes causally through the encoder, which fills the KV cache;
  * the next `canvas_length` tokens form the canvas; each position is replaced by a uniformly random
    token id in [0, V) with probability t, t ~ U(0, 1) per example (generate() starts from an all-random
    canvas and re-randomises every position it does not accept, so every noise level occurs);
  * the decoder reads the cache and the noisy canvas and predicts the clean canvas: cross-entropy on
    every canvas position (clean positions must be copied, since generate() commits the argmax of all);
  * self-conditioning on half of the batches: a first no-grad decoder pass on the same noisy canvas,
    its logits divided by a temperature drawn from [t_min, t_max] (generate() feeds temperature-scaled
    logits back) are passed as `self_conditioning_logits`;
  * an auxiliary causal-LM loss on the encoder's prefix positions (the model output carries
    `encoder_last_hidden_state` for this), weight `--ar-weight`; encoder and decoder share weights.

Data: records from tools/make_corpus.py (paragraphs of the World English Bible, grouped by chapter),
formatted either as a Gemma chat turn ("Tell me about Moses." / "Read me Genesis 1." -> the paragraphs)
or as plain text, concatenated in a seeded order. An example is a window starting at a record start: prefix =
P tokens, canvas = the next L tokens; P is drawn per batch so short prompts and long contexts both occur.

Deterministic for a fixed seed, thread count and software stack (see models/README.md).

    python3 tools/train_tiny.py CORPUS_DIR OUT_DIR [--steps N] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_model import CHAT_TEMPLATE, END_OF_TURN_ID, SPECIAL_TOKENS, build_config  # noqa: E402

PAD, EOS, BOS = 0, 1, 2

ARCH = dict(
    hidden=256,
    layers=4,  # s,f,s,f (make_tiny_model's 4-layer pattern)
    heads=4,
    kv_heads=2,
    head_dim=64,
    global_head_dim=64,
    global_kv_heads=1,
    intermediate=512,
    experts=8,
    top_k=2,
    moe_intermediate=128,
    sliding_window=128,
    layer_types=None,
    canvas=32,
    vocab=6144,
)

TOPIC_PROMPTS = ["Tell me about {}.", "Write about {}.", "What happened to {}?", "Tell me a story about {}."]
PASSAGE_PROMPTS = ["Read me {}.", "Recite {}."]
MIN_TOPIC_COUNT = 20  # a name becomes a prompt topic only if the training text uses it this often

# Sampler defaults written to generation_config.json, chosen by a sweep on held-out prompts with diffrt
# (tools/sweep_sampler.py, docs/perf.md): the spec's temperatures, but a large entropy budget, which keeps
# the tokens already accepted from being re-noised (this small model is rarely sure enough of a clean
# token for the spec's 0.1).
GEN_DEFAULTS = dict(max_new_tokens=128, max_denoising_steps=48, entropy_bound=3.0, t_min=0.4, t_max=0.8,
                    stability_threshold=1, confidence_threshold=0.005)


# ---------------------------------------------------------------- data

def load_records(path: Path, max_chars: int = 700) -> list[dict]:
    """Group consecutive paragraphs of one section into records of at most ~max_chars characters."""
    out: list[dict] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if out and out[-1]["title"] == r["title"] and len(out[-1]["text"]) + len(r["text"]) <= max_chars:
            out[-1]["text"] += "\n\n" + r["text"]
        else:
            out.append(dict(r))
    return out


_NAME = re.compile(r"(?<![.!?“‘\s]\s)(?<![“‘(—])(?<!^)\b([A-Z][a-z]{2,})\b")


def topic_counts(records: list[dict]) -> Counter:
    """How often each name occurs: a capitalised word inside a sentence that is rarely written in
    lower case (so "Moses", "Jerusalem", but not "King" or "Then")."""
    caps = Counter(w for r in records for w in _NAME.findall(r["text"]))
    lower = Counter(w for r in records for w in re.findall(r"\b[a-z]{3,}\b", r["text"]))
    return Counter({w: n for w, n in caps.items() if lower[w.lower()] * 4 < n})


def format_record(r: dict, topics: Counter, rng: random.Random) -> tuple[str, bool]:
    """A chat turn (70%) or plain text (30%); returns (text, is_chat). Special tokens are literal text.

    The user turn names a person or place of the passage ("Tell me about Moses.") or, when the passage
    has none or one time in four, the passage itself ("Read me Genesis 1.")."""
    if rng.random() < 0.7:
        names = sorted({w for w in _NAME.findall(r["text"]) if topics[w] >= MIN_TOPIC_COUNT})
        if names and rng.random() < 0.75:
            prompt = rng.choice(TOPIC_PROMPTS).format(rng.choice(names))
        else:
            prompt = rng.choice(PASSAGE_PROMPTS).format(r["title"])
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["text"]}]
        import jinja2

        text = jinja2.Template(CHAT_TEMPLATE).render(messages=msgs, bos_token="<bos>", add_generation_prompt=False)
        return text, True
    return "<bos>" + r["text"] + "<eos>", False


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE, Gemma special tokens at ids 0..8, trained on the training texts only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"tokenizer trained to {tok.get_vocab_size()} entries, wanted {vocab_size}")
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", BOS)])
    return tok


def save_tokenizer(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", additional_special_tokens=SPECIAL_TOKENS[5:], add_bos_token=True,
        add_eos_token=False, padding_side="left", model_max_length=131072)
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    tc_path = out / "tokenizer_config.json"  # the template also in tokenizer_config.json, for the converter
    tc = json.loads(tc_path.read_text())
    tc.update(add_bos_token=True, add_eos_token=False, chat_template=CHAT_TEMPLATE)
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")


def encode_stream(tok, texts: list[str]):
    """Concatenate the tokenised texts (no post-processor: <bos> is literal in the text)."""
    import torch

    ids, starts = [], []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        starts.append(len(ids))
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def prepare_data(corpus: Path, vocab: int, seed: int):
    rng = random.Random(seed)
    train = load_records(corpus / "train.jsonl")
    held = load_records(corpus / "heldout.jsonl")
    rng.shuffle(train)
    topics = topic_counts(train)
    train_texts = [format_record(r, topics, rng)[0] for r in train]
    held_texts = [format_record(r, topics, rng)[0] for r in held]
    tok = build_tokenizer(train_texts, vocab)
    return tok, train_texts, held_texts


def sample_batch(stream, starts, batch: int, L: int, p_max: int, gen):
    """Windows that begin at a record start: prefix of P tokens (P drawn per batch), then L canvas tokens."""
    import torch

    if torch.rand((), generator=gen) < 0.5:
        P = int(torch.randint(1, 49, (), generator=gen))
    else:
        P = int(torch.randint(1, p_max + 1, (), generator=gen))
    ok = starts[starts + P + L <= len(stream)]
    pick = ok[torch.randint(0, len(ok), (batch,), generator=gen)]
    idx = pick[:, None] + torch.arange(P + L)[None, :]
    win = stream[idx]
    return win[:, :P], win[:, P:]


def corrupt(canvas, vocab: int, t, gen):
    """Replace each position by a uniform random id with probability t (one t per row)."""
    import torch

    noise = torch.randint(0, vocab, canvas.shape, generator=gen)
    hit = torch.rand(canvas.shape, generator=gen) < t[:, None]
    return torch.where(hit, noise, canvas), hit


# ---------------------------------------------------------------- model passes

def softcap_logits(model, h):
    import torch

    c = model.final_logit_softcapping
    return torch.tanh(model.lm_head(h).float() / c) * c


def diffusion_losses(model, prefix, canvas, noisy, self_cond_T=None, ar_weight=0.0):
    """Return (total loss, canvas CE, AR CE, canvas logits). self_cond_T: None = no self-conditioning."""
    import torch
    import torch.nn.functional as F

    enc = model.model.encoder(input_ids=prefix, use_cache=True)
    cache = enc.past_key_values
    sc = None
    if self_cond_T is not None:
        with torch.no_grad():
            h0 = model.model.decoder(decoder_input_ids=noisy, past_key_values=cache).last_hidden_state
            sc = softcap_logits(model, h0) / self_cond_T[:, None, None]
    h = model.model.decoder(decoder_input_ids=noisy, past_key_values=cache, self_conditioning_logits=sc).last_hidden_state
    logits = softcap_logits(model, h)
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V), canvas.reshape(-1))
    ar = torch.zeros((), device=logits.device)
    if ar_weight > 0:
        # next-token loss on the prefix; the last prefix position predicts the first canvas token
        targets = torch.cat([prefix[:, 1:], canvas[:, :1]], dim=1)
        ar_logits = softcap_logits(model, enc.last_hidden_state)
        ar = F.cross_entropy(ar_logits.reshape(-1, V), targets.reshape(-1))
    return ce + ar_weight * ar, ce, ar, logits


def build_model(seed: int):
    import torch
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(build_config(ARCH))
    return model


def generation_config(eos_ids):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig, EntropyBoundSamplerConfig)

    g = GEN_DEFAULTS
    return DiffusionGemmaGenerationConfig(
        max_new_tokens=g["max_new_tokens"], max_denoising_steps=g["max_denoising_steps"],
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(g["entropy_bound"])),
        t_min=g["t_min"], t_max=g["t_max"], stability_threshold=g["stability_threshold"],
        confidence_threshold=float(g["confidence_threshold"]), bos_token_id=BOS, eos_token_id=eos_ids,
        pad_token_id=PAD)


def save_checkpoint(model, tok, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation_config([EOS, END_OF_TURN_ID])
    model.save_pretrained(out)
    save_tokenizer(tok, out)
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="directory with train.jsonl / heldout.jsonl from tools/make_corpus.py")
    ap.add_argument("out", help="output checkpoint directory (the final model); step checkpoints go to OUT/ckpt")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--p-max", type=int, default=128)
    ap.add_argument("--ar-weight", type=float, default=0.5)
    ap.add_argument("--self-cond", type=float, default=0.5, help="fraction of batches with self-conditioning")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--device", default="cpu", help="cpu (the reproducible recipe) or cuda")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/ckpt/state.pt")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop (and save) after this step; the schedule still follows --steps")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    # CUDA: some MoE scatter ops have no deterministic kernel; warn instead of failing there.
    torch.use_deterministic_algorithms(True, warn_only=args.device != "cpu")
    out = Path(args.out)
    ckpt = out / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)

    tok, train_texts, held_texts = prepare_data(Path(args.corpus), ARCH["vocab"], args.seed)
    stream, starts = encode_stream(tok, train_texts)
    print(f"train stream: {len(stream)} tokens, {len(starts)} records", flush=True)

    model = build_model(args.seed).to(args.device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters (unique): {n_params}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step0 = 0
    if args.resume and (ckpt / "state.pt").exists():
        st = torch.load(ckpt / "state.pt", weights_only=False, map_location=args.device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step0 = st["step"]
        print(f"resumed at step {step0}", flush=True)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        frac = (s - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    L, V = ARCH["canvas"], ARCH["vocab"]
    t0 = time.time()
    acc = {"loss": 0.0, "ce": 0.0, "ar": 0.0, "n": 0}
    end = min(args.steps, args.stop_after or args.steps)
    for step in range(step0, end):
        prefix, canvas = sample_batch(stream, starts, args.batch, L, args.p_max, gen)
        t = torch.rand(args.batch, generator=gen)
        noisy, _ = corrupt(canvas, V, t, gen)
        use_sc = bool(torch.rand((), generator=gen) < args.self_cond)
        sc_T = (0.2 + 0.6 * torch.rand(args.batch, generator=gen)) if use_sc else None
        # batches are drawn on the CPU generator: the same data on every device
        prefix, canvas, noisy = prefix.to(args.device), canvas.to(args.device), noisy.to(args.device)
        sc_T = sc_T.to(args.device) if sc_T is not None else None
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss, ce, ar, _ = diffusion_losses(model, prefix, canvas, noisy, sc_T, args.ar_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc["loss"] += loss.item(); acc["ce"] += ce.item(); acc["ar"] += ar.item(); acc["n"] += 1
        if (step + 1) % args.log_every == 0:
            n = acc["n"]
            el = time.time() - t0
            print(f"step {step + 1} loss {acc['loss'] / n:.3f} canvas_ce {acc['ce'] / n:.3f} ar_ce {acc['ar'] / n:.3f} "
                  f"lr {lr_at(step):.2e} elapsed {el:.0f}s", flush=True)
            acc = {"loss": 0.0, "ce": 0.0, "ar": 0.0, "n": 0}
        if (step + 1) % args.ckpt_every == 0 or step + 1 == end:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "step": step + 1}, ckpt / "state.pt.tmp")
            os.replace(ckpt / "state.pt.tmp", ckpt / "state.pt")
            meta = dict(vars(args), arch=ARCH, step=step + 1, stream_tokens=len(stream),
                        torch=torch.__version__, elapsed_s=round(time.time() - t0))
            model.eval()
            save_checkpoint(model, tok, out, meta)
            model.train()
            print(f"saved step {step + 1} -> {out}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Measure the quality of the trained default model (tools/train_tiny.py) with transformers.

1. Held-out denoising: windows from the held-out records (never trained on), prefix clean, canvas
   corrupted with uniform random tokens at noise level t (t = 0.25, 0.5, 0.75, 1.0); one decoder pass
   without self-conditioning (the first denoising step). Reports, on the corrupted positions, the
   argmax accuracy and the per-token NLL (nats), against a unigram baseline estimated on the training
   stream (add-one smoothed; its "accuracy" is always guessing the most frequent token).
2. Steps vs quality: generate() on held-out prompts with 8/16/32/48 denoising steps (the other sampler
   settings from the checkpoint's generation_config.json) and report
     * word rate: share of generated words (letters only) that occur in the training corpus,
     * judge NLL: per-token NLL of the generated answer under the model's own causal encoder (the
       auxiliary-LM head), a fluency proxy, next to the same number for the held-out reference answers,
     * repeated 3-grams: share of word 3-grams that repeat an earlier one in the same answer,
     * tokens per decoder pass (generate's `tokens_per_forward`).
3. With --diffrt GGUF: the same measures with `diffrt run`, and a tape replay: transformers'
   generate() on the held-out prompts with its random draws recorded (tools/record_tape.py), replayed
   by diffrt on the GGUF; reports how many prompts come out token-identical.

    python3 tools/eval_tiny.py CKPT_DIR CORPUS_DIR [--windows 512] [--prompts 16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as tt  # noqa: E402

NOISE_LEVELS = [0.25, 0.5, 0.75, 1.0]
STEPS = [8, 16, 32, 48]


def _load(ckpt: Path):
    from tokenizers import Tokenizer
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaForBlockDiffusion

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(ckpt).eval()
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    return model, tok


def denoising(model, tok, train_stream, held_texts, windows: int, seed: int):
    import torch

    V = model.config.text_config.vocab_size
    L = model.config.canvas_length
    counts = torch.bincount(train_stream, minlength=V).double() + 1.0
    uni_logp = (counts / counts.sum()).log()
    uni_top = int(counts.argmax())
    stream, starts = tt.encode_stream(tok, held_texts)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in NOISE_LEVELS:
        n = hit_n = correct = 0
        nll = uni_nll = uni_correct = 0.0
        all_correct = all_n = 0
        done = 0
        while done < windows:
            b = min(32, windows - done)
            prefix, canvas = tt.sample_batch(stream, starts, b, L, 160, gen)
            noisy, hit = tt.corrupt(canvas, V, torch.full((b,), t), gen)
            with torch.no_grad():
                _, _, _, logits = tt.diffusion_losses(model, prefix, canvas, noisy)
            logp = logits.log_softmax(-1)
            tgt_logp = logp.gather(-1, canvas[..., None])[..., 0]
            pred = logits.argmax(-1)
            nll -= float(tgt_logp[hit].sum())
            correct += int((pred == canvas)[hit].sum())
            uni_nll -= float(uni_logp[canvas[hit]].sum())
            uni_correct += int((canvas[hit] == uni_top).sum())
            hit_n += int(hit.sum())
            all_correct += int((pred == canvas).sum())
            all_n += canvas.numel()
            done += b
        rows.append(dict(t=t, positions=hit_n, acc=correct / hit_n, nll=nll / hit_n, acc_all=all_correct / all_n,
                         uni_acc=uni_correct / hit_n, uni_nll=uni_nll / hit_n))
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def judge_nll(model, tok, prompt_ids: list[int], answer_ids: list[int]) -> tuple[float, int]:
    """Sum of next-token NLL of answer_ids given prompt_ids under the causal encoder, and the count."""
    import torch

    if not answer_ids:
        return 0.0, 0
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        h = model.model.encoder(input_ids=ids, use_cache=True).last_hidden_state
        logp = tt.softcap_logits(model, h).log_softmax(-1)[0]
    P = len(prompt_ids)
    tgt = torch.tensor(answer_ids)
    lp = logp[P - 1 : P - 1 + len(answer_ids)].gather(-1, tgt[:, None])[:, 0]
    return float(-lp.sum()), len(answer_ids)


@functools.cache
def _topics(corpus: Path):
    """The training corpus's name counts (counted once per run, not once per evaluation)."""
    return tt.topic_counts(tt.load_records(corpus / "train.jsonl"))


def held_prompts(corpus: Path, n: int):
    """(prompt, reference answer) from the first n held-out records, asked as in training: about the
    record's rarest name ("Tell me about Moses."), or for the passage ("Read me Genesis 1.")."""
    topics = _topics(Path(corpus))
    out = []
    for r in tt.load_records(corpus / "heldout.jsonl")[:n]:
        names = [w for w in tt._NAME.findall(r["text"]) if topics[w] >= tt.MIN_TOPIC_COUNT]
        if names:
            prompt = tt.TOPIC_PROMPTS[0].format(min(names, key=lambda w: (topics[w], w)))
        else:
            prompt = tt.PASSAGE_PROMPTS[0].format(r["title"])
        out.append((prompt, r["text"]))
    return out


def chat_ids(tok, prompt: str) -> list[int]:
    import jinja2

    text = jinja2.Template(tt.CHAT_TEMPLATE).render(messages=[{"role": "user", "content": prompt}],
                                                     bos_token="<bos>", add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False).ids


class AnswerStats:
    """Word rate, judge NLL and repeated word 3-grams summed over generated answers."""

    def __init__(self, model, tok, vocab_words: set[str] | None = None):
        self.model, self.tok, self.vocab_words = model, tok, vocab_words or set()
        self.words = self.known = self.grams = self.rep = 0
        self.nll = self.n_tok = 0.0

    def add(self, prompt_ids: list[int], answer_ids: list[int], text: str) -> None:
        w = _words(text)
        g3 = [tuple(w[j : j + 3]) for j in range(len(w) - 2)]
        self.words += len(w)
        self.known += sum(1 for x in w if x.lower() in self.vocab_words)
        self.grams += len(g3)
        self.rep += len(g3) - len(set(g3))
        a, c = judge_nll(self.model, self.tok, prompt_ids, answer_ids + [tt.END_OF_TURN_ID])
        self.nll += a
        self.n_tok += c

    def row(self) -> dict:
        return dict(word_rate=self.known / max(1, self.words), judge_nll=self.nll / max(1, self.n_tok),
                    rep3=self.rep / max(1, self.grams), words=self.words)


def steps_quality(model, tok, corpus: Path, vocab_words: set[str], n_prompts: int, seed: int, steps_list=STEPS):
    import torch

    pairs = held_prompts(corpus, n_prompts)
    stop = {tt.EOS, tt.END_OF_TURN_ID, tt.PAD}
    ref_nll = ref_n = 0.0
    for prompt, ref in pairs:
        p_ids = chat_ids(tok, prompt)
        a, c = judge_nll(model, tok, p_ids, tok.encode(ref, add_special_tokens=False).ids + [tt.END_OF_TURN_ID])
        ref_nll += a
        ref_n += c
    rows, samples = [], {}
    for steps in steps_list:
        stats = AnswerStats(model, tok, vocab_words)
        tpf = []
        for i, (prompt, _) in enumerate(pairs):
            p_ids = chat_ids(tok, prompt)
            torch.manual_seed(seed + i)
            out = model.generate(torch.tensor([p_ids]), max_denoising_steps=steps)
            new = out.sequences[0, len(p_ids):].tolist()
            ans = []
            for x in new:
                if x in stop:
                    break
                ans.append(x)
            text = tok.decode(ans)
            if i < 3:
                samples.setdefault(steps, []).append((prompt, text))
            stats.add(p_ids, ans, text)
            if getattr(out, "tokens_per_forward", None) is not None:
                tpf.append(float(torch.as_tensor(out.tokens_per_forward).float().mean()))
        rows.append(dict(steps=steps, **stats.row(), tokens_per_forward=(sum(tpf) / len(tpf)) if tpf else None))
    return rows, dict(ref_judge_nll=ref_nll / ref_n), samples


def steps_quality_diffrt(model, tok, gguf: str, corpus: Path, vocab_words: set[str], n_prompts: int, seed: int,
                         threads: int, steps_list=STEPS):
    """The same measures as steps_quality, generating with `diffrt run GGUF PROMPT --steps N --seed S`."""
    import os
    import subprocess

    pairs = held_prompts(corpus, n_prompts)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "python"))
    rows, samples = [], {}
    for steps in steps_list:
        stats = AnswerStats(model, tok, vocab_words)
        for i, (prompt, _) in enumerate(pairs):
            cmd = [sys.executable, "-m", "diffrt.cli", "run", gguf, prompt, "--steps", str(steps),
                   "--seed", str(seed + i), "--threads", str(threads), "--max-new-tokens", "128"]
            text = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
            if i < 3:
                samples.setdefault(steps, []).append((prompt, text))
            stats.add(chat_ids(tok, prompt), tok.encode(text, add_special_tokens=False).ids, text)
        rows.append(dict(steps=steps, **stats.row(), tokens_per_forward=None))
    return rows, samples


def tape_replay(model, tok, gguf: str, corpus: Path, n_prompts: int, seed: int, threads: int) -> dict:
    """transformers' generate() on held-out prompts with its draws recorded, replayed by diffrt on the
    GGUF: how many prompts come out token-identical (raw tokens, pads included) with the same steps."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import diffrt
    from record_tape import record_reference

    engine = diffrt.load(gguf, threads=threads)
    same = same_steps = tokens = equal = 0
    pairs = held_prompts(corpus, n_prompts)
    for i, (prompt, _) in enumerate(pairs):
        ids = np.array([chat_ids(tok, prompt)])
        ref, tape, steps = record_reference(model, ids, seed=seed + i)
        got = engine.generate(ids[0].tolist(), tape=tape)
        raw = np.array(got.raw_tokens).reshape(ref.shape) if np.size(got.raw_tokens) == ref.size else None
        same += int(raw is not None and bool((raw == ref).all()))
        same_steps += int(list(got.steps) == list(steps))
        tokens += ref.size
        equal += int((raw == ref).sum()) if raw is not None else 0
    return dict(prompts=len(pairs), identical=same, same_steps=same_steps, tokens=tokens, tokens_equal=equal)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("corpus")
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1234, help="the training seed (reproduces its data split)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-denoising", action="store_true")
    ap.add_argument("--diffrt", default=None, help="also measure steps vs quality with `diffrt run` on this GGUF, "
                    "and replay transformers' draws in diffrt (token-identical?)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    ckpt, corpus = Path(args.ckpt), Path(args.corpus)
    model, tok = _load(ckpt)
    # The same formatted train/held-out texts as training (the tokenizer is the checkpoint's).
    rng_texts = tt.prepare_data(corpus, model.config.text_config.vocab_size, args.seed)
    _, train_texts, held_texts = rng_texts
    train_stream, _ = tt.encode_stream(tok, train_texts)
    result = {}
    if not args.skip_denoising:
        result["denoising"] = denoising(model, tok, train_stream, held_texts, args.windows, args.seed + 7)
        print("noise t | positions | acc | NLL/token | unigram acc | unigram NLL | acc (all positions)")
    for r in result.get("denoising", []):
        print(f"{r['t']:.2f} | {r['positions']} | {r['acc']:.3f} | {r['nll']:.3f} | {r['uni_acc']:.3f} | "
              f"{r['uni_nll']:.3f} | {r['acc_all']:.3f}")
    if not args.skip_steps:
        vocab_words = {w.lower() for r in tt.load_records(corpus / "train.jsonl") for w in _words(r["text"])}
        rows, ref, samples = steps_quality(model, tok, corpus, vocab_words, args.prompts, args.seed)
        result.update(steps=rows, reference=ref, samples={str(k): v for k, v in samples.items()})
        print(f"reference answers: judge NLL {ref['ref_judge_nll']:.3f}")
        print("steps | word rate | judge NLL | repeated 3-grams | tokens/forward | words")
        for r in rows:
            tpf = "-" if r["tokens_per_forward"] is None else f"{r['tokens_per_forward']:.2f}"
            print(f"{r['steps']} | {r['word_rate']:.3f} | {r['judge_nll']:.3f} | {r['rep3']:.3f} | {tpf} | {r['words']}")
        for k, v in samples.items():
            for p, t in v:
                print(f"[{k} steps] {p!r} -> {t!r}")
    if args.diffrt:
        result["tape_replay"] = tr = tape_replay(model, tok, args.diffrt, corpus, args.prompts, args.seed, args.threads)
        print(f"tape replay (transformers draws -> diffrt): {tr['identical']}/{tr['prompts']} prompts identical, "
              f"{tr['same_steps']}/{tr['prompts']} same steps, {tr['tokens_equal']}/{tr['tokens']} tokens equal")
        vocab_words = {w.lower() for r in tt.load_records(corpus / "train.jsonl") for w in _words(r["text"])}
        rows, samples = steps_quality_diffrt(model, tok, args.diffrt, corpus, vocab_words, args.prompts, args.seed,
                                             args.threads)
        result.update(diffrt_steps=rows, diffrt_samples={str(k): v for k, v in samples.items()})
        print("diffrt: steps | word rate | judge NLL | repeated 3-grams | words")
        for r in rows:
            print(f"{r['steps']} | {r['word_rate']:.3f} | {r['judge_nll']:.3f} | {r['rep3']:.3f} | {r['words']}")
        for k, v in samples.items():
            for p, t in v:
                print(f"[diffrt {k} steps] {p!r} -> {t!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

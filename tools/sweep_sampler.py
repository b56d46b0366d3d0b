#!/usr/bin/env python3
"""Sweep the sampler settings of a small trained model (how the default model's defaults were chosen).

For each (t_min, t_max) x entropy_bound, diffrt generates answers to the held-out prompts of
tools/eval_tiny.py (chat template, 128 new tokens, 48 steps, seed 1234 + i) and scores them by
  * judge NLL: per-token NLL under the model's own causal encoder (the auxiliary-LM head),
  * bigram NLL: per-token NLL under an interpolated token-bigram model of the training stream
    (independent of the model; the held-out reference answers are printed for scale),
  * repeated word 3-grams and the number of words.
Lower NLLs at a low repetition rate read better; read the printed samples too. Not a test.

    python3 tools/sweep_sampler.py CKPT_DIR CORPUS_DIR MODEL.gguf [--prompts 12]
        [--temps "0.4,0.8 0.05,0.8"] [--bounds "0.1 3"]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "python"))

import eval_tiny as ev  # noqa: E402
import train_tiny as tt  # noqa: E402


def bigram_scorer(stream: list[int], vocab: int):
    uni, bi, n = Counter(stream), Counter(zip(stream, stream[1:])), len(stream)

    def nll(ids: list[int]) -> float:
        tot = 0.0
        for a, b in zip(ids, ids[1:]):
            tot -= math.log(0.7 * bi[(a, b)] / max(1, uni[a]) + 0.3 * (uni[b] + 1) / (n + vocab))
        return tot / max(1, len(ids) - 1)

    return nll


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("corpus")
    ap.add_argument("gguf")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--temps", default="0.4,0.8 0.2,0.5 0.05,0.8 0.2,1.0", help="t_min,t_max pairs")
    ap.add_argument("--bounds", default="0.1 1 3 12", help="entropy bounds")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)

    import diffrt

    model, tok = ev._load(Path(args.ckpt))
    vocab = model.config.text_config.vocab_size
    _, train_texts, _ = tt.prepare_data(Path(args.corpus), vocab, args.seed)
    stream, _ = tt.encode_stream(tok, train_texts)
    bigram_nll = bigram_scorer(stream.tolist(), vocab)
    pairs = ev.held_prompts(Path(args.corpus), args.prompts)
    engine = diffrt.load(args.gguf)
    ref = sum(bigram_nll(tok.encode(r, add_special_tokens=False).ids) for _, r in pairs) / len(pairs)
    print(f"held-out reference answers: bigram NLL {ref:.3f}")
    print("t_min | t_max | entropy_bound | judge NLL | bigram NLL | repeated 3-grams | words")
    for pair in args.temps.split():
        t_min, t_max = map(float, pair.split(","))
        for bound in map(float, args.bounds.split()):
            stats, bigram, samples = ev.AnswerStats(model, tok), 0.0, []
            for i, (prompt, _) in enumerate(pairs):
                r = engine.chat([{"role": "user", "content": prompt}], seed=args.seed + i, max_new_tokens=128,
                                steps=48, t_min=t_min, t_max=t_max, entropy_bound=bound)
                ids = tok.encode(r.text, add_special_tokens=False).ids
                stats.add(ev.chat_ids(tok, prompt), ids, r.text)
                bigram += bigram_nll(ids)
                samples.append((prompt, r.text))
            row = stats.row()
            print(f"{t_min} | {t_max} | {bound} | {row['judge_nll']:.3f} | {bigram / len(pairs):.3f} | "
                  f"{row['rep3']:.3f} | {row['words']}", flush=True)
            for p, t in samples[:2]:
                print(f"    {p} -> {t[:240]!r}", flush=True)


if __name__ == "__main__":
    main()

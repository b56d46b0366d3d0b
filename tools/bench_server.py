#!/usr/bin/env python3
"""Load benchmark of `diffrt serve` (not a test): N concurrent clients x M requests each against a tiny
model over loopback, compared with one client sending the same requests one after the other.

Reports requests/s and generated tokens/s of both, latency, the server's RSS over time (sampled from
/proc every 0.1 s), and checks every response against Model.generate run alone with the same prompt
and seed: lost (an error or no answer) and wrong responses are counted, and must be zero.

    PYTHONPATH=python python3 tools/bench_server.py [--clients 8] [--requests 6] [--parallel 4]
        [--steps 8] [--num-predict 32] [--model PATH.gguf | --hidden 256] [--rounds 2] [--engine]

Without --model it builds the tiny test model (tools/make_tiny_model.py, hidden 64, canvas 16) in a
temporary store.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "python"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            v = rss_mib(self.pid)
            if v is not None:
                self.samples.append((time.monotonic() - t0, v))
            time.sleep(0.1)


def make_store(root: Path, model_path: str | None, steps: int, num_predict: int, hidden: int | None):
    from diffrt.embed import create

    if model_path is None:
        from diffrt.convert import convert
        from make_tiny_model import make_tiny_model

        ckpt = make_tiny_model(root / "ckpt", **({} if hidden is None else dict(hidden=hidden, intermediate=4 * hidden)))
        model_path = str(root / "tiny.gguf")
        convert(str(ckpt), model_path, out_type="f32", progress=False)
    os.environ["DIFFRT_MODELS"] = str(root / "store")
    create("bench", f"FROM {model_path}\nPARAMETER num_predict {num_predict}\nPARAMETER steps {steps}\n")


def workload(clients, requests):
    """(prompt, seed) per request: different prompt lengths and seeds."""
    words = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex".split()
    out = []
    for c in range(clients):
        for m in range(requests):
            n = 1 + (c * 7 + m * 3) % len(words)
            out.append((" ".join(words[:n]), 1000 + c * 100 + m))
    return out


def expected_texts(work, steps, num_predict):
    from diffrt import load, store
    from diffrt.server import generation as gen

    model = load(store.resolve("bench"))
    eos = gen.eos_ids(model.metadata)
    want = {}
    for prompt, seed in work:
        r = model.generate(model.tokenizer.encode(prompt), max_new_tokens=num_predict, steps=steps, seed=seed)
        toks = []
        for t in r.tokens:
            if t in eos:
                break
            toks.append(t)
        want[(prompt, seed)] = model.tokenizer.decode(toks[:num_predict])
    return want


def run_phase(url, work, clients):
    """Send `work` from `clients` threads (each its own share, in order). Returns results."""
    import httpx

    shares = [work[i::clients] for i in range(clients)]
    results = []

    def client(share):
        out = []
        with httpx.Client(timeout=600) as h:
            for prompt, seed in share:
                t0 = time.monotonic()
                try:
                    r = h.post(url + "/api/generate", json={"model": "bench", "prompt": prompt, "raw": True,
                                                           "stream": False, "options": {"seed": seed}})
                    body = r.json()
                    ok = r.status_code == 200 and body.get("done")
                    out.append((prompt, seed, body.get("response") if ok else None, body.get("eval_count", 0),
                                time.monotonic() - t0, None if ok else f"{r.status_code}: {body}"))
                except Exception as e:  # a lost response
                    out.append((prompt, seed, None, 0, time.monotonic() - t0, repr(e)))
        return out

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(clients) as ex:
        for part in ex.map(client, shares):
            results += part
    return results, time.monotonic() - t0


def summarise(name, results, wall, want):
    lost = [r for r in results if r[2] is None]
    wrong = [r for r in results if r[2] is not None and r[2] != want[(r[0], r[1])]]
    toks = sum(r[3] for r in results)
    lat = sorted(r[4] for r in results)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{name}: {len(results)} requests in {wall:.2f} s = {len(results) / wall:.2f} req/s, "
          f"{toks / wall:.1f} tokens/s; latency p50 {p(0.5):.2f} s p95 {p(0.95):.2f} s; "
          f"lost {len(lost)}, wrong {len(wrong)}")
    for r in (lost + wrong)[:5]:
        print("   ", r)
    return {"n": len(results), "wall": wall, "rps": len(results) / wall, "tps": toks / wall,
            "p50": p(0.5), "p95": p(0.95), "lost": len(lost), "wrong": len(wrong)}


def engine_table(model_path, hidden, steps, num_predict, n=32):
    """The batch engine alone (no HTTP): n requests through 1, 2, 4, 8 slots; every request runs all
    its steps (no adaptive stop), so the slots stay in step."""
    import diffrt
    from diffrt import _core

    if model_path is None:
        from diffrt.convert import convert
        from make_tiny_model import make_tiny_model

        tmp = Path(tempfile.mkdtemp())
        ckpt = make_tiny_model(tmp / "ckpt", **({} if hidden is None else dict(hidden=hidden, intermediate=4 * hidden)))
        model_path = str(tmp / "m.gguf")
        convert(str(ckpt), model_path, out_type="f32", progress=False)
    core = diffrt.load(model_path).engine
    for slots in (1, 2, 4, 8):
        eng = _core.BatchEngine(core, slots, 1024)
        t0 = time.perf_counter()
        for i in range(n):
            eng.submit([1, 2, 3, 4, 5], max_new_tokens=num_predict, steps=steps, seed=i, confidence_threshold=1e-9,
                       eos_ids=[])
        ticks = 0
        while not eng.idle:
            eng.step(1)
            ticks += 1
        dt = time.perf_counter() - t0
        print(f"engine, {slots} slot(s): {n} requests in {dt:.2f} s = {n * num_predict / dt:.0f} tokens/s, "
              f"{dt / ticks * 1e3:.2f} ms per tick")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=6, help="requests per client")
    ap.add_argument("--parallel", type=int, default=4, help="diffrt serve --parallel")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--num-predict", type=int, default=32)
    ap.add_argument("--model", help="a .gguf to serve instead of the tiny test model")
    ap.add_argument("--hidden", type=int, help="hidden size of the tiny model (default 64)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the two phases (1 client, N clients)")
    ap.add_argument("--engine", action="store_true", help="only time the batch engine (no server) by slots")
    args = ap.parse_args(argv)
    if args.engine:
        engine_table(args.model, args.hidden, args.steps, args.num_predict)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp), args.model, args.steps, args.num_predict, args.hidden)
        work = workload(args.clients, args.requests)
        want = expected_texts(work, args.steps, args.num_predict)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
        max_queue = args.clients * 2
        proc = subprocess.Popen([sys.executable, "-m", "diffrt.cli", "serve", "--port", str(port), "--parallel",
                                 str(args.parallel), "--max-queue", str(max_queue), "--log-level", "warning"],
                                env=env)
        try:
            import httpx

            for _ in range(600):
                try:
                    httpx.get(url + "/api/version")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise SystemExit("diffrt serve exited")
                    time.sleep(0.1)
            run_phase(url, work[:1], 1)  # load the model
            sampler = RssSampler(proc.pid)
            sampler.start()
            ones, manys = [], []
            for _ in range(args.rounds):  # alternated, so that a busy machine hurts both alike
                ones.append(summarise("1 client ", *run_phase(url, work, 1), want))
                manys.append(summarise(f"{args.clients} clients", *run_phase(url, work, args.clients), want))
            sampler.stop.set()
            sampler.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    rss = [v for _, v in sampler.samples]
    third = max(1, len(rss) // 3)
    print(f"server RSS (MiB) over {sampler.samples[-1][0]:.0f} s of load: {min(rss):.0f}..{max(rss):.0f} "
          f"(max in the first third {max(rss[:third]):.0f}, in the last third {max(rss[-third:]):.0f})")
    bad = sum(r["lost"] + r["wrong"] for r in ones + manys)
    speedups = ", ".join(f"{m['rps'] / o['rps']:.2f}x" for o, m in zip(ones, manys))
    print(f"speed-up (requests/s, {args.clients} clients vs 1, --parallel {args.parallel}): {speedups}; "
          f"lost + wrong responses: {bad}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

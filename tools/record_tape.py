"""Record the random draws of transformers' DiffusionGemma generate() as a tape diffrt can replay
(spec §10.3): torch.randint / torch.multinomial are wrapped while generate() runs, so diffrt, fed the
same initial canvases, samples and renoise canvases, must produce the same tokens. Used by the
generation parity tests and tools/eval_tiny.py."""

import numpy as np
import torch


def record_reference(hf_model, prompt_ids, seed=0, fixed_canvas=None, **gen_kwargs):
    """Run transformers' generate() recording its draws. Returns (new tokens [B, k*L], tape, steps).
    With fixed_canvas [B, L], every randint and multinomial draw returns it instead (a constant
    canvas lets the argmax settle, which random draws on random weights never do)."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    calls = []
    real_randint, real_multinomial = torch.randint, torch.multinomial

    def randint(*a, **k):
        out = real_randint(*a, **k) if fixed_canvas is None else torch.as_tensor(fixed_canvas).clone()
        calls.append(("randint", out.clone()))
        return out

    def multinomial(*a, **k):
        out = (
            real_multinomial(*a, **k)
            if fixed_canvas is None
            else torch.as_tensor(fixed_canvas).reshape(-1, 1)
        )
        calls.append(("multinomial", out.clone()))
        return out

    if "entropy_bound" in gen_kwargs:
        gen_kwargs["sampler_config"] = EntropyBoundSamplerConfig(
            entropy_bound=float(gen_kwargs.pop("entropy_bound"))
        )
    if "steps" in gen_kwargs:
        gen_kwargs["max_denoising_steps"] = gen_kwargs.pop("steps")
    ids = torch.tensor(np.asarray(prompt_ids), dtype=torch.long)
    B, P = ids.shape
    torch.manual_seed(seed)
    torch.randint, torch.multinomial = randint, multinomial
    try:
        with torch.no_grad():
            out = hf_model.generate(input_ids=ids, **gen_kwargs)
    finally:
        torch.randint, torch.multinomial = real_randint, real_multinomial
    seq = out.sequences if hasattr(out, "sequences") else out
    record_reference.tokens_per_forward = np.asarray(out.tokens_per_forward, dtype=np.float64)

    init, samples, renoise, steps = [], [], [], []
    prev = None
    for kind, t in calls:
        if kind == "multinomial":
            samples.append(t.view(B, -1).numpy())
            steps[-1] += 1
        elif prev == "multinomial":
            renoise.append(t.numpy())
        else:
            init.append(t.numpy())
            steps.append(0)
        prev = kind
    tape = {"init": np.stack(init), "samples": np.stack(samples), "renoise": np.stack(renoise)}
    return seq[:, P:].numpy(), tape, steps

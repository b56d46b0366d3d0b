"""`diffrt pull hf.co/ORG/REPO[:QUANT]`: download a GGUF from Hugging Face into the model store
(resumable, SHA-256-checked; see diffrt/hub.py)."""


def add_parser(sub):
    p = sub.add_parser("pull", help="download a model from Hugging Face (hf.co/ORG/REPO[:QUANT])")
    p.add_argument("model", metavar="MODEL", help="hf.co/ORG/REPO[:QUANT] (or huggingface.co/..., hf://...)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args):
    from .. import hub

    if not hub.is_hub_ref(args.model):
        raise ValueError(f"{args.model!r}: `diffrt pull` takes a Hugging Face name, hf.co/ORG/REPO[:QUANT]")
    name = hub.pull(args.model, progress=args.progress)
    print(name)
    return 0

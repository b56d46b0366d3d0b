"""`diffrt serve`: the Ollama and OpenAI HTTP APIs over the models in the store."""


def add_parser(sub):
    p = sub.add_parser("serve", help="serve the store's models over the Ollama and OpenAI HTTP APIs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=11434, help="port (default 11434, Ollama's)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a free slot; more get HTTP 503 (default 16)")
    p.add_argument("--parallel", type=int, default=4,
                   help="requests of a model denoised together (batch slots, allocated when the model is "
                        "first used; default 4)")
    p.add_argument("--max-context", type=int, default=8192,
                   help="positions (prompt + new tokens) per slot, capped by the model's context; "
                        "sizes the slots' KV cache (default 8192)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the models run (cuda: an NVIDIA GPU, when diffrt was built with CUDA)")
    p.add_argument("--origins", default=None,
                   help="browser origins allowed besides this machine's pages (comma-separated patterns, "
                        "'*' wildcards; also DIFFRT_ORIGINS). Requests from other web pages get 403")
    p.add_argument("--allow-request-templates", action="store_true",
                   help="accept a request's own Jinja chat template (runs client-supplied code; off by default)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args):
    from ..server.app import serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_queue < 1:
        raise ValueError("--max-queue must be >= 1")
    if args.parallel < 1:
        raise ValueError("--parallel must be >= 1")
    if args.max_context < 1:
        raise ValueError("--max-context must be >= 1")
    if args.device == "cuda":
        from ..model import _require_cuda

        _require_cuda()  # before binding the port: a clear error, not one per request
    serve(args.host, args.port, max_queue=args.max_queue, log_level=args.log_level, parallel=args.parallel,
          max_context=args.max_context, device=args.device, origins=args.origins,
          request_templates=args.allow_request_templates)
    return 0

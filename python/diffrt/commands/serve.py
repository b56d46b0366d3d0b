"""`diffrt serve`: the Ollama and OpenAI HTTP APIs over the models in the store."""


def add_parser(sub):
    p = sub.add_parser("serve", help="serve the store's models over the Ollama and OpenAI HTTP APIs")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=11434, help="port (default 11434, Ollama's)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for the generator; more get HTTP 503 (default 16)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args):
    from ..server.app import serve

    if args.max_queue < 1:
        raise ValueError("--max-queue must be >= 1")
    serve(args.host, args.port, max_queue=args.max_queue, log_level=args.log_level)
    return 0

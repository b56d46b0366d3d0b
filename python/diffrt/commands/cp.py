"""`diffrt cp SOURCE DESTINATION`: copy a model (a store name or a .gguf file) to a store name."""


def add_parser(sub):
    p = sub.add_parser("cp", help="copy a model to a new name")
    p.add_argument("source", metavar="SOURCE", help="a store name or a .gguf file")
    p.add_argument("destination", metavar="DESTINATION", help="the new store name")
    p.set_defaults(func=run)


def run(args):
    from .. import store

    store.copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{store.canonical(args.destination)}'")
    return 0

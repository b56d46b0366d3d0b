"""`diffrt rm NAME...`: remove models from the store."""


def add_parser(sub):
    p = sub.add_parser("rm", help="remove models from the store")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=run)


def run(args):
    from .. import store

    for name in args.names:
        store.remove(name)
        print(f"deleted '{store.canonical(name)}'")
    return 0

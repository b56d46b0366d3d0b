"""`diffrt list`: the models in the store."""

import time


def add_parser(sub):
    p = sub.add_parser("list", aliases=["ls"], help="list the models in the store")
    p.set_defaults(func=run)


def _size(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _ago(t):
    s = max(0, time.time() - t)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return "just now"


def run(args):
    from .. import store

    rows = [("NAME", "SIZE", "MODIFIED", "DETAILS")]
    for m in store.list_models():
        d = m.details
        details = d.get("error") or f"{d['parameter_size']} params, {d['quantization_level']}"
        rows.append((m.name, _size(m.size), _ago(m.modified), details))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("    ".join(c.ljust(w) for c, w in zip(r, widths)) + "    " + r[3])
    return 0

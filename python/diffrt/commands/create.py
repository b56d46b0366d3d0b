"""`diffrt create NAME -f Modelfile [--quantize q8_0|int8]`: build a store model from a Modelfile."""

import os
import sys


def add_parser(sub):
    p = sub.add_parser("create", help="create a model in the store from a Modelfile")
    p.add_argument("name", metavar="NAME", help="model name (name or name:tag)")
    p.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default: ./Modelfile)")
    p.add_argument("-q", "--quantize", choices=["q8_0", "int8"],
                   help="quantise the weight matrices (int8 is stored as q8_0 for now)")
    p.set_defaults(func=run)


def run(args):
    from .. import embed, store

    text = embed.read_modelfile_text(args.file)
    if args.quantize == "int8":
        print("note: int8 is stored as q8_0 (int8 weights in blocks of 32 with an f16 scale)", file=sys.stderr)
    path = embed.create(args.name, text, quantize=args.quantize,
                        base_dir=os.path.dirname(os.path.abspath(args.file)), progress=True, path=args.file)
    print(f"created {store.canonical(args.name)} ({path})")
    return 0

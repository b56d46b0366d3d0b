"""`diffrt convert CHECKPOINT_DIR -o model.gguf [--type ...] [--force]`: a Hugging Face checkpoint
directory → one diffrt GGUF file (see docs/FORMAT.md)."""

import os
import sys

from ..convert import OUT_TYPES, TYPE_ALIASES


def add_parser(sub):
    p = sub.add_parser("convert", help="convert a Hugging Face checkpoint to a diffrt GGUF file")
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="directory with config.json and safetensors")
    p.add_argument("-o", "--output", required=True, help="output .gguf file")
    p.add_argument(
        "--type",
        dest="out_type",
        default="auto",
        choices=OUT_TYPES + tuple(TYPE_ALIASES),
        help="weight type (auto = the checkpoint's dtype; int8 = q8_0); norms, scales and router stay f32",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args):
    from ..convert import convert

    if os.path.isdir(args.output):
        raise IsADirectoryError(f"{args.output}: is a directory, expected an output .gguf file path")
    if os.path.exists(args.output) and not args.force:
        print(f"Error: {args.output}: already exists (use --force to overwrite)", file=sys.stderr)
        return 1
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):  # checked before the (long) conversion starts
        raise FileNotFoundError(f"{args.output}: {folder} is not an existing folder")
    convert(args.checkpoint, args.output, out_type=args.out_type, progress=not args.no_progress)
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes)", file=sys.stderr)
    return 0

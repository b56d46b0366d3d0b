"""The `diffrt` command line: Ollama-like verbs. Each verb lives in diffrt/commands/<verb>.py and
exposes `add_parser(subparsers)` (which sets `func`) — add a module to COMMANDS to register it."""

import argparse
import importlib
import os
import sys

from .errors import DiffrtError

# Order = order in --help.
COMMANDS = ["run", "pull", "create", "show", "list", "cp", "rm", "serve", "convert"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffrt", description="Run diffusion language models locally.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"diffrt.commands.{name}").add_parser(sub)
    return p


def _version() -> str:
    from . import __version__
    return f"diffrt {__version__}"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (DiffrtError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout piped into e.g. `head`, which exited: stop quietly, as cat does
        # Point stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

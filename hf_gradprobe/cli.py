# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe` command line: one sub-command per module in `hf_gradprobe/commands/`."""

from __future__ import annotations

import argparse
import importlib
import sys


# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = ("eval", "prune", "inspect")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hf-gradprobe", description="Sparse language models with Transformers.")
    parser.add_argument("--version", action="version", version=f"hf_gradprobe {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"hf_gradprobe.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"hf_gradprobe.commands.{name}":
                raise
            continue  # command not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in model cards
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        # Bad input: a one-line message naming the argument, not a traceback.
        print(f"hf-gradprobe {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

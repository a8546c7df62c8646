# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe` command line: one sub-command per module in `hf_gradprobe/cli/` (`eval`, `prune`, `inspect`),
each with its flags made from dataclasses by `HfArgumentParser` (see `common.add_command`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from . import eval, inspect, prune


__all__ = ["COMMANDS", "LOG_LEVELS", "USER_ERRORS", "CommandParser", "build_parser", "main"]

# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMANDS = (eval, prune, inspect)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with every secret redacted.

    argparse echoes what it could not parse ("unrecognized arguments: --hub_token hf_...", "invalid choice:
    '<value>'"), and a value typed there may be a token. Sub-command parsers are made of the same class
    (``add_subparsers`` uses the parser's own type), so errors after the sub-command are redacted too.
    """

    def parse_args(self, args=None, namespace=None):
        """Parse as ``ArgumentParser.parse_args`` does; unrecognised arguments are named with secrets redacted."""
        args = list(sys.argv[1:] if args is None else args)
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            from ..sharing.redaction import format_command

            # Redacted as a command line: the value after a secret flag is hidden whatever its shape.
            shown = format_command(["", *extras], prefix="").strip()
            self.error(f"unrecognized arguments: {shown}{_unrecognized_hint(args, extras)}")
        return namespace

    def error(self, message: str):
        """Exit with code 2 and one line, secrets redacted."""
        from ..sharing.redaction import redact

        text = redact(" ".join(str(message).split()))
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


def _unrecognized_hint(argv: list[str], extras: list[str]) -> str:
    """Name the flag a stray value follows: argparse reads "--probe -1" or "--flag -x" as two options, and its
    message then names only the value."""
    from ..sharing.redaction import is_secret_name

    for extra in extras:
        if not extra.startswith("-") or extra not in argv[1:]:
            continue
        before = argv[argv.index(extra, 1) - 1]
        if before.startswith("--") and "=" not in before and not is_secret_name(before):
            return f" ({extra} follows {before}: to give {before} a value starting with '-', write {before}={extra})"
    return ""


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-gradprobe`` parser: ``--version``, the global options, and one sub-command per :data:`COMMANDS`.

    Returns:
        [`CommandParser`]: the parser.
    """
    from .. import __version__

    parser = CommandParser(prog="hf-gradprobe", description="Sparse language models with Transformers.")
    parser.add_argument("--version", action="version", version=f"hf_gradprobe {__version__}")
    _add_global_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    for subparser in subparsers.choices.values():  # also accepted after the sub-command
        _add_global_options(subparser, argparse.SUPPRESS)
    return parser


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Bad input (a path, a value, data): one line naming the argument, exit code 2.
USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default if default is not None else False,
        help="show the Python traceback of an error",
    )
    parser.add_argument(
        "--log_level",
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="log level of hf_gradprobe and transformers (default: $TRANSFORMERS_VERBOSITY, else warning)",
    )


def _set_log_level(level: str | None):
    """Apply ``--log_level`` (else ``$TRANSFORMERS_VERBOSITY``); returns a function restoring what it changed."""
    level = level or os.environ.get("TRANSFORMERS_VERBOSITY")
    if not level or level.lower() not in LOG_LEVELS:
        return lambda: None
    from transformers.utils import logging as hf_logging

    value = getattr(logging, level.upper())
    package = logging.getLogger("hf_gradprobe")
    before = (hf_logging.get_verbosity(), package.level)
    handler = logging.StreamHandler() if not package.handlers else None
    hf_logging.set_verbosity(value)
    package.setLevel(value)
    if handler is not None:
        package.addHandler(handler)

    def restore() -> None:
        hf_logging.set_verbosity(before[0])
        package.setLevel(before[1])
        if handler is not None:
            package.removeHandler(handler)

    return restore


def _one_line(err: BaseException) -> str:
    from ..sharing.redaction import redact

    return redact(" ".join(str(err).split()) or type(err).__name__)


def _print_traceback() -> None:
    from ..sharing.redaction import redact

    # The whole text, chained exceptions and source lines included, not only the last line.
    sys.stderr.write(redact(traceback.format_exc()))


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-gradprobe``.

    Args:
        argv (`list[str]`, *optional*):
            The arguments after the program name; defaults to ``sys.argv[1:]``.

    Returns:
        `int`: the exit code: 0 done, 2 bad input (one line saying what and how to fix), 1 an internal error (one
        line; ``--debug`` shows the traceback), 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in model cards
    restore_logging = _set_log_level(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"hf-gradprobe {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            _print_traceback()
        print(f"hf-gradprobe {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the CLI turns any internal error into one line and exit 1
        if args.debug:
            _print_traceback()
        print(
            f"hf-gradprobe {args.command}: internal error: {type(err).__name__}: {_one_line(err)} (run again with "
            "--debug for the traceback, and report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())

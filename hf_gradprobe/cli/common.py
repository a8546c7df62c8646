# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What the sub-commands share: the positional model, its loading options, flags made from dataclasses."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..models import DEFAULT_MODEL


@dataclass
class ModelArguments:
    """How the positional ``model`` is loaded: the options of :func:`hf_gradprobe.load_model`."""

    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype (default: the checkpoint's).",
            "choices": ["float32", "float16", "bfloat16", "auto"],
        },
    )
    device_map: str | None = field(default=None, metadata={"help": "Accelerate device map, e.g. 'auto' or 'cuda:0'."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


def add_command(subparsers, name: str, dataclass_types: tuple, run, *, help: str, start=None):
    """Add the sub-command ``name``: the positional ``model``, then one flag per field of ``dataclass_types``.

    ``HfArgumentParser`` makes the flags, so each field is spelled ``--seq_len`` or ``--seq-len``. The parsed
    command calls ``run(args, *instances)``: the namespace (``args.model``, ``args.argv``) and one instance per
    dataclass. ``start(args)`` may return field values to start from (e.g. a config file): the flags typed on
    the command line override them, and they override the fields' defaults.
    """
    fields = HfArgumentParser(dataclass_types, add_help=False)
    for action in fields._actions:
        if action.help:  # a field's help is plain text; argparse formats it with `%`
            action.help = action.help.replace("%", "%%")
        if f"--no_{action.dest}" in action.option_strings:  # HfArgumentParser's negation of a boolean field
            action.help, action.default = f"Same as --{action.dest} false.", argparse.SUPPRESS
    parser = subparsers.add_parser(
        name, parents=[fields], help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=DEFAULT_MODEL,
        help=f"local folder, Hub id, or '{DEFAULT_MODEL}' (packaged copy offline)",
    )

    def func(args) -> int:
        values = start(args) if start is not None else None
        if values:  # parse again from these values: only the flags typed replace them
            argv = args.argv[args.argv.index(name) + 1 :]
            args = parser.parse_args(argv, namespace=argparse.Namespace(**values, argv=args.argv))
        return run(args, *fields.parse_dict(vars(args), allow_extra_keys=True))

    parser.set_defaults(func=func)
    return parser


def check_data_flag(value: str | None, flag: str) -> None:
    """Refuse a data flag that cannot work, before any model is loaded: a missing, binary or non-UTF-8 file,
    or a string that is neither a file nor a ``datasets`` name."""
    if value is None:
        return
    import os

    from ..evaluation.data import STRUCTURED_FORMATS, _check_dataset_name, _check_text_file

    path = os.path.expanduser(value)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"`{flag}`={value!r} is a folder; pass a text/JSON(L)/parquet file or a datasets name."
        )
    if os.path.isfile(path):
        if os.path.splitext(path)[1].lower() != ".parquet" and os.path.getsize(path):
            _check_text_file(path, flag)
        return
    ext = os.path.splitext(path)[1].lower()
    if ext in (*STRUCTURED_FORMATS, ".txt", ".raw") or value.startswith((".", os.path.sep, "~")):
        raise FileNotFoundError(f"`{flag}`={value!r}: no such file (and not a datasets name).")
    _check_dataset_name(value, flag)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")

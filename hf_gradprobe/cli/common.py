# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What the sub-commands share: the positional model, its loading options, flags made from dataclasses."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ..models import DEFAULT_MODEL, check_device_map, has_tokenizer_files


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

    def __post_init__(self):
        check_device_map(self.device_map, "device_map")  # e.g. 'cuda:0' on a machine without CUDA


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
    from ..evaluation.data import STRUCTURED_FORMATS, _check_dataset_name, _check_not_special, _check_text_file

    path = os.path.expanduser(value)
    if len(path) < 4096:
        _check_not_special(path, flag)
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


def check_model_source(model: str, *, needs_tokenizer: bool, why: str) -> None:
    """Refuse, before loading, a local model folder that cannot serve: no config.json, or no tokenizer when
    ``needs_tokenizer`` (``why`` says what needs one). Hub ids and the default model are checked when loaded."""
    path = os.path.expanduser(model)
    if model == DEFAULT_MODEL or not os.path.isdir(path):
        return
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"`model`={model!r} is a folder without config.json: it is not a saved model. Pass a folder written by "
            "`save_pretrained`/`hf-gradprobe prune`, or a Hub id."
        )
    if needs_tokenizer and not has_tokenizer_files(path):
        raise_no_tokenizer(model, why)


def raise_no_tokenizer(model: str, why: str, reason: str | None = None):
    detail = f" ({reason})" if reason else " (no tokenizer.json or tokenizer_config.json in it)"
    raise ValueError(
        f"`model`={model!r} has no tokenizer{detail}, and {why} needs one to turn text into tokens. Save the "
        'tokenizer of the model it was made from into that folder: `python -c "from transformers import '
        f"AutoTokenizer; AutoTokenizer.from_pretrained('BASE_MODEL').save_pretrained('{model}')\"`."
    )


def check_writable_output_dir(output_dir: str, name: str = "--output_dir") -> None:
    """Refuse, before any work, an output folder the save could not write: its nearest existing parent must
    take a new entry (the save writes a hidden sibling there and renames it into place), and an existing folder,
    which the save replaces, must be writable itself. Immutable and read-only folders and file systems fail here.
    """
    folder = Path(output_dir).expanduser().absolute()
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return  # a file on the way: check_output_dir names it
    fix = "choose a folder you can write to, or make it writable (`chmod u+w`; `chattr -i` if immutable)"
    try:
        # The same operation the save starts with; the empty folder is removed at once.
        os.rmdir(tempfile.mkdtemp(prefix=f".{folder.name}.write-check-", dir=parent))
    except OSError as err:
        raise PermissionError(
            f"`{name}`={output_dir!r} cannot be written: nothing can be created in {os.fspath(parent)!r} "
            f"({err.strerror or type(err).__name__}); {fix}."
        ) from None
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise PermissionError(
            f"`{name}`={output_dir!r} is not writable (read-only or immutable), so a save cannot replace it; {fix}."
        )


def perplexity_problem(perplexity: float | None, nll: float | None = None, overflow: bool = False) -> str | None:
    """Why a perplexity is no number to report (``None`` when it is a finite one)."""
    if not overflow and perplexity is not None and math.isfinite(perplexity):
        return None
    fix = "check the model's weights (e.g. `hf-gradprobe inspect`), or load it in float32 (`--dtype float32`)"
    nan = (nll is not None and math.isnan(nll)) or (perplexity is not None and math.isnan(perplexity))
    if nan:
        return (
            "the perplexity is not a finite number: the loss is NaN (the model's outputs hold NaN or infinite "
            f"values); {fix}."
        )
    loss = f" (mean loss {nll:.4g} nats per token)" if nll is not None and math.isfinite(nll) else ""
    return (
        f"the perplexity is not a finite number: the mean loss per token is too large for exp(){loss}, an overflow "
        f"(the model's logits are huge or infinite); {fix}."
    )


def _strict(value, path: str, non_finite: dict):
    if isinstance(value, float) and not math.isfinite(value):
        non_finite[path] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return None
    if isinstance(value, dict):
        return {key: _strict(item, f"{path}.{key}" if path else str(key), non_finite) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item, f"{path}[{i}]", non_finite) for i, item in enumerate(value)]
    return value


def print_json(obj) -> None:
    """Print ``obj`` as one line of strict JSON: a non-finite float (which JSON cannot hold) is written ``null``,
    and ``non_finite`` maps where each was to what it was (``"perplexity": "NaN"``)."""
    non_finite: dict = {}
    clean = _strict(obj, "", non_finite)
    if non_finite and isinstance(clean, dict):
        clean["non_finite"] = non_finite
    sys.stdout.write(json.dumps(clean, indent=None, default=str, allow_nan=False) + "\n")

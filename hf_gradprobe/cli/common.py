# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What the sub-commands share: the positional model, its loading options, flags made from dataclasses.

Every sub-command's flags are the fields of dataclasses, made by ``HfArgumentParser`` (:func:`add_command`): each
field is spelled ``--seq_len`` or ``--seq-len``, and a boolean field takes ``--json``, ``--json true`` or
``--json false``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, HfArgumentParser

from ..core.validation import position_limit
from ..models import DEFAULT_MODEL, check_device_map, has_tokenizer_files, is_hub_id


__all__ = [
    "HubArguments",
    "ModelArguments",
    "add_command",
    "check_model_source",
    "check_window_positions",
    "check_writable_output_dir",
    "perplexity_problem",
    "print_json",
    "raise_no_tokenizer",
]


@dataclass
class HubArguments:
    """Where the positional ``model`` is read from: its Hub revision, and whether its own code may run."""

    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


@dataclass
class ModelArguments(HubArguments):
    """How the positional ``model`` is loaded: the options of :func:`hf_gradprobe.load_model`."""

    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype (default: the checkpoint's).",
            "choices": ["float32", "float16", "bfloat16", "auto"],
        },
    )
    device_map: str | None = field(default=None, metadata={"help": "Accelerate device map, e.g. 'auto' or 'cuda:0'."})

    def __post_init__(self):
        check_device_map(self.device_map, "device_map")  # e.g. 'cuda:0' on a machine without CUDA


def add_command(
    subparsers,
    name: str,
    dataclass_types: tuple,
    run,
    *,
    help: str,
    start=None,
    default_model: str | None = DEFAULT_MODEL,
):
    """Add the sub-command ``name``: the positional ``model``, then one flag per field of ``dataclass_types``.

    ``HfArgumentParser`` makes the flags, as it makes them for any dataclass: argparse formats their help with
    ``%``, so no field's help holds one (a test checks every sub-command's help).

    Args:
        subparsers:
            What ``ArgumentParser.add_subparsers`` returned.
        name (`str`):
            The sub-command.
        dataclass_types (`tuple`):
            The dataclasses whose fields are the flags.
        run (`Callable`):
            Called as ``run(args, *instances)``: the namespace (``args.model``, ``args.argv``) and one instance per
            dataclass; returns the exit code.
        help (`str`):
            One line saying what the sub-command does.
        start (`Callable`, *optional*):
            ``start(args)`` may return field values to start from (e.g. a config file): the flags typed on the
            command line override them, and they override the fields' defaults.
        default_model (`str`, *optional*, defaults to `"smollm2-135m"`):
            The model when none is given; ``None`` makes ``model`` required.

    Returns:
        `argparse.ArgumentParser`: the sub-command's parser.
    """
    fields = HfArgumentParser(dataclass_types, add_help=False)
    parser = subparsers.add_parser(
        name, parents=[fields], help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    model_help = f"local folder, Hub id, or '{DEFAULT_MODEL}' (packaged copy offline)"
    if default_model is None:
        parser.add_argument("model", help=model_help)
    else:
        parser.add_argument("model", nargs="?", default=default_model, help=model_help)

    def func(args) -> int:
        values = start(args) if start is not None else None
        if values:  # parse again from these values: only the flags typed replace them
            argv = args.argv[args.argv.index(name) + 1 :]
            args = parser.parse_args(argv, namespace=argparse.Namespace(**values, argv=args.argv))
        return run(args, *fields.parse_dict(vars(args), allow_extra_keys=True))

    parser.set_defaults(func=func)
    return parser


def check_model_source(model: str, *, needs_tokenizer: bool, why: str) -> None:
    """Refuse, before loading, a local model folder that cannot serve. Hub ids and the default model are checked
    when loaded.

    Args:
        model (`str`):
            The positional ``model``.
        needs_tokenizer (`bool`):
            Whether the command turns text into tokens: then a folder without a tokenizer is refused.
        why (`str`):
            What needs the tokenizer, for the message (e.g. ``"`hf-gradprobe eval --data`"``).
    """
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


def _model_config(model: str, hub_args: HubArguments):
    """``model``'s config, read from its config.json alone; ``None`` for the packaged default and for a name
    ``load_model`` refuses before reading a config (it names the problem)."""
    local = os.path.isdir(model) and os.path.isfile(os.path.join(model, "config.json"))
    if model == DEFAULT_MODEL or not (local or is_hub_id(model)):
        return None
    return AutoConfig.from_pretrained(model, revision=hub_args.revision, trust_remote_code=hub_args.trust_remote_code)


def check_window_positions(model: str, hub_args: HubArguments, windows: Mapping[str, int]) -> None:
    """Refuse, before the weights load, windows longer than the model's positional limit.

    The limit is read from the model's config.json (``max_position_embeddings`` or ``n_positions``; models
    stating none pass, and the packaged default is checked once loaded).

    Args:
        model (`str`):
            The positional ``model``: a local folder or a Hub id.
        hub_args ([`HubArguments`]):
            Its revision and ``trust_remote_code``.
        windows (`Mapping[str, int]`):
            The window lengths to check, by field name as the other flag checks name them, e.g.
            ``{"seq_len": 1024}``.
    """
    if not windows:
        return
    config = _model_config(model, hub_args)
    # position_limit reads a model's `config`: the model is not loaded yet, so it is handed the config alone.
    limit = position_limit(types.SimpleNamespace(config=config)) if config is not None else None
    if limit is None:
        return
    attribute, value = limit
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    for flag, seq_len in windows.items():
        if seq_len > value:
            raise ValueError(
                f"`{flag}`={seq_len} is longer than {architecture}'s {attribute}={value} (its config.json): its "
                f"windows must be at most {value} tokens. Lower `{flag}` to {value} or less."
            )


def raise_no_tokenizer(model: str, why: str, reason: str | None = None):
    """Raise the one-line error of a model without a tokenizer where a command needs one.

    Args:
        model (`str`):
            The positional ``model``.
        why (`str`):
            What needs the tokenizer.
        reason (`str`, *optional*):
            Why none is there; defaults to the files a saved tokenizer has.
    """
    detail = f" ({reason})" if reason else " (no tokenizer.json or tokenizer_config.json in it)"
    raise ValueError(
        f"`model`={model!r} has no tokenizer{detail}, and {why} needs one to turn text into tokens. Save the "
        'tokenizer of the model it was made from into that folder: `python -c "from transformers import '
        f"AutoTokenizer; AutoTokenizer.from_pretrained('BASE_MODEL').save_pretrained('{model}')\"`."
    )


def check_writable_output_dir(output_dir: str, name: str = "--output_dir") -> None:
    """Refuse, before any work, an output folder the save could not write.

    Its nearest existing parent must take a new entry (the save writes a hidden sibling there and renames it into
    place), and an existing folder, which the save replaces, must be writable itself. Immutable and read-only
    folders and file systems fail here.

    Args:
        output_dir (`str`):
            The folder.
        name (`str`, *optional*, defaults to `"--output_dir"`):
            How the messages spell the flag.
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
    """Why a perplexity is no number to report.

    Args:
        perplexity (`float`, *optional*):
            The perplexity measured, if any.
        nll (`float`, *optional*):
            The mean loss per token.
        overflow (`bool`, *optional*, defaults to `False`):
            Whether ``exp()`` of the mean loss overflowed.

    Returns:
        `str` or `None`: the reason and the fix, or ``None`` for a finite perplexity.
    """
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
    """Print ``obj`` as one line of strict JSON.

    A non-finite float (which JSON cannot hold) is written ``null``, and the key ``non_finite`` maps where each was
    to what it was (``"perplexity": "NaN"``).

    Args:
        obj:
            A JSON-like value; other objects are written as their ``str``.
    """
    non_finite: dict = {}
    clean = _strict(obj, "", non_finite)
    if non_finite and isinstance(clean, dict):
        clean["non_finite"] = non_finite
    sys.stdout.write(json.dumps(clean, indent=None, default=str, allow_nan=False) + "\n")

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The checkpointed pruning state: masks, movement scores and schedule counters in one safetensors file.

Every checkpoint folder holds `pruning_state.safetensors`: a bool tensor ``mask.<layer>`` per pruned layer,
``movement.<layer>`` for the movement method, and as JSON metadata (with a ``version``) the schedule (method,
target, schedule, resolved start/end, frequency, comparison group, layer-adaptive, and ``replan`` when a resume
re-planned the ramp), the counters (optimizer/skipped steps, mask updates, skipped non-finite updates,
threshold), ``masked`` (the entries its masks prune) and ``preexisting_zeros`` (zeros there before the
schedule pruned). Fields added later are optional, so older files still load; every field present is checked.
Under FSDP2 every rank writes the rows it holds to its own file, `pruning_state-rank00000-of-00002.safetensors`
and so on (:func:`sharded_state_name`), beside the Trainer's sharded model and optimizer; such a checkpoint
resumes on the same number of ranks. Which checkpoint a run resumes is `hf_gradprobe.training.integration`'s.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..core.masking import COMPARISON_GROUPS
from ..core.validation import check_bool, check_choice, check_float, check_int, describe_value
from .methods import METHODS, get_method
from .schedule import SCHEDULES, STEP_MAX


__all__ = [
    "COUNTER_KEYS",
    "DAMAGED_HINT",
    "METADATA_KEY",
    "PRUNING_STATE_NAME",
    "SCHEDULE_KEYS",
    "STATE_VERSION",
    "checkpoint_folder",
    "load_pruning_state",
    "read_pruning_metadata",
    "read_pruning_tensors",
    "save_pruning_state",
    "sharded_state_name",
]

PRUNING_STATE_NAME = "pruning_state.safetensors"
# Version of the layout above; files of a newer version are refused, not misread.
STATE_VERSION = 1
METADATA_KEY = "pruning_state"


def sharded_state_name(rank: int, world_size: int) -> str:
    """The pruning state file of FSDP2 rank ``rank`` of ``world_size``: the masks of the rows it holds."""
    return f"pruning_state-rank{rank:05d}-of-{world_size:05d}.safetensors"


def save_pruning_state(
    path: str,
    layer_names: Sequence[str],
    masks: Sequence[torch.Tensor],
    movement: Sequence[torch.Tensor] | None,
    metadata: dict,
) -> None:
    """Write masks (bool), accumulated scores and ``metadata`` (schedule counters) to a safetensors file.

    Args:
        path (`str`):
            The file to write.
        layer_names (`Sequence[str]`):
            The pruned layers, in order.
        masks (`Sequence[torch.Tensor]`):
            One bool mask per layer (True = pruned), saved as ``mask.<layer>``.
        movement (`Sequence[torch.Tensor]`, *optional*):
            The accumulated scores of a method that keeps them, saved as ``<state_tensor>.<layer>`` (the
            method's `state_tensor`, ``movement``).
        metadata (`dict`):
            JSON metadata; ``method`` and ``layers`` at least.
    """
    from safetensors.torch import save_file

    tensors = {f"mask.{name}": mask.contiguous().cpu() for name, mask in zip(layer_names, masks, strict=True)}
    if movement is not None:
        kind = get_method(metadata["method"]).state_tensor
        if kind is None:
            raise ValueError(f"`pruning_method`={metadata['method']!r} accumulates no scores; pass `movement=None`.")
        tensors.update(
            {f"{kind}.{name}": score.contiguous().cpu() for name, score in zip(layer_names, movement, strict=True)}
        )
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps({"version": STATE_VERSION, **metadata})})


# What a damaged or foreign file's error suggests: a state that cannot be trusted is never half-used.
DAMAGED_HINT = (
    "Resume from another checkpoint, or delete the checkpoint's pruning state file(s) to rebuild the masks from "
    "the weights that are exactly zero."
)
# The schedule a state was saved with and the counters that resume it (every file the callback writes has them).
SCHEDULE_KEYS = (
    "target_sparsity",
    "schedule",
    "start",
    "end",
    "frequency",
    "comparison_group",
    "layer_adaptive",
)
COUNTER_KEYS = ("optimizer_steps", "skipped_steps", "mask_updates", "threshold")


def _any_float(name: str, value) -> float:
    # The logged threshold: NaN when no update pruned anything yet, so only its type is checked.
    if isinstance(value, float) and not math.isfinite(value):
        return value
    return check_float(name, value)


def _replan(name: str, value):
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"`{name}` must be null or [step, sparsity], got {describe_value(value)}.")
    check_int(f"{name}[0]", value[0], minimum=0)
    check_float(f"{name}[1]", value[1], minimum=0.0, maximum=1.0)
    return value


def _shard(name: str, value):
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"`{name}` must be null or an object (an FSDP2 rank's rows), got {describe_value(value)}.")
    return value


def _count(name, value):
    return check_int(name, value, minimum=0)


def _step(name, value):
    return check_int(name, value, minimum=0, maximum=STEP_MAX)


# Checks of the metadata fields, each raising one ValueError naming the field; unknown fields are ignored.
FIELD_CHECKS = {
    "method": lambda name, value: check_choice(name, value, METHODS),
    "layers": lambda name, value: _names(name, value),
    "target_sparsity": lambda name, value: check_float(name, value, minimum=0.0, maximum=1.0, exclusive_maximum=True),
    "schedule": lambda name, value: check_choice(name, value, SCHEDULES),
    "start": _step,
    "end": _step,
    "frequency": lambda name, value: check_int(name, value, minimum=1, maximum=STEP_MAX),
    "comparison_group": lambda name, value: check_choice(name, value, COMPARISON_GROUPS),
    "layer_adaptive": check_bool,
    "optimizer_steps": _count,
    "skipped_steps": _count,
    "mask_updates": _count,
    "nonfinite_updates": _count,
    "masked": _count,
    "threshold": _any_float,
    "preexisting_zeros": lambda name, value: check_float(name, value, minimum=0.0, maximum=1.0),
    "replan": _replan,
    "shard": _shard,
}


def _names(name: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"`{name}` must be a list of layer names, got {describe_value(value)}.")
    return value


def read_pruning_metadata(path: str, layer_names: Sequence[str], method: str, *, required: Sequence[str] = ()) -> dict:
    """The metadata of a file of :func:`save_pruning_state`, checked before any tensor is read.

    Refuses, with one ``ValueError`` naming ``path`` and what is wrong: a file that is not readable safetensors
    (random bytes, truncated, empty), metadata that is not this layout's (missing, not JSON, a field of the wrong
    type or out of range, a ``required`` field absent), a newer version of the layout, or a state saved for
    another method or other layers (another model, other `pruning_targets`).
    """
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # noqa: BLE001 - whatever the reader says, the file cannot be used
        raise ValueError(
            f"{path} is not a readable safetensors file ({_one_line(error)}): the checkpoint is damaged. {DAMAGED_HINT}"
        ) from None
    try:
        metadata = json.loads(text) if text is not None else None
    except ValueError as error:
        raise ValueError(
            f"{path} holds pruning state metadata that is not JSON ({_one_line(error)}). {DAMAGED_HINT}"
        ) from None
    version = metadata.get("version") if isinstance(metadata, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            f"{path} holds no pruning state (no `{METADATA_KEY}` metadata with a `version`). {DAMAGED_HINT}"
        )
    if version > STATE_VERSION:
        raise ValueError(
            f"{path} was written with pruning state version {version}, but this hf_gradprobe reads versions up "
            f"to {STATE_VERSION}. Upgrade hf_gradprobe to resume from this checkpoint."
        )
    for key in ("method", "layers", *required):
        if key not in metadata:
            raise ValueError(f"{path} is damaged: its metadata has no `{key}`. {DAMAGED_HINT}")
    for key, check in FIELD_CHECKS.items():
        if key in metadata:
            try:
                check(key, metadata[key])
            except ValueError as error:
                raise ValueError(f"{path} is damaged: in its metadata, {error} {DAMAGED_HINT}") from None
    if metadata.get("start", 0) > metadata.get("end", STEP_MAX):
        raise ValueError(
            f"{path} is damaged: its metadata's ramp ends (step {metadata['end']}) before it starts (step "
            f"{metadata['start']}). {DAMAGED_HINT}"
        )
    if metadata["method"] != method:
        raise ValueError(
            f"`pruning_method`={method!r}, but {path} was saved by {metadata['method']!r}: another method's scores "
            f"cannot continue its masks. Resume with the same pruning arguments (`pruning_method`="
            f"{metadata['method']!r}), or start a new run from the pruned model (e.g. with 'fixed')."
        )
    names, saved = list(layer_names), metadata["layers"]
    if saved != names:
        index = next(
            (i for i, (a, b) in enumerate(zip(saved, names, strict=False)) if a != b), min(len(saved), len(names))
        )
        theirs = repr(saved[index]) if index < len(saved) else "nothing"
        ours = repr(names[index]) if index < len(names) else "nothing"
        raise ValueError(
            f"{path} holds the masks of {len(saved)} layers, but this run prunes {len(names)}: at position {index} "
            f"its layers have {theirs}, this run {ours}. It was saved for another model or other "
            "`pruning_targets`/`pruning_ignore`: resume with the model and the same pruning arguments it was saved with."
        )
    return metadata


def read_pruning_tensors(
    path: str,
    layer_names: Sequence[str],
    method: str,
    devices: Sequence[torch.device],
    shapes: Sequence[Sequence[int]] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """``(masks, movement)`` of a file of :func:`save_pruning_state`, on ``devices``.

    Every layer's bool ``mask.<layer>`` (and float ``movement.<layer>`` for the movement method) must be there,
    of the layer's shape when ``shapes`` are given (under FSDP2, the shape of this rank's rows), and nothing else.
    """
    from safetensors import safe_open

    names = list(layer_names)
    accumulated = get_method(method)
    kinds = ["mask"] + ([accumulated.state_tensor] if accumulated.accumulates else [])
    expected = [f"{kind}.{name}" for kind in kinds for name in names]
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(path, framework="pt") as handle:
            present = set(handle.keys())
            missing = next((key for key in expected if key not in present), None)
            if missing is not None:
                raise _Refused(f"has no tensor `{missing}`")
            extra = sorted(present - set(expected))
            if extra:
                raise _Refused(f"holds {len(extra)} tensor(s) of no layer of this run, e.g. `{extra[0]}`")
            for key in expected:
                tensors[key] = handle.get_tensor(key)
    except _Refused as refusal:
        raise ValueError(f"{path} {refusal} ({method!r} on {len(names)} layers). {DAMAGED_HINT}") from None
    except Exception as error:  # noqa: BLE001 - a tensor the reader cannot give back makes the file unusable
        raise ValueError(f"{path} is not a readable safetensors file ({_one_line(error)}). {DAMAGED_HINT}") from None
    for index, name in enumerate(names):
        for kind in kinds:
            key, tensor = f"{kind}.{name}", tensors[f"{kind}.{name}"]
            if kind == "mask" and tensor.dtype != torch.bool:
                raise ValueError(f"{path}: `{key}` is {tensor.dtype}, but masks are torch.bool. {DAMAGED_HINT}")
            if kind != "mask" and not tensor.is_floating_point():
                raise ValueError(
                    f"{path}: `{key}` is {tensor.dtype}, but {kind} scores are floating point. {DAMAGED_HINT}"
                )
            if shapes is not None and tuple(tensor.shape) != tuple(shapes[index]):
                raise ValueError(
                    f"{path}: `{key}` has shape {tuple(tensor.shape)}, but the layer's weight here has shape "
                    f"{tuple(shapes[index])}. {DAMAGED_HINT}"
                )
    masks = [tensors[f"mask.{name}"].to(device) for name, device in zip(names, devices, strict=True)]
    movement = None
    if accumulated.accumulates:
        movement = [tensors[f"{kinds[1]}.{name}"].to(device) for name, device in zip(names, devices, strict=True)]
    return masks, movement


def load_pruning_state(
    path: str,
    layer_names: Sequence[str],
    method: str,
    devices: Sequence[torch.device],
    *,
    shapes: Sequence[Sequence[int]] | None = None,
    required: Sequence[str] = (),
) -> tuple[dict, list[torch.Tensor], list[torch.Tensor] | None]:
    """Read a file of :func:`save_pruning_state` as ``(metadata, masks, movement)``, tensors on ``devices``.

    :func:`read_pruning_metadata` then :func:`read_pruning_tensors`: any damage, a newer version of the layout,
    or a state saved for another method, other layers or (with ``shapes``) other weight shapes is refused with
    one ``ValueError`` naming the file and what is wrong.

    Args:
        path (`str`):
            The file.
        layer_names (`Sequence[str]`):
            The layers the run prunes, in order; the file must hold exactly these.
        method (`str`):
            The run's `pruning_method`; the file must have been saved by it.
        devices (`Sequence[torch.device]`):
            Where each layer's tensors go.
        shapes (`Sequence[Sequence[int]]`, *optional*):
            Each layer's weight shape (this rank's rows under FSDP2), checked when given.
        required (`Sequence[str]`, *optional*):
            Metadata fields that must be present.
    """
    metadata = read_pruning_metadata(path, layer_names, method, required=required)
    masks, movement = read_pruning_tensors(path, layer_names, method, devices, shapes)
    return metadata, masks, movement


class _Refused(Exception):
    """What is wrong with a file, raised inside the reader's context and re-raised outside it."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def checkpoint_folder(output_dir: str, step: int) -> str:
    """The folder `Trainer` saves the checkpoint of ``step`` to."""
    return os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")

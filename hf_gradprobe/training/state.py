# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The checkpointed pruning state: masks, movement scores and schedule counters in one safetensors file.

Every checkpoint folder holds `pruning_state.safetensors`: a bool tensor ``mask.<layer>`` per pruned layer,
``movement.<layer>`` for the movement method, and the schedule counters as JSON metadata (with a ``version``).
Under FSDP2 every rank writes the rows it holds to its own file, `pruning_state-rank00000-of-00002.safetensors`
and so on (:func:`sharded_state_name`), beside the Trainer's sharded model and optimizer; such a checkpoint
resumes on the same number of ranks. Where the state of a resumed run is looked for is decided here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint


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
    """Write masks (bool), movement scores and ``metadata`` (schedule counters) to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {f"mask.{name}": mask.contiguous().cpu() for name, mask in zip(layer_names, masks, strict=True)}
    if movement is not None:
        tensors.update(
            {f"movement.{name}": score.contiguous().cpu() for name, score in zip(layer_names, movement, strict=True)}
        )
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps({"version": STATE_VERSION, **metadata})})


def load_pruning_state(
    path: str, layer_names: Sequence[str], method: str, devices: Sequence[torch.device]
) -> tuple[dict, list[torch.Tensor], list[torch.Tensor] | None]:
    """Read a file of :func:`save_pruning_state` as ``(metadata, masks, movement)``, tensors on ``devices``.

    Refuses a file from a newer version of the layout, or one saved for another method or other layers.
    """
    from safetensors import safe_open

    names = list(layer_names)
    with safe_open(path, framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "null"))
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{path} holds no pruning state (no `{METADATA_KEY}` metadata with a `version`).")
        if version > STATE_VERSION:
            raise ValueError(
                f"{path} was written with pruning state version {version}, but this hf_gradprobe reads versions up "
                f"to {STATE_VERSION}. Upgrade hf_gradprobe to resume from this checkpoint."
            )
        if metadata["layers"] != names or metadata["method"] != method:
            raise ValueError(
                f"{path} was saved for method {metadata['method']!r} on layers {metadata['layers'][:3]}..., which does "
                f"not match this run ({method!r} on {names[:3]}...). Resume with the same pruning arguments."
            )
        masks = [handle.get_tensor(f"mask.{name}").to(device) for name, device in zip(names, devices, strict=True)]
        movement = None
        if method == "movement":
            movement = [
                handle.get_tensor(f"movement.{name}").to(device) for name, device in zip(names, devices, strict=True)
            ]
    return metadata, masks, movement


def checkpoint_folder(output_dir: str, step: int) -> str:
    """The folder `Trainer` saves the checkpoint of ``step`` to."""
    return os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")


def resume_argument(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The folder `Trainer.train(resume_from_checkpoint=...)` resumes: ``True`` means the last one in ``output_dir``."""
    if isinstance(resume_from_checkpoint, bool):
        return get_last_checkpoint(output_dir) if resume_from_checkpoint else None
    return resume_from_checkpoint


def state_file_to_resume(
    global_step: int, output_dir: str, *candidates: str | None, name: str = PRUNING_STATE_NAME
) -> str | None:
    """The pruning state file (``name``) a run starting at ``global_step`` restores, or None.

    None for a fresh run. Otherwise the checkpoint is the first of ``candidates`` that is a folder, or else the
    checkpoint of ``global_step`` in ``output_dir``; None again when that checkpoint holds no pruning state.
    """
    if global_step == 0:
        return None
    folder = next(
        (c for c in candidates if isinstance(c, str) and os.path.isdir(c)), checkpoint_folder(output_dir, global_step)
    )
    path = os.path.join(folder, name)
    return path if os.path.isfile(path) else None

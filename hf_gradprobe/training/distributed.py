# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Keeping the masks of a multi-process (DDP) run identical on every rank."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def ddp_inactive_message(args) -> str | None:
    """A warning when several processes run but ``args`` (the Trainer's) does not train in distributed mode.

    Under ``torchrun`` with a Trainer that is not in distributed mode (e.g. ``TrainingArguments`` built before
    the process group, or a hand-made one), every rank trains its own model: the masks are broadcast, but the
    weights are not all-reduced and the replicas drift apart.
    """
    if not is_distributed():
        return None
    mode = str(getattr(getattr(args, "parallel_mode", None), "value", getattr(args, "parallel_mode", "")) or "")
    world_size = getattr(args, "world_size", 1)
    if world_size > 1 and mode not in ("not_distributed", "not_parallel"):
        return None
    return (
        f"torch.distributed is initialised with {dist.get_world_size()} processes, but the Trainer is not "
        f"training in distributed mode (parallel_mode={mode or None!r}, world_size={world_size}): DDP is NOT "
        "active, each process trains its own replica, and their weights will drift apart even though the "
        "pruning masks are kept identical. Launch with `torchrun`/`accelerate launch` and build the "
        "TrainingArguments inside the launched processes."
    )


def broadcast_masks_(masks: Sequence[torch.Tensor], src: int = 0) -> int:
    """Overwrite ``masks`` in place with rank ``src``'s; returns how many entries this rank had chosen otherwise.

    Ranks hold the same weights and moments and draw the same seeded sample, so they should agree; the
    broadcast makes sure a stray difference can never make the replicas drift.
    """
    disagreements = 0
    for mask in masks:
        local = mask.clone()
        dist.broadcast(mask.view(torch.uint8), src=src)
        disagreements += int((local != mask).sum())
    return disagreements

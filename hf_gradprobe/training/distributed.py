# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Masks of a multi-process run: identical on every rank under DDP, one shard per rank under FSDP2; which
sharded trainings are supported.

Under FSDP2 (`fully_shard`, what `fsdp_config={"version": 2}` gives the Trainer) every parameter and its AdamW
moments are DTensors split by rows (``Shard(0)``) over a one-dimensional device mesh: each rank keeps the masks
(and movement scores) of its own rows only, and the thresholds are agreed on through `core.masking.RowShards`,
whose collectives are built here. FSDP1 and DeepSpeed hide the weights and moments per tensor and are refused
([`sharded_training_message`]), from the Trainer's arguments, Accelerate's launch settings and the model itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from transformers.utils import logging

from ..core.masking import RowShards


__all__ = [
    "broadcast_masks_",
    "check_training_run",
    "ddp_inactive_message",
    "dtensor_class",
    "fsdp_version",
    "is_distributed",
    "is_sharded",
    "local_tensor",
    "row_shards",
    "sharded_training_message",
    "unsupported_placement",
    "values_of_ranks",
    "warn_if_fsdp_did_not_shard",
]

logger = logging.get_logger(__name__)


def dtensor_class():
    """`torch.distributed.tensor.DTensor`, or None where torch has no distributed support."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return DTensor


def is_sharded(tensor) -> bool:
    """Whether ``tensor`` is a DTensor (a parameter, gradient or optimizer moment of an FSDP2 model)."""
    DTensor = dtensor_class()
    return DTensor is not None and isinstance(tensor, DTensor)


def local_tensor(tensor):
    """This rank's part of a DTensor (a view: writing to it writes the parameter), or ``tensor`` itself."""
    if not is_sharded(tensor):
        return tensor
    with torch.no_grad():
        return tensor.to_local()


def unsupported_placement(tensor) -> str | None:
    """Why a DTensor parameter cannot be pruned shard by shard (None when it is FSDP2's row split)."""
    from torch.distributed.tensor import Shard

    placements = tuple(getattr(tensor, "placements", None) or ())
    mesh = getattr(tensor, "device_mesh", None)
    if len(placements) == 1 and placements[0] == Shard(0) and mesh is not None and mesh.ndim == 1:
        return None
    return (
        f"placements {placements or 'unknown'} on a {getattr(mesh, 'ndim', '?')}-D device mesh (tensor "
        "parallelism or HSDP); only FSDP2's one-dimensional row sharding (Shard(0)) is supported"
    )


def row_shards(weights: Sequence[torch.Tensor]) -> RowShards | None:
    """The `RowShards` of FSDP2-sharded ``weights`` (all DTensors split by rows over one mesh), or None for none.

    One all-gather of the local row counts; raises a ValueError naming FSDP2 for a layout pruning cannot use.
    """
    sharded = [is_sharded(weight) for weight in weights]
    if not any(sharded):
        return None
    if not all(sharded):
        raise ValueError(
            f"PruningCallback under FSDP2: {sharded.count(False)} of the {len(weights)} prunable weights are not "
            "sharded (plain tensors beside DTensors). Shard the whole model (`fully_shard` on the root module too, "
            "as the Trainer does) or leave the unsharded layers out with `pruning_ignore`."
        )
    for weight in weights:
        why = unsupported_placement(weight)
        if why:
            raise ValueError(f"PruningCallback cannot prune DTensor parameters with {why}.")
    mesh = weights[0].device_mesh
    if any(weight.device_mesh != mesh for weight in weights):
        raise ValueError("PruningCallback under FSDP2 needs every prunable weight on one device mesh.")
    group = mesh.get_group()
    world = dist.get_world_size(group)
    local = [local_tensor(weight) for weight in weights]
    device = local[0].device
    rows = torch.tensor([t.shape[0] for t in local], dtype=torch.int64, device=device)
    every = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(every, rows, group=group)
    counts = torch.stack(every, dim=1).tolist()  # [layer][rank]
    for weight, layer_counts in zip(weights, counts, strict=True):
        if sum(layer_counts) != weight.shape[0]:
            raise ValueError(
                f"PruningCallback under FSDP2: the ranks hold {layer_counts} rows of a weight of shape "
                f"{tuple(weight.shape)}; expected a split of its {weight.shape[0]} rows."
            )

    def gather(tensor: torch.Tensor, layer_counts: Sequence[int]) -> torch.Tensor:
        # all_gather needs equal sizes: pad every rank's rows to the largest share, then trim.
        most = max(layer_counts)
        padded = tensor.new_zeros((most, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in layer_counts]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([part[:count] for part, count in zip(parts, layer_counts, strict=True)])

    def sum_(tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return tensor

    return RowShards(counts=counts, rank=dist.get_rank(group), gather=gather, sum_=sum_)


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def values_of_ranks(value: float, shards: RowShards, device=None) -> list[float]:
    """``value`` of every rank of ``shards``, in rank order."""
    world = len(shards.counts[0]) if shards.counts else 1
    mine = torch.tensor([[value]], dtype=torch.float64, device=device)
    return shards.gather(mine, [1] * world).reshape(-1).tolist()


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


def _accelerate_flag(name: str) -> bool:
    # The variables `accelerate launch` (and an `Accelerator` given a plugin) set, as Accelerate reads them.
    return os.environ.get(name, "false").lower() == "true"


def fsdp_version(args) -> int | None:
    """The FSDP version the run asks for, None without FSDP.

    From `TrainingArguments` (`fsdp`, `fsdp_plugin_args`, `fsdp_config`: the Trainer builds its FSDP plugin from
    them), else from Accelerate's launch settings (`ACCELERATE_USE_FSDP`, `FSDP_VERSION`), which an Accelerator
    reads when the arguments ask for nothing.
    """
    if getattr(args, "fsdp", None):
        plugin_args = getattr(args, "fsdp_plugin_args", None) or {}
        config = getattr(args, "fsdp_config", None) or {}
        # transformers 5 builds FSDP2 unless `fsdp_config` asks for version 1.
        return int(plugin_args.get("fsdp_version", config.get("version", config.get("fsdp_version", 2))))
    if _accelerate_flag("ACCELERATE_USE_FSDP"):
        return int(os.environ.get("FSDP_VERSION", "1") or 1)
    return None


def sharded_training_message(args, model) -> str | None:
    """Why this run cannot prune while training (FSDP1, DeepSpeed, tensor parallelism), or None.

    Single-process, DDP and FSDP2 (`fully_shard`: DTensor parameters split by rows) runs are supported.

    Args:
        args ([`~transformers.TrainingArguments`]):
            The Trainer's arguments.
        model (`torch.nn.Module`, *optional*):
            The model the callback receives at train begin (FSDP1 wraps its modules, FSDP2 makes DTensors).
    """
    why = None
    version = fsdp_version(args)
    fsdp1_modules = False
    if model is not None:
        try:
            from torch.distributed.fsdp import FullyShardedDataParallel

            fsdp1_modules = any(isinstance(module, FullyShardedDataParallel) for module in model.modules())
        except ImportError:  # pragma: no cover - torch without distributed
            pass
    if getattr(args, "deepspeed", None) or _accelerate_flag("ACCELERATE_USE_DEEPSPEED"):
        why = (
            "DeepSpeed (`deepspeed` is set: its ZeRO partitions hide the weights and moments per tensor); shard "
            'with FSDP2 instead: `fsdp=True, fsdp_config={"version": 2}`'
        )
    elif fsdp1_modules or version == 1:
        why = (
            "FSDP1 (`fsdp` with FSDP version 1: flat parameters hide the weights and moments per tensor); use "
            'FSDP2 instead: `fsdp_config={"version": 2}` (the default of transformers 5) or `fsdp_version: 2` in '
            "the Accelerate config"
        )
    elif model is not None and dtensor_class() is not None:
        for name, param in model.named_parameters():
            if is_sharded(param) and unsupported_placement(param):
                why = f"DTensor parameters such as {name} with {unsupported_placement(param)}"
                break
    if why is None:
        return None
    return (
        f"PruningCallback does not support {why}. Pruning while training supports single-process, DDP and FSDP2 "
        "training."
    )


def check_training_run(args, model) -> None:
    """Refuse a run pruning while training cannot handle; warn about processes that do not train as one run."""
    if model is None:
        raise RuntimeError("PruningCallback needs the model: add it to a transformers Trainer.")
    unsupported = sharded_training_message(args, model)
    if unsupported:
        raise ValueError(unsupported)
    drift = ddp_inactive_message(args)
    if drift:
        logger.warning_once(drift)


def warn_if_fsdp_did_not_shard(args) -> None:
    """Warn when FSDP2 is configured for a distributed run whose prunable weights are not DTensors."""
    if fsdp_version(args) == 2 and is_distributed():
        logger.warning_once(
            "FSDP is configured but the prunable weights are not DTensors: the model is not sharded (Accelerate "
            "enables FSDP on accelerators only and trains on CPU with DDP); pruning as for DDP."
        )

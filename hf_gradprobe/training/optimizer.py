# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What pruning while training reads from and writes to the optimizer.

Unwrapping the torch optimizer from Accelerate's wrapper, checking it holds the AdamW moments a method
needs, the β₁ bitter8 bias-corrects with, zeroing pruned entries of weight-shaped buffers, and telling
whether the fp16 loss scaler skipped a step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.layers import PrunableLayer
from .distributed import local_tensor
from .importance import DEFAULT_BETA1
from .methods import PruningMethod


__all__ = [
    "beta1_of",
    "check_optimizer",
    "keeps_zeros",
    "local_param_state",
    "loss_scale",
    "param_state",
    "step_was_skipped",
    "unwrap_optimizer",
    "zero_pruned_state_",
]


def unwrap_optimizer(optimizer):
    """The torch optimizer inside Accelerate's `AcceleratedOptimizer` (or DeepSpeed's wrappers)."""
    # The wrappers keep the torch optimizer in `.optimizer`.
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


def check_optimizer(method: PruningMethod, optimizer, layers: Sequence[PrunableLayer]) -> None:
    """Raise before training if ``method`` reads AdamW's moments and ``optimizer`` cannot give them for ``layers``."""
    if not method.reads_optimizer_state:
        return
    name = method.name
    frozen = [layer.param_name for layer in layers if not layer.weight.requires_grad]
    if frozen:
        raise ValueError(
            f"`pruning_method`={name!r} scores weights from their AdamW moments, but {len(frozen)} prunable "
            f"weights are frozen ({frozen[0]}{', ...' if len(frozen) > 1 else ''}; e.g. the base layers of a "
            "LoRA/PEFT model) and have no optimizer state. Use `pruning_method='fixed'` (keep the zeros of a "
            "one-shot pruned model) or `'magnitude'`."
        )
    kind = type(optimizer).__name__ if optimizer is not None else "None"
    groups = getattr(optimizer, "param_groups", None) or []
    if optimizer is None or not all("betas" in group for group in groups):
        raise ValueError(
            f"`pruning_method`={name!r} scores weights from AdamW's moments "
            f"({', '.join(method.optimizer_state)}), but the optimizer is {kind}, which keeps none. Train "
            "with an Adam-family optimizer (`optim='adamw_torch'`, the default), or use "
            "`pruning_method='magnitude'` or `'movement'` with this optimizer."
        )
    in_optimizer = {id(p) for group in groups for p in group["params"]}
    missing = [layer.param_name for layer in layers if id(layer.weight) not in in_optimizer]
    if missing:
        raise ValueError(
            f"`pruning_method`={name!r} needs the optimizer state of every pruned weight, but {kind} "
            f"does not train {missing[:3]}{'...' if len(missing) > 3 else ''}. Exclude them with `pruning_ignore` "
            "or unfreeze them."
        )


def keeps_zeros(optimizer) -> bool:
    """Whether ``optimizer``'s step leaves a weight at exactly 0 when its gradient and moments are 0 there.

    True for torch's Adam and AdamW (any implementation: foreach, fused, amsgrad): the update is ``m / (sqrt(v) +
    eps) = 0`` and weight decay scales 0 to 0. Other optimizers are not assumed to (e.g. a quantized state whose
    dequantized zero is not 0), and their pruned weights are zeroed again after every step.
    """
    return type(unwrap_optimizer(optimizer)) in (torch.optim.Adam, torch.optim.AdamW)


def param_state(optimizer, param: torch.Tensor) -> dict:
    """The optimizer state of ``param`` (empty before its first step or without an optimizer)."""
    return optimizer.state.get(param, {}) if optimizer is not None else {}


def local_param_state(optimizer, param: torch.Tensor) -> dict:
    """:func:`param_state` with this rank's part of every DTensor (FSDP2 shards its moments like ``param``)."""
    return {key: local_tensor(value) for key, value in param_state(optimizer, param).items()}


def beta1_of(optimizer, param: torch.Tensor) -> float:
    """Adam's β₁ of the parameter group holding ``param`` (0.9 when none does)."""
    for group in getattr(optimizer, "param_groups", []):
        if any(p is param for p in group["params"]):
            return float(group.get("betas", (DEFAULT_BETA1, 0.999))[0])
    return DEFAULT_BETA1


@torch.no_grad()
def zero_pruned_state_(optimizer, param: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of every ``param``-shaped optimizer buffer (exp_avg, exp_avg_sq, momentum...).

    Under FSDP2 ``mask`` is this rank's rows, and so are the buffers' local parts compared with it.
    """
    for value in local_param_state(optimizer, param).values():
        if isinstance(value, torch.Tensor) and value.shape == mask.shape:
            value.masked_fill_(mask.to(value.device), 0)


def loss_scale(optimizer) -> float | None:
    """The fp16 loss scale of Accelerate's optimizer wrapper, or None without an active scaler."""
    scaler = getattr(optimizer, "scaler", None)
    return scaler.get_scale() if scaler is not None and scaler.is_enabled() else None


def step_was_skipped(optimizer, scale_before: float | None) -> bool:
    """Whether the last `optimizer.step()` changed nothing (fp16 overflow); ``scale_before`` is
    :func:`loss_scale` read before that step."""
    if getattr(optimizer, "step_was_skipped", False):
        return True
    # Accelerate (1.15) reports no skip for optimizers that take the scaler's found_inf themselves (fused
    # AdamW, the default on CUDA): they are called and do nothing. An overflow always halves the loss scale.
    scaler = getattr(optimizer, "scaler", None)
    return scale_before is not None and scaler is not None and scaler.get_scale() < scale_before

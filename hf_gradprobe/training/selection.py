# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Which weights a mask update prunes, through `core.masking.select_masks`, and the threshold it used.

Adds what training needs around the package's one mask selection: the per-layer targets of the
layer-adaptive ramp, the (out, in) orientation ``per_row`` compares in, and the score threshold logged
as `pruning/threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.layers import PrunableLayer
from ..core.masking import EXACT_LIMIT, RowShards, select_masks
from .schedule import layer_adaptive_scales, layer_sparsities


__all__ = [
    "PRUNED_SCORE",
    "block_positions",
    "count_pruned",
    "largest_pruned_score",
    "select_training_masks",
    "selection_threshold",
    "sharded_per_row_message",
]


# The score of a weight pruned before: lower than any real score, so it fills its group's quota first (masks
# only grow), yet finite, since select_masks never prunes a non-finite score.
PRUNED_SCORE = -torch.finfo(torch.float32).max


def block_positions(layers: Sequence[PrunableLayer]) -> list[float]:
    """Each layer's depth in [0, 1]: block index / last block index (1 outside the blocks)."""
    blocks = [layer.block_index for layer in layers if layer.block_index is not None]
    last = max(blocks) if blocks else 0
    return [1.0 if layer.block_index is None or last == 0 else layer.block_index / last for layer in layers]


def select_training_masks(
    scores: Sequence[torch.Tensor],
    layers: Sequence[PrunableLayer],
    target: float,
    comparison_group: str,
    *,
    layer_adaptive: bool = False,
    exact_limit: int = EXACT_LIMIT,
    sample_fraction: float | None = None,
    seed: int = 0,
    shards: RowShards | None = None,
) -> list[torch.Tensor]:
    """Masks (True = pruned, weight-shaped) of the lowest ``scores`` of ``layers`` at the sparsity ``target``.

    ``per_row`` compares the scores of each output unit, whatever the weight's storage orientation (GPT-2's Conv1D
    stores (in, out)).

    Args:
        scores (`Sequence[torch.Tensor]`):
            One score tensor per layer, weight-shaped (under FSDP2, this rank's rows).
        layers (`Sequence[PrunableLayer]`):
            The layers the scores belong to.
        target (`float`):
            The sparsity to reach.
        comparison_group (`str`):
            `per_row`, `per_layer` or `global`.
        layer_adaptive (`bool`, *optional*, defaults to `False`):
            Give each layer its own target: the 0.7x -> 1.3x ramp over the blocks, renormalised to ``target``.
        exact_limit (`int`, *optional*, defaults to `2**24`):
            Pools of up to that many scores are decided exactly.
        sample_fraction (`float`, *optional*):
            Fraction of the scores sampled to estimate the threshold of larger pools.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sample.
        shards (`RowShards`, *optional*):
            FSDP2's row split: the masks returned are this rank's rows of those the whole weights would get.
    """
    per_row = comparison_group == "per_row"
    if shards is not None and per_row and any(layer.transposed for layer in layers):
        raise ValueError(sharded_per_row_message(layers))
    sparsity: float | list[float] = target
    if layer_adaptive:
        numels = [score.numel() if shards is None else shards.numel(i, score) for i, score in enumerate(scores)]
        sparsity = layer_sparsities(target, layer_adaptive_scales(block_positions(layers), numels), numels)
    if per_row:
        scores = [layer.out_in(score) for layer, score in zip(layers, scores, strict=True)]
    masks = select_masks(
        scores,
        sparsity,
        comparison_group,
        exact_limit=exact_limit,
        sample_fraction=sample_fraction,
        seed=seed,
        shards=shards,
    )
    if per_row:
        masks = [layer.from_out_in(mask) for layer, mask in zip(layers, masks, strict=True)]
    return masks


def sharded_per_row_message(layers: Sequence[PrunableLayer]) -> str:
    """Why ``per_row`` cannot run on FSDP2 shards of weights stored (in, out): their rows are split across ranks."""
    name = next(layer.param_name for layer in layers if layer.transposed)
    return (
        f"`pruning_comparison_group='per_row'` under FSDP2: {name} is stored (in_features, out_features) "
        "(GPT-2's Conv1D), so FSDP2's row shards split its output units across ranks. Use 'per_layer' or "
        "'global', or train it without FSDP."
    )


def largest_pruned_score(scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> float:
    """The largest score ``masks`` prune (-inf when they prune nothing): the threshold an exact selection used."""
    best = -math.inf
    for score, mask in zip(scores, masks, strict=True):
        if mask.any():
            best = max(best, float(score[mask.to(score.device)].max()))
    return best


def selection_threshold(scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> float:
    """The highest finite per-layer :func:`largest_pruned_score`, NaN when no layer has one.

    Scores of weights pruned before are ``PRUNED_SCORE``, so a layer that pruned nothing new has no threshold.
    """
    thresholds = [largest_pruned_score([score], [mask]) for score, mask in zip(scores, masks, strict=True)]
    finite = [threshold for threshold in thresholds if math.isfinite(threshold) and threshold > PRUNED_SCORE]
    return max(finite) if finite else float("nan")


def count_pruned(masks: Sequence[torch.Tensor]) -> int:
    """How many entries ``masks`` prune."""
    # One device sync for all layers instead of one per layer.
    return int(torch.stack([mask.sum() for mask in masks]).sum()) if masks else 0

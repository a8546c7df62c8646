# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Non-uniform sparsity across blocks, with the total exactly on target (pure functions).

``owl``: blocks whose Wanda scores hold more outliers (scores above ``threshold`` times their layer's mean) are
pruned less, following OWL (Yin et al. 2024): the blocks' outlier ratios are spread linearly over a band of width
``2 * strength`` around the target and centred on it. The per-block sparsities are then turned into exact zero
counts per layer whose sum is exactly the count the target gives the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.masking import num_to_prune


__all__ = ["ALLOCATIONS", "exact_counts", "outlier_count", "owl_sparsities", "row_counts"]

ALLOCATIONS = ("uniform", "owl")


def outlier_count(scores: torch.Tensor, threshold: float) -> int:
    """How many ``scores`` exceed ``threshold`` times their mean."""
    scores = scores.detach().float()
    return int((scores > threshold * scores.mean()).sum())


def owl_sparsities(ratios: Sequence[float], target: float, strength: float) -> list[float]:
    """One sparsity per block from its outlier ratio: ``target + mean(n) - n_b`` with ``n`` the ratios rescaled to
    ``[0, 2 * strength]``, so the unweighted mean is ``target`` and the most outlier-rich block is pruned least.
    Equal ratios (or one block) give ``target`` everywhere; results stay in ``[0, 1)``."""
    ratios = [float(r) for r in ratios]
    low, high = min(ratios), max(ratios)
    if high - low <= 0:
        return [target] * len(ratios)
    spread = [(r - low) / (high - low) * 2 * strength for r in ratios]
    centre = sum(spread) / len(spread)
    return [min(max(target + centre - n, 0.0), 1.0 - 1e-9) for n in spread]


def exact_counts(numels: Sequence[int], sparsities: Sequence[float], target: float) -> list[int]:
    """Zero counts per matrix, each as close to ``sparsity * numel`` as the total allows, summing exactly to
    ``num_to_prune(sum(numels), target)`` (largest remainders first; no count beyond its matrix)."""
    total = num_to_prune(sum(numels), target)
    wanted = [s * n for s, n in zip(sparsities, numels, strict=True)]
    if sum(wanted) <= total * 1e-9:  # nothing asked anywhere (or next to nothing): the target everywhere
        wanted = [target * n for n in numels]
    # Scaled to the exact total first, so a mean off by rounding does not shift every layer.
    factor = total / sum(wanted) if sum(wanted) > 0 else 0.0
    wanted = [min(w * factor, n) for w, n in zip(wanted, numels, strict=True)]
    counts = [min(math.floor(w), n) for w, n in zip(wanted, numels, strict=True)]
    missing = total - sum(counts)
    # Largest remainders first; what a full matrix cannot take goes to the next ones.
    order = sorted(range(len(numels)), key=lambda i: (counts[i] - wanted[i], i))
    while missing > 0:
        for i in order:
            if missing > 0 and counts[i] < numels[i]:
                counts[i] += 1
                missing -= 1
    return counts


def row_counts(count: int, rows: int, columns: int) -> torch.Tensor:
    """``count`` zeros spread over ``rows`` rows of ``columns`` as evenly as possible (the first rows get one more)."""
    if not 0 <= count <= rows * columns:
        raise ValueError(f"Cannot place {count} zeros in a {rows} x {columns} matrix.")
    base, extra = divmod(count, rows)
    counts = torch.full((rows,), base, dtype=torch.long)
    counts[:extra] += 1
    return counts

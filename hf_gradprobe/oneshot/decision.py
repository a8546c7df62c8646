# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pure functions: candidates from strategy scores, and the final mask from the probe's gradients.

The rule (documented in the README, with the measurements that chose it):

1. The strategy proposes ``candidate_ratio`` times more weights than will be pruned in each
   comparison group (per row, per layer, the whole model, or each N:M group): its lowest scores.
2. The probe measures a gradient statistic ``g0`` at the original weights and ``g1`` with every
   candidate of the probed scope multiplied by ``reduction_factor``.
3. Each candidate is judged on its probed gradient ``g = g1``: how hard the loss pulls on it once its
   neighbours have shrunk. With a ``gradient_threshold`` τ, only candidates whose gradient grew past it
   (``g1 > g0 * (1 + τ)``) are judged on ``g1``, the others on their dense gradient ``g0``.
4. Each group prunes exactly its quota among its candidates, lowest key first, where
   ``key = score / mean(score) + gradient_weight * |W| g / mean(|W| g)`` (means over the layer), a
   first-order saliency ``|W| g`` added to the strategy's score on a common scale. Everything not pruned
   keeps its exact original value.

Why: step 4 hits the target sparsity exactly in one pass (no re-tuning loop) and never prunes a weight
the strategy did not propose. A hard veto (restore every candidate whose gradient grew) over-weights
relative growth, which is largest where ``g0`` is tiny, i.e. on weights the loss ignores; the measured
comparison is in the README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.masking import nm_mask, parse_nm_pattern, select_masks


__all__ = [
    "candidate_sparsity",
    "gradient_growth",
    "grown_candidates",
    "nm_candidate_count",
    "probe_masks",
    "probed_gradient",
    "propose_candidates",
    "selection_keys",
]


def candidate_sparsity(sparsity: float, candidate_ratio: float) -> float:
    """Fraction of a group proposed as candidates (below 1 so every group keeps something)."""
    return min(sparsity * candidate_ratio, 1.0 - 1e-9) if sparsity > 0 else 0.0


def nm_candidate_count(n: int, m: int, candidate_ratio: float) -> int:
    """Candidates per N:M group: the M-N to prune plus ``ceil((ratio - 1) * (M - N))`` extra, at most M."""
    prune = m - n
    return min(m, prune + math.ceil((candidate_ratio - 1.0) * prune - 1e-9))


def propose_candidates(
    scores: Sequence[torch.Tensor],
    sparsity: float | Sequence[float],
    comparison_group: str,
    pattern: str | None,
    candidate_ratio: float,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Candidate masks (True = proposed) for a list of (out, in) score matrices; ``sparsity`` may be one per
    matrix (a non-uniform allocation)."""
    nm = parse_nm_pattern(pattern)
    if nm is not None:
        n, m = nm
        keep = m - nm_candidate_count(n, m, candidate_ratio)
        return [nm_mask(s, keep, m) if keep > 0 else torch.ones_like(s, dtype=torch.bool) for s in scores]
    # Candidates are proposals, not what is pruned: a row proposed whole is no reason to warn.
    if isinstance(sparsity, (list, tuple)):
        proposed = [candidate_sparsity(value, candidate_ratio) for value in sparsity]
    else:
        proposed = candidate_sparsity(sparsity, candidate_ratio)
    return select_masks(scores, proposed, comparison_group, seed=seed, warn_whole_groups=False)


def gradient_growth(g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
    """Relative growth ``g1 / g0 - 1`` of a gradient statistic, with 0/0 = 0 and x/0 = +inf."""
    growth = g1 / g0 - 1.0
    growth = torch.where(g0 > 0, growth, torch.where(g1 > 0, torch.inf, 0.0))
    return torch.nan_to_num(growth, nan=torch.inf, posinf=torch.inf)


def grown_candidates(
    g0: torch.Tensor, g1: torch.Tensor, candidates: torch.Tensor, gradient_threshold: float
) -> torch.Tensor:
    """Candidates whose gradient grew past ``gradient_threshold`` once shrunk (judged on ``g1``)."""
    return (gradient_growth(g0, g1) > gradient_threshold) & candidates


def probed_gradient(g0: torch.Tensor, g1: torch.Tensor, gradient_threshold: float | None) -> torch.Tensor:
    """``g1``; with a threshold, ``g1`` only where the gradient grew past it and ``g0`` elsewhere."""
    if gradient_threshold is None:
        return g1
    return torch.where(gradient_growth(g0, g1) > gradient_threshold, g1, g0)


def _unit_mean(x: torch.Tensor) -> torch.Tensor:
    # The mean of the finite entries: one NaN/inf (which select_masks never prunes) must not blank the layer.
    x = x.float()
    finite = torch.isfinite(x)
    count = finite.sum()
    mean = torch.where(finite, x, 0.0).sum() / count if count > 0 else x.new_zeros(())
    return x / mean if mean > 0 else torch.where(finite, 0.0, math.inf)


def selection_keys(
    scores: torch.Tensor,
    weights: torch.Tensor,
    candidates: torch.Tensor,
    g0: torch.Tensor,
    g1: torch.Tensor,
    gradient_threshold: float | None,
    gradient_weight: float,
) -> torch.Tensor:
    """Ranking keys (lowest pruned first); non-candidates get +inf so they are never chosen."""
    grad = probed_gradient(g0.float(), g1.float(), gradient_threshold)
    keys = _unit_mean(scores.float()) + gradient_weight * _unit_mean(weights.float().abs() * grad)
    return keys.masked_fill(~candidates, math.inf)


def probe_masks(
    scores: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    candidates: Sequence[torch.Tensor],
    g0: Sequence[torch.Tensor],
    g1: Sequence[torch.Tensor],
    sparsity: float,
    comparison_group: str,
    pattern: str | None,
    gradient_threshold: float | None,
    gradient_weight: float,
    seed: int = 0,
    counts: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Final masks (exact quota per group, or the exact ``counts`` per matrix) for (out, in) matrices decided
    together."""
    keys = [
        selection_keys(s, w, c, a, b, gradient_threshold, gradient_weight)
        for s, w, c, a, b in zip(scores, weights, candidates, g0, g1, strict=True)
    ]
    return select_masks(keys, sparsity, comparison_group, pattern, seed=seed, counts=counts)

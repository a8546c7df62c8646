# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pure functions: candidates from strategy scores, and the final mask from the probe's gradients.

The rule (documented in the README):

1. The strategy proposes ``candidate_ratio`` times more weights than will be pruned in each
   comparison group (per row, per layer, the whole model, or each N:M group): its lowest scores.
2. The probe measures a gradient statistic ``g0`` at the original weights and ``g1`` with every
   candidate of the probed scope multiplied by ``reduction_factor``.
3. A candidate whose statistic grew past the threshold (``g1 > g0 * (1 + gradient_threshold)``) is
   *protected*: the loss leans on it. The others are *prunable*.
4. Each group prunes exactly its quota: prunable candidates first, in strategy order (lowest score
   first), then, only if the group has too few, protected candidates in strategy order. Everything not
   pruned keeps its exact original value.

Why: step 4 hits the target sparsity exactly in one pass (no re-tuning loop), never prunes a
weight the strategy did not propose, and uses the gradient response only to veto candidates the
loss depends on, which is what the probe can measure reliably; between prunable candidates the
strategy's own ordering is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .masking import global_masks, nm_mask, parse_nm_pattern, select_mask
from .probing import gradient_growth


def candidate_sparsity(sparsity: float, candidate_ratio: float) -> float:
    """Fraction of a group proposed as candidates (below 1 so every group keeps something)."""
    return min(sparsity * candidate_ratio, 1.0 - 1e-9) if sparsity > 0 else 0.0


def nm_candidate_count(n: int, m: int, candidate_ratio: float) -> int:
    """Candidates per N:M group: the M-N to prune plus ``ceil((ratio - 1) * (M - N))`` extra, at most M."""
    prune = m - n
    return min(m, prune + math.ceil((candidate_ratio - 1.0) * prune - 1e-9))


def propose_candidates(
    scores: Sequence[torch.Tensor], sparsity: float, comparison_group: str, pattern: str | None,
    candidate_ratio: float, seed: int = 0,
) -> list[torch.Tensor]:
    """Candidate masks (True = proposed) for a list of (out, in) score matrices."""
    nm = parse_nm_pattern(pattern)
    if nm is not None:
        n, m = nm
        keep = m - nm_candidate_count(n, m, candidate_ratio)
        return [nm_mask(s, keep, m) if keep > 0 else torch.ones_like(s, dtype=torch.bool) for s in scores]
    fraction = candidate_sparsity(sparsity, candidate_ratio)
    if comparison_group == "global":
        return global_masks(scores, fraction, seed=seed)
    return [select_mask(s, fraction, comparison_group) for s in scores]


def selection_keys(
    scores: torch.Tensor, candidates: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor,
    gradient_threshold: float, protected_offset: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranking keys (lowest pruned first) and the protected mask.

    Prunable candidates keep their strategy score; protected ones are pushed above every prunable
    one by ``protected_offset`` (larger than any score in the comparison group); non-candidates get
    +inf so they are never chosen.
    """
    protected = candidates & (gradient_growth(g0, g1) > gradient_threshold)
    keys = scores.float().clone()
    keys[protected] += protected_offset
    keys[~candidates] = math.inf
    return keys, protected


def probe_masks(
    scores: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor], g0: Sequence[torch.Tensor],
    g1: Sequence[torch.Tensor], sparsity: float, comparison_group: str, pattern: str | None,
    gradient_threshold: float, seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Final masks (exact quota per group) and protected masks, for matrices decided together."""
    finite_max = max((float(s.max()) for s in scores if s.numel()), default=0.0)
    offset = 2.0 * abs(finite_max) + 1.0
    keyed = [selection_keys(s, c, a, b, gradient_threshold, offset) for s, c, a, b in zip(scores, candidates, g0, g1)]
    keys = [k for k, _ in keyed]
    protected = [p for _, p in keyed]
    nm = parse_nm_pattern(pattern)
    if nm is not None:
        masks = [nm_mask(k, *nm) for k in keys]
    elif comparison_group == "global":
        masks = global_masks(keys, sparsity, seed=seed)
    else:
        masks = [select_mask(k, sparsity, comparison_group) for k in keys]
    return masks, protected

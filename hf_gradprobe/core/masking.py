# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pure tensor functions that turn importance scores into pruning masks.

Conventions used everywhere in the package:

* A mask is a ``torch.bool`` tensor with the weight's shape; ``True`` means *pruned* (set to zero).
* Scores are "keep-worthiness": the lowest scores are pruned. They are compared in fp32 whatever the
  weight dtype, so fp16/bf16 rounding never creates spurious ties.
* Matrices are given in ``(out_features, in_features)`` orientation. A "row" is one output unit and
  N:M groups run along the input dimension, as sparse tensor cores expect.
* Ties are broken by position: among equal scores the one with the lower flat index is pruned first,
  so the same scores always give the same mask on every process.
* Scores split by rows across processes (FSDP2's ``Shard(0)``) are described by a :class:`RowShards`: every
  function taking one decides the same masks as on the whole matrices, each process getting its own rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .validation import describe_value


__all__ = [
    "COMPARISON_GROUPS",
    "DEFAULT_SAMPLE_FRACTION",
    "EXACT_LIMIT",
    "RowShards",
    "apply_mask_",
    "lowest_counts_mask",
    "lowest_k_mask",
    "magnitude_scores",
    "nm_mask",
    "nm_violations",
    "num_to_prune",
    "parse_nm_pattern",
    "per_row_mask",
    "sampled_threshold",
    "select_masks",
    "validate_sparsity",
]


logger = logging.get_logger(__name__)


COMPARISON_GROUPS = ("per_row", "per_layer", "global")
# Pools up to this many scores are decided exactly (one fp32 copy of the pool: 64 MiB); larger ones by a
# seeded sampled threshold (see `sampled_threshold` for its error).
EXACT_LIMIT = 2**24
DEFAULT_SAMPLE_FRACTION = 0.02


@dataclass(frozen=True)
class RowShards:
    """How score matrices are split by rows across the processes of a group (FSDP2's ``Shard(0)``).

    ``counts[i][r]`` is the number of rows of matrix ``i`` that process ``r`` holds, in row order (process 0
    holds the first rows); this process is ``rank``. The collectives are given by the caller, so this module
    stays free of `torch.distributed`: ``gather(local, counts)`` returns the whole matrix (the processes' rows
    concatenated) on every process, ``sum_(tensor)`` sums a tensor over the processes in place.
    """

    counts: Sequence[Sequence[int]]
    rank: int
    gather: Callable[[torch.Tensor, Sequence[int]], torch.Tensor]
    sum_: Callable[[torch.Tensor], torch.Tensor]

    def row_range(self, index: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of matrix ``index`` this process holds."""
        counts = self.counts[index]
        start = sum(counts[: self.rank])
        return start, start + counts[self.rank]

    def numel(self, index: int, local: torch.Tensor) -> int:
        """The number of entries of the whole matrix ``index``, given this process's rows ``local``."""
        return sum(self.counts[index]) * math.prod(local.shape[1:])

    def flat_offset(self, index: int, local: torch.Tensor) -> int:
        """Where this process's rows ``local`` start in the flattened whole matrix ``index``."""
        return self.row_range(index)[0] * math.prod(local.shape[1:])

    def own_rows(self, index: int, whole: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``whole`` (a tensor shaped like the whole matrix ``index``)."""
        start, stop = self.row_range(index)
        return whole[start:stop]


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """``|W|`` in fp32 (a new tensor): the magnitude score, one-shot and while training."""
    return weight.detach().float().abs()


def validate_sparsity(sparsity: float, name: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not _finite(sparsity):
        raise ValueError(f"`{name}` must be a number in [0, 1), got {describe_value(sparsity)}.")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1) (the fraction of weights set to zero), got {describe_value(sparsity)}. "
            "For example 0.5 prunes half of the prunable weights."
        )
    return float(sparsity)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def parse_nm_pattern(pattern: str | None, name: str = "pattern") -> tuple[int, int] | None:
    """Parse ``"unstructured"`` (returns ``None``) or ``"N:M"`` (at most N non-zeros in every M weights)."""
    if pattern is None or pattern == "unstructured":
        return None
    parts = str(pattern).split(":")
    try:
        n, m = (int(p) for p in parts)
    except ValueError:
        n = m = -1
    if len(parts) != 2 or not 0 < n < m:
        raise ValueError(
            f"`{name}` must be 'unstructured' or 'N:M' with integers 0 < N < M (N kept out of every M "
            f"consecutive weights along the input dimension, e.g. '2:4'), got {pattern!r}."
        )
    return n, m


def num_to_prune(numel: int, sparsity: float) -> int:
    """The exact number of weights pruned in a group of ``numel`` at ``sparsity`` (round half up)."""
    return min(numel, math.floor(sparsity * numel + 0.5))


def _lowest_k_mask_last_dim(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` lowest entries of every row of a 2-D fp32 tensor, ties to the lower index."""
    cols = scores.shape[1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= cols:
        return _prunable(scores)
    # kthvalue is O(n) and needs no sorted copy; ties at the threshold are then resolved by position.
    threshold = scores.kthvalue(k, dim=-1, keepdim=True).values
    below = scores < threshold
    at = scores == threshold
    missing = k - below.sum(dim=-1, keepdim=True)
    return (below | (at & (at.cumsum(dim=-1) <= missing))) & _prunable(scores)


def _as_fp32(scores: torch.Tensor) -> torch.Tensor:
    scores = scores.detach()
    if scores.dtype != torch.float32:
        scores = scores.float()
    # A score that is not finite (NaN, +-inf: a diverged loss, an overflow) says nothing about importance: it
    # must never prune. It becomes +inf, ranked last, and ``_prunable`` keeps it even when a quota would
    # reach it (a group then prunes fewer than its quota rather than weights it knows nothing about).
    return torch.nan_to_num(scores, nan=math.inf, posinf=math.inf, neginf=math.inf)


def _prunable(scores: torch.Tensor) -> torch.Tensor:
    """Where the output of ``_as_fp32`` may be pruned: everywhere but the non-finite scores."""
    return scores != math.inf


def lowest_k_mask(scores: torch.Tensor, sparsity: float, *, warn: bool = True) -> torch.Tensor:
    """Prune exactly ``round(sparsity * numel)`` entries of the whole tensor (per-layer comparison).

    ``warn``: say so when the mask prunes the whole layer (off for masks that only propose, e.g. candidates)."""
    sparsity = validate_sparsity(sparsity)
    flat = _as_fp32(scores).reshape(1, -1)
    k = num_to_prune(flat.numel(), sparsity)
    mask = _lowest_k_mask_last_dim(flat, k)
    # Checked on the mask itself: non-finite scores are kept even when the quota would reach them.
    if warn and 0 < sparsity and k >= flat.numel() > 1 and bool(mask.all()):
        _warn_whole_group(f"the whole layer ({flat.numel()} weights)", sparsity)
    return mask.reshape(scores.shape)


def per_row_mask(scores: torch.Tensor, sparsity: float, *, warn: bool = True) -> torch.Tensor:
    """Prune exactly ``round(sparsity * in_features)`` entries of every output row (Wanda's group).

    ``warn``: say so when the mask prunes whole rows (off for masks that only propose, e.g. candidates)."""
    sparsity = validate_sparsity(sparsity)
    if scores.dim() != 2:
        raise ValueError(f"per_row comparison needs a 2-D (out, in) score matrix, got shape {tuple(scores.shape)}.")
    k = num_to_prune(scores.shape[1], sparsity)
    mask = _lowest_k_mask_last_dim(_as_fp32(scores), k)
    if warn and 0 < sparsity and k >= scores.shape[1] and bool(mask.all(dim=1).any()):
        _warn_whole_group(f"every output row ({scores.shape[1]} weights each)", sparsity)
    return mask


def _warn_whole_group(group: str, sparsity: float) -> None:
    logger.warning_once(
        f"sparsity {sparsity} rounds to pruning {group} entirely: those units are left with no weight at all. "
        "Lower the sparsity, or compare over larger groups (per_layer/global)."
    )


def lowest_counts_mask(scores: torch.Tensor, counts: torch.Tensor | int) -> torch.Tensor:
    """Prune the ``counts[r]`` lowest entries of every row ``r`` of a 2-D score matrix (one count for every row
    when an int), ties to the lower index; non-finite scores are never pruned."""
    if isinstance(counts, int):
        return _lowest_k_mask_last_dim(_as_fp32(scores), counts)
    scores = _as_fp32(scores)
    counts = counts.to(scores.device).reshape(-1, 1)
    order = scores.argsort(dim=1, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return (ranks < counts) & _prunable(scores)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive scores along the input dimension (vectorised)."""
    if not 0 < n < m:
        raise ValueError(f"N:M sparsity needs 0 < N < M, got N={n}, M={m}.")
    if scores.dim() != 2 or scores.shape[1] % m:
        raise ValueError(
            f"N:M sparsity with M={m} needs an (out, in) matrix whose input size is a multiple of {m}, "
            f"got shape {tuple(scores.shape)}. Exclude this layer with `ignore`, or use another M."
        )
    groups = _as_fp32(scores).reshape(-1, m)
    if m <= 16:
        # Rank of each entry in its group, by pairwise comparison (M^2 per group, no sort): several times
        # faster than a sort along a tiny last dimension on CPU. Ties: the lower position ranks first.
        a, b = groups.unsqueeze(-1), groups.unsqueeze(-2)  # a: entry i, b: entry j
        earlier = torch.ones(m, m, dtype=torch.bool, device=groups.device).tril(-1)  # [i, j]: j < i
        ranks = ((b < a) | ((b == a) & earlier)).sum(dim=-1)
        return ((ranks < m - n) & _prunable(groups)).reshape(scores.shape)
    # A stable sort of M values per group: position-ordered for ties.
    order = torch.sort(groups, dim=-1, stable=True).indices[:, : m - n]
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, order, True)
    return (mask & _prunable(groups)).reshape(scores.shape)


def sampled_threshold(
    scores: Sequence[torch.Tensor],
    sparsity: float,
    sample_fraction: float = DEFAULT_SAMPLE_FRACTION,
    seed: int = 0,
    *,
    shards: RowShards | None = None,
    indices: Sequence[int] | None = None,
) -> float:
    """Estimate the global score threshold at ``sparsity`` from a uniform sample of the pooled scores.

    One pass over the scores: from each tensor ``ceil(sample_fraction * numel)`` positions are drawn
    (with replacement) by a generator seeded with ``seed`` on the scores' device (no round trip to the
    CPU for accelerator tensors), so every process of a distributed run that holds the same scores on
    the same kind of device draws the same positions and gets the same threshold. The threshold is the
    sample's quantile at ``sparsity``.

    With ``shards`` (``indices`` name each tensor's matrix in it, default 0, 1, ...) every process holds some
    rows of each matrix: the positions are drawn over the whole matrices, each process fills in the sampled
    values it holds and ``shards.sum_`` completes the sample, so the threshold is the one a single process
    holding the whole matrices would find.

    Error: with ``m`` sampled values, the fraction of the pool below the threshold has a standard
    deviation of ``sqrt(p (1 - p) / m)`` around ``p = sparsity`` (binomial sampling of the quantile):
    about 0.05 percentage points at m = 1M and 0.16 at m = 100k for p = 0.5. Pruning with
    ``score <= threshold`` therefore reaches ``sparsity`` within a few of those standard deviations.
    """
    sparsity = validate_sparsity(sparsity)
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"`sample_fraction` must be in (0, 1], got {sample_fraction!r}.")
    device = scores[0].device if len(scores) else torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(int(seed))
    indices = list(range(len(scores))) if indices is None else list(indices)
    samples = []
    for tensor, index in zip(scores, indices, strict=True):
        flat = tensor.detach().reshape(-1)
        numel = flat.numel() if shards is None else shards.numel(index, tensor)
        count = max(1, math.ceil(sample_fraction * numel))
        idx = torch.randint(numel, (count,), generator=generator, device=device)
        if shards is None:
            samples.append(_as_fp32(flat[idx.to(flat.device)]).to(device))
            continue
        # The sampled positions this process holds; the others stay 0 here and are filled in by their owner.
        local = idx - shards.flat_offset(index, tensor)
        held = (local >= 0) & (local < flat.numel())
        values = torch.zeros(count, dtype=torch.float32, device=device)
        values[held] = _as_fp32(flat[local[held].to(flat.device)]).to(device)
        samples.append(values)
    pooled = torch.cat(samples)
    if shards is not None:
        pooled = shards.sum_(pooled)
    k = num_to_prune(pooled.numel(), sparsity)
    if k == 0:
        return -math.inf
    return pooled.kthvalue(k).values.item()


def _sampled_masks(scores, sparsity, sample_fraction, seed, shards=None, indices=None) -> list[torch.Tensor]:
    if sparsity == 0.0:
        # The threshold would be -inf and `<=` would still prune -inf scores: prune nothing, as the exact path.
        return [torch.zeros_like(t, dtype=torch.bool) for t in scores]
    threshold = sampled_threshold(scores, sparsity, sample_fraction, seed, shards=shards, indices=indices)
    return [(s <= threshold) & _prunable(s) for s in map(_as_fp32, scores)]


def _pooled_lowest_k(scores: Sequence[torch.Tensor], sparsity: float, warn: bool = True) -> list[torch.Tensor]:
    """Exact: ``round(sparsity * total)`` pruned over the pool, ties by position in pool order."""
    total = sum(t.numel() for t in scores)
    if len(scores) == 1:
        return [lowest_k_mask(scores[0], sparsity, warn=warn)]
    # One flat fp32 copy of the pool (4 bytes per score): the reason for EXACT_LIMIT.
    flat = torch.cat([_as_fp32(t).reshape(-1).cpu() for t in scores]).reshape(1, -1)
    mask = _lowest_k_mask_last_dim(flat, num_to_prune(total, sparsity)).reshape(-1)
    out, start = [], 0
    for t in scores:
        out.append(mask[start : start + t.numel()].reshape(t.shape).to(t.device))
        start += t.numel()
    return out


def _masks_with_counts(scores, counts, comparison_group: str) -> list[torch.Tensor]:
    if comparison_group not in ("per_row", "per_layer") or len(counts) != len(scores):
        raise ValueError(
            f"`counts` take one zero count per matrix, with comparison_group 'per_row' or 'per_layer' (got "
            f"{len(counts)} counts for {len(scores)} matrices, {comparison_group!r})."
        )
    masks = []
    for score, count in zip(scores, counts, strict=True):
        rows, columns = score.shape
        if not 0 <= count <= score.numel():
            raise ValueError(f"Cannot prune {count} entries of a {rows} x {columns} matrix.")
        if comparison_group == "per_layer":
            masks.append(lowest_counts_mask(score.reshape(1, -1), int(count)).reshape(score.shape))
            continue
        base, extra = divmod(int(count), rows)
        per_row = torch.full((rows,), base, dtype=torch.long, device=score.device)
        per_row[:extra] += 1
        masks.append(lowest_counts_mask(score, per_row if extra else base))
    return masks


def select_masks(
    scores: Sequence[torch.Tensor],
    sparsity: float | Sequence[float],
    comparison_group: str = "per_layer",
    pattern: str | None = None,
    *,
    exact_limit: int = EXACT_LIMIT,
    sample_fraction: float | None = None,
    seed: int = 0,
    shards: RowShards | None = None,
    warn_whole_groups: bool = True,
    counts: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Masks (True = pruned) for a list of (out, in) score matrices: the one place thresholds are chosen.

    * ``pattern="N:M"``: the lowest ``M - N`` of every ``M`` consecutive scores of each row (``sparsity`` ignored).
    * ``counts`` (one per matrix, instead of ``sparsity``): exactly that many zeros in the matrix, spread over its
      rows as evenly as possible (``per_row``: the first rows one more) or anywhere in it (``per_layer``).
    * ``per_row``: exactly ``round(sparsity * in_features)`` per output row.
    * ``per_layer``: exactly ``round(sparsity * numel)`` per matrix.
    * ``global``: one threshold over the whole pool.

    ``sparsity`` may be one value or one per matrix (``per_row``/``per_layer``). A pool (one matrix for
    ``per_layer``, all of them for ``global``) is decided exactly while it holds at most ``exact_limit`` scores and
    no ``sample_fraction`` is asked for; otherwise the threshold is estimated by :func:`sampled_threshold` from a
    seeded sample (``sample_fraction``, default 2%), the same on every process, with its documented error.

    With ``shards``, ``scores`` are this process's rows of each matrix (see :class:`RowShards`) and the masks of
    those rows are returned, the same as the whole matrices would give: rows and N:M groups are decided where
    they are; an exact pool is gathered whole on every process (at most ``exact_limit`` scores, as without
    shards), a sampled threshold is agreed on through ``shards.sum_``. Counts (``round(sparsity * numel)``, the
    sample sizes) are those of the whole matrices.

    ``warn_whole_groups``: warn when a mask prunes whole rows or layers; off for masks that only propose
    (candidates), which are not the weights pruned.
    """
    scores = list(scores)
    nm = parse_nm_pattern(pattern)
    if nm is not None:
        return [nm_mask(s, *nm) for s in scores]
    if counts is not None:
        return _masks_with_counts(scores, counts, comparison_group)
    if comparison_group not in COMPARISON_GROUPS:
        raise ValueError(f"`comparison_group` must be one of {list(COMPARISON_GROUPS)}, got {comparison_group!r}.")
    fraction = DEFAULT_SAMPLE_FRACTION if sample_fraction is None else sample_fraction
    numels = [t.numel() if shards is None else shards.numel(i, t) for i, t in enumerate(scores)]
    if comparison_group == "global":
        if isinstance(sparsity, (list, tuple)):
            raise ValueError("`comparison_group`='global' takes one sparsity for the whole pool, not a list.")
        sparsity = validate_sparsity(sparsity)
        if not scores:
            return []
        if sample_fraction is None and sum(numels) <= exact_limit:
            if shards is None:
                return _pooled_lowest_k(scores, sparsity, warn_whole_groups)
            whole = [shards.gather(t, shards.counts[i]) for i, t in enumerate(scores)]
            masks = _pooled_lowest_k(whole, sparsity)
            return [
                shards.own_rows(i, mask).to(t.device) for i, (mask, t) in enumerate(zip(masks, scores, strict=True))
            ]
        return _sampled_masks(scores, sparsity, fraction, seed, shards)
    sparsities = list(sparsity) if isinstance(sparsity, (list, tuple)) else [sparsity] * len(scores)
    if len(sparsities) != len(scores):
        raise ValueError(f"`sparsity` lists {len(sparsities)} values for {len(scores)} score matrices.")
    masks = []
    for index, (score, value) in enumerate(zip(scores, sparsities, strict=True)):
        value = validate_sparsity(value)
        if comparison_group == "per_row":
            masks.append(per_row_mask(score, value, warn=warn_whole_groups))
        elif sample_fraction is None and numels[index] <= exact_limit:
            if shards is None:
                masks.append(lowest_k_mask(score, value, warn=warn_whole_groups))
            else:
                whole = lowest_k_mask(shards.gather(score, shards.counts[index]), value, warn=warn_whole_groups)
                masks.append(shards.own_rows(index, whole).to(score.device))
        else:
            seed_of_layer = seed + 7919 * index
            masks.append(_sampled_masks([score], value, fraction, seed_of_layer, shards, [index])[0])
    return masks


@torch.no_grad()
def apply_mask_(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero ``weight`` where ``mask`` is True, in place, on the weight's device and dtype."""
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}.")
    weight.masked_fill_(mask.to(device=weight.device, dtype=torch.bool), 0)
    return weight


def nm_violations(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Per-group count of non-zeros beyond ``n`` for an (out, in) matrix; zeros mean the group complies."""
    if weight.dim() != 2 or weight.shape[1] % m:
        raise ValueError(
            f"N:M check with M={m} needs an (out, in) matrix with in % {m} == 0, got {tuple(weight.shape)}."
        )
    nonzeros = (weight.detach().reshape(-1, m) != 0).sum(dim=-1)
    return (nonzeros - n).clamp(min=0).reshape(weight.shape[0], -1)

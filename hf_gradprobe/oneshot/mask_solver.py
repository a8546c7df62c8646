# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Masks chosen by the solver: the l0-constrained least-squares problem of one layer (pure tensor maths).

Instead of fitting the kept weights on a mask fixed beforehand, the mask and the weights are found together::

    minimise  ||X W^T - X W_hat^T||^2 + (damping + ridge) * mean(diag H) * ||W - W_hat||^2
    subject to  W_hat has the quota of zeros (per row, per layer or per N:M group)

by operator splitting, as ALPS does (Meng et al. 2024): ADMM between the least-squares term and the projection
onto the quota (the lowest ``|W + U|`` are pruned, in columns rescaled to a unit Hessian diagonal, so that ``|W|``
is Wanda's score), with the penalty ``rho`` raised every few iterations by how much the support still changes,
until it settles; then a preconditioned conjugate-gradient finish on the fixed support. ``H`` is eigendecomposed
once, so a new ``rho`` costs nothing: each iteration is two ``(out, in) @ (in, in)`` products and one selection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.masking import lowest_counts_mask, nm_mask, parse_nm_pattern
from ..core.validation import check_float, check_int
from .layer_problem import check_hessian, check_weight, scaled_problem
from .reconstruction import conjugate_gradients


__all__ = ["RHO_STEPS", "quota_selector", "solve_masks_and_weights"]

# (support changes at least this fraction of the kept entries, rho multiplier), checked every `check_every`
# iterations: the penalty grows fast while the support still moves a lot and slowly once it settles.
RHO_STEPS = ((0.1, 1.3), (0.005, 1.2), (0.0, 1.1))
RHO_MAX = 1e6


@torch.no_grad()
def solve_masks_and_weights(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    select: Callable[[torch.Tensor], torch.Tensor],
    *,
    damping: float = 0.01,
    ridge: float = 0.0,
    rho: float = 0.1,
    max_iterations: int = 300,
    check_every: int = 3,
    finish_iterations: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask and the kept weights of one layer, chosen together.

    Args:
        weight (`torch.Tensor`): the dense ``(out, in)`` weight (any float dtype; computed in fp32).
        hessian (`torch.Tensor`): ``X^T X`` of the layer's inputs, ``(in, in)``.
        select (`Callable[[torch.Tensor], torch.Tensor]`): ``select(values) -> mask``: the exact quota of the
            lowest ``|values|`` (``(out, in)`` fp32, in the unit-diagonal scaling), True = pruned. It decides per row,
            per layer or per N:M group (see :func:`quota_selector`), and may force entries into the mask.
        damping (`float`, *optional*, defaults to 0.01): added to the Hessian's diagonal, relative to its mean.
        ridge (`float`, *optional*, defaults to 0): an extra pull toward the dense weights, of the same form.
        rho (`float`, *optional*, defaults to 0.1): the first penalty, relative to the unit diagonal.
        max_iterations (`int`, *optional*, defaults to 300): cap on the ADMM iterations.
        check_every (`int`, *optional*, defaults to 3): iterations between penalty updates (and the stop test: the
            support did not change).
        finish_iterations (`int`, *optional*, defaults to 10): conjugate-gradient steps on the final support.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the fp32 weight (exactly zero on the mask) and the mask.
    """
    weight = check_weight(weight)
    hessian = check_hessian(hessian, weight.shape[1])
    damping = check_float("damping", damping, minimum=0.0)
    ridge = check_float("ridge", ridge, minimum=0.0)
    rho = check_float("rho", rho, minimum=0.0, exclusive_minimum=True)
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    check_every = check_int("check_every", check_every, minimum=1)
    finish_iterations = check_int("finish_iterations", finish_iterations, minimum=0)
    empty = torch.zeros_like(weight, dtype=torch.bool)
    original, _, h, scale = scaled_problem(weight, empty, hessian, damping + ridge)
    eigenvalues, eigenvectors = torch.linalg.eigh(h)
    eigenvalues.clamp_(min=0.0)  # round-off on a positive semi-definite matrix
    target = original @ h  # W0 H_d: the least-squares term's pull, the same every iteration
    w = original.clone()
    u = torch.zeros_like(w)
    previous = select(w)
    kept = int((~previous).sum())
    for iteration in range(1, max_iterations + 1):
        z = w + u
        mask = select(z)
        z.masked_fill_(mask, 0.0)
        u.add_(w).sub_(z)
        # W = (W0 H + rho (Z - U)) (H + rho I)^-1, through the eigenvectors: any rho at the same cost.
        w = ((target + rho * (z - u)) @ eigenvectors).div_(eigenvalues + rho) @ eigenvectors.T
        if iteration % check_every:
            continue
        changed = int((mask != previous).sum())
        previous = mask
        if changed == 0:
            break
        rho *= next(factor for share, factor in RHO_STEPS if changed >= share * kept)
        if rho > RHO_MAX:
            break
    z = w + u
    mask = select(z)
    z.masked_fill_(mask, 0.0)
    z = conjugate_gradients(original, ~mask, h, z, finish_iterations)
    return z.div_(scale), mask


# Lower than any magnitude yet finite (non-finite scores never prune): forced entries fill their quota first.
_FORCED = -torch.finfo(torch.float32).max


def quota_selector(
    reference: torch.Tensor, pattern: str, comparison_group: str, forced: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``select(values) -> mask`` pruning the lowest ``|values|`` with the quotas of the ``reference`` mask.

    The quotas are those the decision gave the layer: ``M - N`` in every N:M group, the reference's count in every
    row (``per_row``) or in the whole matrix (``per_layer``); so a non-uniform allocation carries over. ``forced``
    entries (the model's own zeros) are always pruned and count toward the quota.
    """
    nm = parse_nm_pattern(pattern)
    forced = torch.zeros_like(reference) if forced is None else forced.to(reference.device)

    def scores(values: torch.Tensor) -> torch.Tensor:
        return values.abs().masked_fill_(forced, _FORCED)

    if nm is not None:
        return lambda values: nm_mask(scores(values), *nm) | forced
    if comparison_group == "per_row":
        counts = reference.sum(dim=1)
        if bool((counts == counts[0]).all()):  # one quota for every row: a k-th value per row, no sort
            count = int(counts[0])
            return lambda values: lowest_counts_mask(scores(values), count) | forced
        return lambda values: lowest_counts_mask(scores(values), counts) | forced
    if comparison_group == "per_layer":
        count = int(reference.sum())
        return lambda values: lowest_counts_mask(scores(values).reshape(1, -1), count).reshape(values.shape) | forced
    raise ValueError(
        f"The solver chooses masks layer by layer: `comparison_group` must be 'per_row' or 'per_layer' (or an N:M "
        f"pattern), got {comparison_group!r}."
    )

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Reconstruction of the kept weights of one pruned linear layer (pure tensor maths).

Once a mask is chosen, the weights that survive can be re-fitted so that the layer's outputs on calibration data
move as little as possible. Everything here works on a single matrix and knows nothing about models.

Conventions:

* ``weight`` ``W`` is ``(out_features, in_features)``, always: the caller transposes ``Conv1D`` weights.
* ``mask`` is a ``torch.bool`` tensor with ``W``'s shape; ``True`` means *pruned* (exactly zero in the result).
* ``hessian`` ``H`` is ``X^T X`` of the layer's inputs ``X`` (tokens x in_features), ``(in, in)``, accumulated in
  fp32 (see :class:`HessianAccumulator`). Its overall scale does not matter: damping is relative to its diagonal.
* The problem solved is, independently for every row ``w`` of ``W`` (rows share ``H``)::

      minimise  (w - w_hat)^T H_d (w - w_hat)   subject to  w_hat = 0 where the mask is True

  with ``H_d = damped(H, damping)``, i.e. ``||X W^T - X W_hat^T||^2`` plus a small ridge pulling ``W_hat`` toward
  ``W`` (``damping * mean(diag H) * ||W - W_hat||^2``) that keeps the problem well-posed when ``H`` is singular.
  :func:`reconstruct_exact` solves it exactly, :func:`reconstruct_admm` iteratively, and
  :func:`reconstruct_sparsegpt` with one sequential sweep over the columns (not exactly optimal, see its docstring).

Every function accepts any floating dtype and device, computes in fp32 on the weight's device (the reference
:func:`reconstruct_exact` uses fp64), never modifies its inputs, and returns fp32: the caller writes the result back
in the model's dtype. On GPUs with TF32 matmuls enabled (``torch.backends.cuda.matmul.allow_tf32``) the fp32
products lose precision; leave it off while reconstructing.
"""

from __future__ import annotations

import math

import torch

from ..core.validation import check_float, check_int
from .layer_problem import (
    DAMPING_MAX,
    check_hessian,
    check_problem,
    check_weight,
    cholesky,
    cholesky_inverse,
    damp_,
    describe_tensor,
    quadratic,
    scaled_problem,
)


__all__ = [
    "DAMPING_MAX",
    "HessianAccumulator",
    "conjugate_gradients",
    "damped",
    "output_error",
    "reconstruct_admm",
    "reconstruct_exact",
    "reconstruct_pcg",
    "reconstruct_sparsegpt",
]


class HessianAccumulator:
    """Accumulates ``H = X^T X`` over batches of a linear layer's inputs, in fp32.

    Memory: one ``(in_features, in_features)`` fp32 matrix, ``in_features**2 * 4`` bytes (64 MiB for 4096 inputs,
    784 MiB for 14336), plus a transient fp32 copy of each batch passed to :meth:`add`.

    Attributes:
        H: the running sum of ``x^T x`` (fp32, on ``device``).
        tokens: how many input rows (tokens) have been added.
    """

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        in_features = check_int("in_features", in_features, minimum=1)
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    @property
    def in_features(self) -> int:
        return self.H.shape[0]

    @torch.no_grad()
    def add(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add the activations ``x`` of shape ``(..., in_features)``, any floating dtype and device; ``weights``
        (one per row of ``x`` flattened to ``(-1, in_features)``) weight each token's ``x^T x``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
            raise ValueError(
                f"`x` must be a floating-point tensor of shape (..., in_features), got {describe_tensor(x)}."
            )
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"`x` must have {self.in_features} features in its last dimension, got shape {tuple(x.shape)}."
            )
        rows = x.detach().reshape(-1, self.in_features).to(device=self.H.device, dtype=torch.float32)
        if weights is None:
            self.H.addmm_(rows.T, rows)
        else:
            self.H.addmm_((rows * weights.reshape(-1, 1).to(rows)).T, rows)
        self.tokens += rows.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """The *mean* ``X^T X / tokens`` (a new tensor).

        The mean rather than the sum keeps magnitudes independent of how many samples were seen. The scale does not
        change any reconstruction (damping is relative to the diagonal); it only changes :func:`output_error`, which
        then reads as a squared output error per token.
        """
        if self.tokens == 0:
            raise RuntimeError("No activations were added: call `add` at least once before reading `hessian`.")
        return self.H / self.tokens

    def reset(self) -> None:
        """Forget everything added so far (keeps the buffer)."""
        self.H.zero_()
        self.tokens = 0


def damped(hessian: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
    """``H + damping * mean(diag H) * I`` as a new fp32 tensor; dead inputs (``diag == 0``) get diagonal 1.

    A dead input never reaches the output, so its weights do not affect the error; giving it an uncoupled unit
    diagonal (as SparseGPT does) keeps the matrix invertible and leaves its kept weights unchanged in every solver.
    """
    hessian = check_hessian(hessian, None)
    damping = check_float("damping", damping, minimum=0.0)
    return damp_(hessian.detach().to(dtype=torch.float32, copy=True), damping)


def output_error(
    weight: torch.Tensor, weight_hat: torch.Tensor, hessian: torch.Tensor, *, relative: bool = False
) -> float:
    """``tr((W - W_hat) H (W - W_hat)^T)``, i.e. ``||X W^T - X W_hat^T||^2`` (per token for a mean ``H``).

    With ``relative=True`` it is divided by ``tr(W H W^T)`` (the output energy), so 1.0 means "as bad as zeroing
    the whole layer". Computed with fp32 products summed in fp64; ``H`` is used as given (no damping).
    """
    weight = check_weight(weight)
    if not isinstance(weight_hat, torch.Tensor) or weight_hat.shape != weight.shape:
        raise ValueError(
            f"`weight_hat` must have the weight's shape {tuple(weight.shape)}, got {describe_tensor(weight_hat)}."
        )
    hessian = check_hessian(hessian, weight.shape[1]).detach().to(device=weight.device, dtype=torch.float32)
    original = weight.detach().float()
    delta = original - weight_hat.detach().to(device=weight.device, dtype=torch.float32)
    error = quadratic(delta, hessian)
    if not relative:
        return error
    energy = quadratic(original, hessian)
    if energy == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / energy


@torch.no_grad()
def reconstruct_exact(
    weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor, *, damping: float = 0.01
) -> torch.Tensor:
    """The exact minimiser, by solving ``H_d[S, S] w_S = (H_d w)[S]`` on the kept support ``S`` of every row.

    One dense solve per row, in fp64 (fp32 on MPS): meant as a reference for tests and for tiny layers only.
    With ``damping=0`` the restricted systems must be non-singular (enough tokens, no duplicated inputs).
    """
    weight, mask, hessian = check_problem(weight, mask, hessian)
    damping = check_float("damping", damping, minimum=0.0)
    # fp64 so that the reference is accurate well below the fp32 solvers' own error.
    dtype = torch.float32 if weight.device.type == "mps" else torch.float64
    h = damp_(hessian.detach().to(device=weight.device, dtype=dtype, copy=True), damping)
    original = weight.detach().to(dtype)
    target = original @ h  # row r is (H_d w_r)^T, H_d being symmetric
    keep = ~mask.to(weight.device)
    result = torch.zeros_like(original)
    for row in range(original.shape[0]):
        support = keep[row].nonzero().squeeze(1)
        if support.numel() == 0:
            continue  # fully pruned row: all zeros
        system = h.index_select(0, support).index_select(1, support)
        result[row, support] = torch.linalg.solve(system, target[row, support])
    return result.float()


@torch.no_grad()
def reconstruct_admm(
    weight: torch.Tensor,
    mask: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damping: float = 0.01,
    rho: float = 1.0,
    iterations: int = 20,
    ridge: float = 0.0,
) -> torch.Tensor:
    """ADMM weight update for a fixed mask (Boža 2024, "Fast and Optimal Weight Update for Pruned LLMs").

    Columns are first rescaled by ``sqrt(diag H_d)`` so that the scaled Hessian has a unit diagonal; ``rho`` is
    relative to that diagonal, and ``rho ~ 1`` (the paper's choice) converges well for real activations. With
    ``A = H_d + rho I`` factorised once, every iteration costs one ``(out, in) @ (in, in)`` product::

        Z = (W + U) with the pruned entries zeroed     # projection onto the sparsity pattern
        U = U + W - Z                                   # scaled dual variable
        W = (W0 H_d + rho (Z - U)) A^{-1}               # all rows at once (each row is its own problem)

    The returned ``Z`` is exactly zero on the mask. It converges to :func:`reconstruct_exact`'s solution; 20
    iterations get most of the way, more get closer. ``iterations=0`` returns plain zeroing.

    Args:
        rho: ADMM penalty, > 0, relative to the unit diagonal of the rescaled Hessian.
        iterations: number of ADMM iterations, >= 0.
        ridge: extra pull toward the original weights: the objective becomes
            ``||X(W - W_hat)^T||^2 + ridge * mean(diag H) * ||W - W_hat||^2`` (on top of ``damping``, which has the
            same form, so the iterates converge to :func:`reconstruct_exact` with ``damping + ridge``). Large values
            give ``W * ~mask``.
    """
    weight, mask, hessian = check_problem(weight, mask, hessian)
    damping = check_float("damping", damping, minimum=0.0)
    rho = check_float("rho", rho, minimum=0.0, exclusive_minimum=True)
    iterations = check_int("iterations", iterations, minimum=0)
    ridge = check_float("ridge", ridge, minimum=0.0)
    original, mask, h, scale = scaled_problem(weight, mask, hessian, damping + ridge)
    keep = ~mask
    rhs = original @ h  # W0 H_d (H_d is symmetric)
    h.diagonal().add_(rho)
    inverse = cholesky_inverse(h, damping + ridge)  # (H_d + rho I)^-1, well conditioned: eigenvalues >= rho
    del h
    fixed = rhs @ inverse  # the part of every W-update that does not change across iterations
    del rhs
    w = original
    u = torch.zeros_like(w)
    for _ in range(iterations):
        z = (w + u).mul_(keep)
        u.add_(w).sub_(z)
        w = torch.addmm(fixed, z.sub_(u), inverse, alpha=rho)
    z = (w + u).mul_(keep)
    return z.div_(scale)


@torch.no_grad()
def reconstruct_sparsegpt(
    weight: torch.Tensor,
    mask: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damping: float = 0.01,
    block_size: int = 128,
) -> torch.Tensor:
    """SparseGPT's optimal-brain-surgeon column sweep, with the mask given instead of re-selected.

    With ``U`` the upper Cholesky factor of ``H_d^{-1}``, columns are visited left to right; in column ``c`` the
    pruned weights are set to zero and their error ``e = w_c / U[c, c]`` is compensated on the columns not yet
    visited, ``w[:, c+1:] -= e * U[c, c+1:]``. Updates are applied lazily per block of ``block_size`` columns (the
    result does not depend on ``block_size``).

    Each step is optimal given the columns before it, but kept weights are frozen once visited, so the result is
    in general worse than :func:`reconstruct_exact` (never better on the damped objective, and on strongly
    correlated inputs its error can be twice the optimum's); it is exact when, in every row, all pruned weights
    come before all kept ones. Rows with no pruning come back unchanged. Cost: one ``in^3`` factorisation plus ``out * in^2`` for the sweep.
    """
    weight, mask, hessian = check_problem(weight, mask, hessian)
    damping = check_float("damping", damping, minimum=0.0)
    block_size = check_int("block_size", block_size, minimum=1)
    w, mask, h, scale = scaled_problem(weight, mask, hessian, damping)
    # Upper Cholesky factor of H_d^-1 (of the unit-diagonal rescaling, which the sweep is invariant to).
    upper = cholesky(cholesky_inverse(h, damping), upper=True, damping=damping)
    del h
    columns = w.shape[1]
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end]  # a view: updated in place
        block_mask = mask[:, start:end]
        block_upper = upper[start:end, start:end]
        errors = torch.zeros_like(block)
        for i in range(end - start):
            pruned = block_mask[:, i]
            error = (block[:, i] * pruned) / block_upper[i, i]
            # Only columns to the right move; column i itself becomes exactly q (zero on the mask).
            block[:, i + 1 :].addr_(error, block_upper[i, i + 1 :], alpha=-1.0)
            block[:, i].masked_fill_(pruned, 0.0)
            errors[:, i] = error
        if end < columns:
            w[:, end:].addmm_(errors, upper[start:end, end:], alpha=-1.0)
    return w.masked_fill_(mask, 0.0).div_(scale)


@torch.no_grad()
def reconstruct_pcg(
    weight: torch.Tensor,
    mask: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damping: float = 0.01,
    iterations: int = 10,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fixed-mask least-squares fit by preconditioned conjugate gradients, every row at once.

    Each row solves ``H_d[S, S] w_S = (H_d w)[S]`` on its kept support ``S``; with columns rescaled to a unit
    diagonal (Jacobi preconditioning), ``iterations`` conjugate-gradient steps start from ``start`` (default: the
    weight with the mask zeroed). It converges to :func:`reconstruct_exact`: the more iterations, the closer; a
    warm start near the solution (e.g. an ADMM iterate) needs few. Cost per step: one ``(out, in) @ (in, in)``.

    Args:
        weight (`torch.Tensor`): the dense ``(out, in)`` weight.
        mask (`torch.Tensor`): bool, True where pruned.
        hessian (`torch.Tensor`): ``X^T X`` of the layer's inputs, ``(in, in)``.
        damping (`float`, *optional*, defaults to 0.01): added to the diagonal, relative to its mean.
        iterations (`int`, *optional*, defaults to 10): conjugate-gradient steps, >= 0.
        start (`torch.Tensor`, *optional*): the first iterate, ``(out, in)`` in the weight's units.

    Returns:
        `torch.Tensor`: the fp32 weight, exactly zero on the mask.
    """
    weight, mask, hessian = check_problem(weight, mask, hessian)
    damping = check_float("damping", damping, minimum=0.0)
    iterations = check_int("iterations", iterations, minimum=0)
    if start is not None and (not isinstance(start, torch.Tensor) or start.shape != weight.shape):
        raise ValueError(f"`start` must have the weight's shape {tuple(weight.shape)}, got {describe_tensor(start)}.")
    original, mask, h, scale = scaled_problem(weight, mask, hessian, damping)
    return conjugate_gradients(original, ~mask, h, original if start is None else start * scale, iterations).div_(
        scale
    )


def conjugate_gradients(
    target: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, start: torch.Tensor, iterations: int
) -> torch.Tensor:
    """Rows ``x`` minimising ``(x - t) h (x - t)^T`` with ``x = 0`` off ``keep``, in the unit-diagonal scaling.

    ``target`` and ``start`` are scaled weights, ``h`` the scaled damped Hessian (unit diagonal: the Jacobi
    preconditioner is the identity). Every row runs its own step sizes; a converged row stops moving.
    """
    keep = keep.to(target.dtype)
    x = start * keep
    residual = (target @ h).mul_(keep).sub_((x @ h).mul_(keep))
    direction = residual.clone()
    norm = (residual * residual).sum(dim=1, keepdim=True)
    tiny = torch.finfo(target.dtype).tiny
    for _ in range(iterations):
        product = (direction @ h).mul_(keep)
        curvature = (direction * product).sum(dim=1, keepdim=True)
        step = torch.where(curvature > tiny, norm / curvature.clamp_min(tiny), torch.zeros_like(norm))
        x.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1.0)
        new_norm = (residual * residual).sum(dim=1, keepdim=True)
        direction = (
            residual + torch.where(norm > tiny, new_norm / norm.clamp_min(tiny), torch.zeros_like(norm)) * direction
        )
        norm = new_norm
    return x.mul_(keep)

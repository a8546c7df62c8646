# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The least-squares problem of one pruned linear layer, shared by the reconstruction and mask solvers.

Checks of its tensors (``weight`` ``(out, in)``, a bool ``mask`` with its shape, ``hessian`` ``X^T X`` ``(in, in)``),
the damped Hessian, its rescaling to a unit diagonal, fp32 factorisations with actionable errors, and the
quadratic form ``tr(D H D^T)`` the output error is made of.
"""

from __future__ import annotations

import torch


__all__ = [
    "DAMPING_MAX",
    "check_hessian",
    "check_problem",
    "check_weight",
    "cholesky",
    "cholesky_inverse",
    "damp_",
    "describe_tensor",
    "quadratic",
    "scaled_problem",
]

# Damping (and ridge) beyond this leave the Hessian below fp32's resolution next to the added diagonal (~1e-7
# relative): more of it changes nothing but can overflow. `GradProbeConfig` refuses larger values up front.
DAMPING_MAX = 1e6


def describe_tensor(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def check_weight(weight: torch.Tensor) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(
            f"`weight` must be a 2-D floating-point tensor (out_features, in_features), got {describe_tensor(weight)}."
        )
    return weight


def check_hessian(hessian: torch.Tensor, in_features: int | None) -> torch.Tensor:
    if not isinstance(hessian, torch.Tensor) or hessian.dim() != 2 or not hessian.is_floating_point():
        raise ValueError(f"`hessian` must be a square 2-D floating-point tensor, got {describe_tensor(hessian)}.")
    size = hessian.shape[0] if in_features is None else in_features
    if tuple(hessian.shape) != (size, size):
        raise ValueError(
            f"`hessian` must have shape ({size}, {size}) (in_features x in_features), got {tuple(hessian.shape)}."
        )
    return hessian


def check_problem(
    weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight = check_weight(weight)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weight.shape:
        raise ValueError(
            f"`mask` must be a torch.bool tensor with the weight's shape {tuple(weight.shape)} (True = pruned), "
            f"got {describe_tensor(mask)}."
        )
    hessian = check_hessian(hessian, weight.shape[1])
    diagonal = hessian.detach().diagonal()
    if not bool(torch.isfinite(hessian).all()) or bool((diagonal < 0).any()):
        raise ValueError("`hessian` must be finite with a non-negative diagonal (X^T X), got NaN, inf or diag < 0.")
    return weight, mask, hessian


def damp_(h: torch.Tensor, damping: float) -> torch.Tensor:
    """In place: ``h + damping * mean(diag h) * I``, dead inputs decoupled with diagonal 1."""
    diagonal = h.diagonal()
    dead = diagonal == 0
    mean = diagonal.mean()
    diagonal.add_(mean * damping)  # a tensor product: no device sync
    if not bool(torch.isfinite(diagonal).all()):
        # Only a finite Hessian reaches here through the solvers; what overflowed is the damping term.
        cause = (
            f"`damping`={damping:g} times its mean diagonal ({float(mean):g}) overflows {h.dtype}"
            if bool(torch.isfinite(mean))
            else "its diagonal holds NaN or inf"
        )
        raise ValueError(
            f"`hessian` (damped) is not finite: {cause}. Use a damping between 0 and {DAMPING_MAX:g} (e.g. 0.01) "
            "and a finite Hessian."
        )
    if bool(dead.any()):
        h[dead, :] = 0.0
        h[:, dead] = 0.0
        diagonal.masked_fill_(dead, 1.0)
    return h


def scaled_problem(
    weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor, damping: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 copies on the weight's device: ``W * s``, the mask, ``H_d / (s s^T)`` and ``s = sqrt(diag H_d)``.

    Rescaling inputs to a unit diagonal (Jacobi) leaves the problem unchanged (``X W^T = (X / s)(W * s)^T``), makes
    ``rho`` meaningful across layers and improves the conditioning of the fp32 factorisations.
    """
    device = weight.device
    h = damp_(hessian.detach().to(device=device, dtype=torch.float32, copy=True), damping)
    scale = h.diagonal().sqrt()
    h.div_(scale.unsqueeze(0)).div_(scale.unsqueeze(1))
    w = weight.detach().to(dtype=torch.float32, copy=True).mul_(scale)
    return w, mask.to(device), h, scale


def cholesky(h: torch.Tensor, *, upper: bool = False, damping: float | None = None) -> torch.Tensor:
    """Cholesky factor of the symmetric positive definite ``h``, with an actionable error when fp32 fails.

    ``damping`` is the one ``h`` was damped with: more damping is suggested only where it can help, i.e. ``h`` is
    finite and the damping is below :data:`DAMPING_MAX` (beyond it the Hessian no longer registers in fp32)."""
    factor, info = torch.linalg.cholesky_ex(h, upper=upper)
    if int(info) == 0:
        return factor
    # The damped, rescaled Hessian is finite by construction; only an inverse of a nearly singular one overflows.
    detail = " (its inverse overflowed: the matrix is nearly singular)" if not bool(torch.isfinite(h).all()) else ""
    if damping is not None and damping < DAMPING_MAX:
        raise ValueError(
            f"`hessian` (damped) is not positive definite in fp32{detail}: increase `damping` (e.g. from {damping:g} "
            f"to {min(DAMPING_MAX, max(0.1, 10 * damping)):g}) or collect more calibration tokens."
        )
    raise ValueError(
        f"`hessian` (damped) is not positive definite in fp32{detail}"
        + (f" even with `damping`={damping:g}" if damping is not None else "")
        + ": it is too ill-conditioned for fp32. Collect more calibration tokens, or check the layer's inputs."
    )


def cholesky_inverse(h: torch.Tensor, damping: float | None = None) -> torch.Tensor:
    """Inverse of the symmetric positive definite ``h``, via Cholesky."""
    return torch.cholesky_inverse(cholesky(h, damping=damping))


def quadratic(delta: torch.Tensor, hessian: torch.Tensor) -> float:
    """``tr(delta H delta^T)`` with an fp32 product and an fp64 sum."""
    return float((delta @ hessian).mul_(delta).sum(dtype=torch.float64))

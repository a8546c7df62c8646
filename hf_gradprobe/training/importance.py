# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pure importance ("keep-worthiness") scores for pruning while training.

Every function returns a new fp32 tensor with the weight's shape; the lowest scores are pruned. Inputs
may be any float dtype: they are read in fp32, so fp16/bf16 states never underflow into ties (in fp16,
typical ``exp_avg_sq`` values round to 0 and the scores would collapse to magnitude). ``m`` is AdamW's
``exp_avg``, ``v`` its ``exp_avg_sq``, ``t`` its ``step``. :func:`method_scores` picks the score of a
``pruning_method``.

| method | score |
|---|---|
| ``magnitude``, ``bitter1``, ``bitter2`` | ``|w|`` |
| ``bitter0`` | ``w² |m| / (√v + ε)`` |
| ``bitter3``, ``bitter4`` | ``|w| √(|m| + ε)`` |
| ``bitter5`` | ``-z + 0.1 |w|`` with ``z = sign(w) m / (√v + ε)`` |
| ``bitter6`` | ``|w| √(|m| + ε) √(m² / (v + ε))`` |
| ``bitter7`` | ``|w| (|v| + ε)^¼`` |
| ``bitter8`` | ``|w| √(|m / (1 - β₁ᵗ)| + ε)`` |
| ``bitter9`` | ``|w| √(|m| + ε) - 0.1 z`` |
| ``movement`` | ``-Σₜ w·g`` accumulated over optimizer steps |

``z`` ("movement to zero") is positive when Adam's update ``-lr m̂/(√v̂ + ε)`` drives ``w`` towards 0;
bitter5/9 prune such weights first.
"""

from __future__ import annotations

import torch


EPS = 1e-8
ADAM_METHODS = tuple(f"bitter{i}" for i in range(10))
METHODS = (*ADAM_METHODS, "magnitude", "movement", "fixed")

# The AdamW state each method reads (besides the weight).
REQUIRED_STATE: dict[str, tuple[str, ...]] = {
    "bitter0": ("exp_avg", "exp_avg_sq"),
    "bitter1": (),
    "bitter2": (),
    "bitter3": ("exp_avg",),
    "bitter4": ("exp_avg",),
    "bitter5": ("exp_avg", "exp_avg_sq"),
    "bitter6": ("exp_avg", "exp_avg_sq"),
    "bitter7": ("exp_avg_sq",),
    "bitter8": ("exp_avg", "step"),
    "bitter9": ("exp_avg", "exp_avg_sq"),
}


def needs_optimizer_state(method: str) -> bool:
    """Whether ``method`` reads AdamW's state (bitter1/2 are magnitude under another name and read none)."""
    return bool(REQUIRED_STATE.get(method))


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


@torch.no_grad()
def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return _f32(weight).abs()


@torch.no_grad()
def bitter0_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    w = _f32(weight)
    return (w * w).mul_(_f32(exp_avg).abs()).div_(_f32(exp_avg_sq).sqrt().add_(eps))


@torch.no_grad()
def bitter3_scores(weight: torch.Tensor, exp_avg: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return _f32(exp_avg).abs().add_(eps).sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def movement_to_zero(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """``sign(w) m / (√v + ε)``: positive when Adam moves ``w`` towards zero, in [-1, 1]-ish units."""
    return _f32(exp_avg).mul(_f32(weight).sign()).div_(_f32(exp_avg_sq).sqrt().add_(eps))


@torch.no_grad()
def bitter5_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    return movement_to_zero(weight, exp_avg, exp_avg_sq, eps).neg_().add_(_f32(weight).abs(), alpha=0.1)


@torch.no_grad()
def bitter6_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    m = _f32(exp_avg)
    coherence = (m * m).div_(_f32(exp_avg_sq).add(eps)).sqrt_()
    return bitter3_scores(weight, exp_avg, eps).mul_(coherence)


@torch.no_grad()
def bitter7_scores(weight: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    # Two square roots: the fourth root without a libm pow per element (~1.5x faster on CPU).
    return _f32(exp_avg_sq).abs().add_(eps).sqrt_().sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def bitter8_scores(
    weight: torch.Tensor, exp_avg: torch.Tensor, step: float | torch.Tensor, beta1: float = 0.9, eps: float = EPS
) -> torch.Tensor:
    """bitter3 on the bias-corrected first moment ``m / (1 - β₁ᵗ)``.

    The correction is one scalar per tensor: it changes a global ranking only where tensors have
    different step counts, and it changes how ``ε`` compares with ``|m|`` early in training.
    """
    t = float(step)
    if t < 1:
        raise ValueError(f"bitter8 needs the optimizer `step` >= 1 to bias-correct `exp_avg`, got {t}.")
    m_hat = _f32(exp_avg) / (1.0 - beta1**t)
    return m_hat.abs_().add_(eps).sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def bitter9_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    z = movement_to_zero(weight, exp_avg, exp_avg_sq, eps)
    return bitter3_scores(weight, exp_avg, eps).sub_(z, alpha=0.1)


@torch.no_grad()
def accumulate_movement_(scores: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``scores -= w * g`` in place (fp32): movement pruning's first-order score ``-Σₜ w·∂L/∂w``."""
    return scores.addcmul_(_f32(weight), _f32(grad), value=-1.0)


def adam_scores(method: str, weight: torch.Tensor, state: dict, beta1: float = 0.9, eps: float = EPS) -> torch.Tensor:
    """Scores of ``method`` (bitter0..bitter9) from one parameter's AdamW ``state``."""
    if method not in REQUIRED_STATE:
        raise ValueError(f"`pruning_method` {method!r} is not an AdamW-state method; expected one of {ADAM_METHODS}.")
    missing = [key for key in REQUIRED_STATE[method] if key not in state]
    if missing:
        raise KeyError(
            f"`pruning_method`={method!r} reads {list(REQUIRED_STATE[method])} from the optimizer state, but "
            f"{missing} is missing (state keys: {sorted(state)}). Use an Adam-family optimizer "
            "(`optim='adamw_torch'`), or `pruning_method='magnitude'`/'movement'."
        )
    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
    if method in ("bitter1", "bitter2"):
        return magnitude_scores(weight)
    if method == "bitter0":
        return bitter0_scores(weight, m, v, eps)
    if method in ("bitter3", "bitter4"):
        return bitter3_scores(weight, m, eps)
    if method == "bitter5":
        return bitter5_scores(weight, m, v, eps)
    if method == "bitter6":
        return bitter6_scores(weight, m, v, eps)
    if method == "bitter7":
        return bitter7_scores(weight, v, eps)
    if method == "bitter8":
        return bitter8_scores(weight, m, state["step"], beta1, eps)
    return bitter9_scores(weight, m, v, eps)


@torch.no_grad()
def method_scores(
    method: str,
    weight: torch.Tensor,
    optimizer_state: dict,
    *,
    movement: torch.Tensor | None = None,
    beta1: float = 0.9,
    eps: float = EPS,
) -> torch.Tensor:
    """Scores of any scoring ``pruning_method`` for one weight, as a new fp32 tensor.

    ``optimizer_state`` is the weight's AdamW state (read by bitter0..bitter9), ``movement`` its accumulated
    movement score (a copy is returned for ``movement``), ``beta1`` the Adam β₁ bitter8 bias-corrects with.
    """
    if method == "movement":
        if movement is None:
            raise ValueError("`pruning_method`='movement' scores from the accumulated movement; pass `movement`.")
        return movement.clone()
    if method == "magnitude":
        return magnitude_scores(weight)
    return adam_scores(method, weight, optimizer_state, beta1=beta1, eps=eps)

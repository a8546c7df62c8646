# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pure importance ("keep-worthiness") scores for pruning while training.

Every function returns a new fp32 tensor with the weight's shape; the lowest scores are pruned. Inputs
may be any float dtype: they are read in fp32, so fp16/bf16 states never underflow into ties (in fp16,
typical ``exp_avg_sq`` values round to 0 and the scores would collapse to magnitude). ``m`` is AdamW's
``exp_avg``, ``v`` its ``exp_avg_sq``, ``t`` its ``step``. Each `pruning_method` is a registered object of
`hf_gradprobe.training.methods` that calls one of these (``|w|`` is `core.masking.magnitude_scores`).

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


__all__ = [
    "DEFAULT_BETA1",
    "EPS",
    "accumulate_movement_",
    "bitter0_scores",
    "bitter3_scores",
    "bitter5_scores",
    "bitter6_scores",
    "bitter7_scores",
    "bitter8_scores",
    "bitter9_scores",
    "movement_to_zero",
]

EPS = 1e-8
DEFAULT_BETA1 = 0.9


# Every score function takes the weight and the optimizer state it reads, as tensors of the weight's shape (the
# step count as a number or 0-d tensor), and ``eps`` (defaults to `EPS`) where a moment is divided or rooted.


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


@torch.no_grad()
def bitter0_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """The bitter0 score: ``w² |m| / (√v + ε)``."""
    w = _f32(weight)
    return (w * w).mul_(_f32(exp_avg).abs()).div_(_f32(exp_avg_sq).sqrt().add_(eps))


@torch.no_grad()
def bitter3_scores(weight: torch.Tensor, exp_avg: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The bitter3 and bitter4 score: ``|w| √(|m| + ε)``."""
    return _f32(exp_avg).abs().add_(eps).sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def movement_to_zero(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """``sign(w) m / (√v + ε)``: positive when Adam moves ``w`` towards zero, in [-1, 1]-ish units."""
    return _f32(exp_avg).mul(_f32(weight).sign()).div_(_f32(exp_avg_sq).sqrt().add_(eps))


@torch.no_grad()
def bitter5_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """The bitter5 score: ``-z + 0.1 |w|``; weights Adam drives towards zero are pruned first."""
    return movement_to_zero(weight, exp_avg, exp_avg_sq, eps).neg_().add_(_f32(weight).abs(), alpha=0.1)


@torch.no_grad()
def bitter6_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """The bitter6 score: bitter3 times the moments' coherence ``√(m² / (v + ε))``."""
    m = _f32(exp_avg)
    coherence = (m * m).div_(_f32(exp_avg_sq).add(eps)).sqrt_()
    return bitter3_scores(weight, exp_avg, eps).mul_(coherence)


@torch.no_grad()
def bitter7_scores(weight: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The bitter7 score: ``|w| (|v| + ε)^¼``."""
    # Two square roots: the fourth root without a libm pow per element (~1.5x faster on CPU).
    return _f32(exp_avg_sq).abs().add_(eps).sqrt_().sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def bitter8_scores(
    weight: torch.Tensor,
    exp_avg: torch.Tensor,
    step: float | torch.Tensor,
    beta1: float = DEFAULT_BETA1,
    eps: float = EPS,
) -> torch.Tensor:
    """The bitter8 score: bitter3 on the bias-corrected first moment ``m / (1 - β₁ᵗ)``.

    The correction is one scalar per tensor: it changes a global ranking only where tensors have
    different step counts, and it changes how ``ε`` compares with ``|m|`` early in training.

    Args:
        weight (`torch.Tensor`):
            The weight.
        exp_avg (`torch.Tensor`):
            AdamW's first moment of the weight.
        step (`float` or `torch.Tensor`):
            The optimizer's step count for the weight, at least 1.
        beta1 (`float`, *optional*, defaults to `0.9`):
            Adam's β₁ of the weight's parameter group.
        eps (`float`, *optional*, defaults to `1e-8`):
            Added to ``|m̂|`` before the square root.
    """
    t = float(step)
    if t < 1:
        raise ValueError(f"The bitter8 score needs the optimizer `step` >= 1 to bias-correct `exp_avg`, got {t}.")
    m_hat = _f32(exp_avg) / (1.0 - beta1**t)
    return m_hat.abs_().add_(eps).sqrt_().mul_(_f32(weight).abs())


@torch.no_grad()
def bitter9_scores(weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, eps: float = EPS):
    """The bitter9 score: ``|w| √(|m| + ε) - 0.1 z``."""
    z = movement_to_zero(weight, exp_avg, exp_avg_sq, eps)
    return bitter3_scores(weight, exp_avg, eps).sub_(z, alpha=0.1)


@torch.no_grad()
def accumulate_movement_(scores: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``scores -= w * g`` in place (fp32): movement pruning's first-order score ``-Σₜ w·∂L/∂w``."""
    return scores.addcmul_(_f32(weight), _f32(grad), value=-1.0)

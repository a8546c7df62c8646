# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pruning methods while training, as registered objects: one registry, `METHODS`, maps a `pruning_method` to one.

A method says what it reads (``weight``, ``grad``, ``exp_avg``, ``exp_avg_sq``, ``step``), whether it accumulates a
score between mask updates (movement), whether it updates masks at all (``fixed`` keeps the model's zeros), its
default sparsity ramp and layer-adaptive setting, and the AdamWPrune step-budget factor of its variant. The
code that runs a method asks it (``method.updates_masks``, ``method.reads_gradients``); it never compares names.
The score formulas are the pure functions of `hf_gradprobe.training.importance`.

A new method is one new registered object (a subclass of [`PruningMethod`] when its scores need new code) plus
its tests:

```python
>>> from hf_gradprobe.training.methods import METHODS, AdamStateMethod
>>> METHODS.register(AdamStateMethod(name="my_method", reads=("weight", "exp_avg_sq"), score=my_scores))
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.utils import logging

from ..core.layers import PrunableLayer
from ..core.masking import magnitude_scores
from ..core.registry import Registry
from ..core.validation import check_choice
from .importance import (
    DEFAULT_BETA1,
    accumulate_movement_,
    bitter0_scores,
    bitter3_scores,
    bitter5_scores,
    bitter6_scores,
    bitter7_scores,
    bitter8_scores,
    bitter9_scores,
)
from .schedule import SCHEDULES


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "OPTIMIZER_STATE_KEYS",
    "AdamStateMethod",
    "FixedMethod",
    "MagnitudeMethod",
    "MovementMethod",
    "PruningMethod",
    "check_method",
    "get_method",
]

logger = logging.get_logger(__name__)

# What a method may read from the optimizer's per-parameter state (AdamW's moments and step count).
OPTIMIZER_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")
# Everything a method may read.
INPUTS = ("weight", "grad", *OPTIMIZER_STATE_KEYS)


@dataclass(frozen=True, kw_only=True)
class PruningMethod:
    """A way to choose the weights pruned while training. Subclasses implement [`~PruningMethod.scores`].

    Args:
        name (`str`):
            The `pruning_method` that selects it (lower case).
        reads (`tuple[str, ...]`, *optional*, defaults to `("weight",)`):
            What its scores are computed from, among `weight`, `grad`, `exp_avg`, `exp_avg_sq` and `step`.
        accumulates (`bool`, *optional*, defaults to `False`):
            Whether it keeps a score between mask updates, added to after every optimizer step during the ramp.
        state_tensor (`str`, *optional*):
            The name its accumulated scores are checkpointed under (``<state_tensor>.<layer>``); required when it
            `accumulates`.
        updates_masks (`bool`, *optional*, defaults to `True`):
            Whether it grows the masks along a sparsity ramp; `False` keeps the zeros the model starts with.
        default_schedule (`str`, *optional*, defaults to `"linear"`):
            The ramp shape used when `pruning_schedule` is None.
        layer_adaptive_default (`bool`, *optional*, defaults to `False`):
            The `pruning_layer_adaptive` used when it is None.
        step_budget_factor (`float`, *optional*, defaults to `1.0`):
            How much longer the AdamWPrune recipe trains this variant (`pruning_adjust_step_budget`).
    """

    name: str
    reads: tuple[str, ...] = ("weight",)
    accumulates: bool = False
    state_tensor: str | None = None
    updates_masks: bool = True
    default_schedule: str = "linear"
    layer_adaptive_default: bool = False
    step_budget_factor: float = 1.0

    def __post_init__(self) -> None:
        unknown = [item for item in self.reads if item not in INPUTS]
        if unknown or self.default_schedule not in SCHEDULES:
            raise ValueError(
                f"Pruning method {self.name!r}: `reads` must name inputs among {INPUTS} and `default_schedule` one "
                f"of {SCHEDULES}, got {self.reads} and {self.default_schedule!r}."
            )
        if self.accumulates != (self.state_tensor is not None):
            raise ValueError(f"Pruning method {self.name!r}: a method that accumulates scores names a `state_tensor`.")

    @property
    def optimizer_state(self) -> tuple[str, ...]:
        """The optimizer state keys it reads, in the order its score function takes them."""
        return tuple(item for item in self.reads if item in OPTIMIZER_STATE_KEYS)

    @property
    def reads_optimizer_state(self) -> bool:
        return bool(self.optimizer_state)

    @property
    def reads_gradients(self) -> bool:
        return "grad" in self.reads

    @property
    def bias_corrects(self) -> bool:
        """Whether its scores need Adam's β₁ (to bias-correct a moment with the step count)."""
        return "step" in self.reads

    def scores(
        self,
        weight: torch.Tensor,
        optimizer_state: dict | None = None,
        *,
        movement: torch.Tensor | None = None,
        beta1: float = DEFAULT_BETA1,
    ) -> torch.Tensor:
        """The fp32 keep-worthiness of every entry of ``weight`` (the lowest are pruned), as a new tensor.

        Args:
            weight (`torch.Tensor`):
                The weight (under FSDP2, this rank's rows of it).
            optimizer_state (`dict`, *optional*):
                The weight's optimizer state, read for the keys in `optimizer_state`.
            movement (`torch.Tensor`, *optional*):
                The weight's accumulated score, for a method that `accumulates`.
            beta1 (`float`, *optional*, defaults to `0.9`):
                Adam's β₁, for a method that `bias_corrects`.
        """
        raise NotImplementedError(f"Pruning method {self.name!r} computes no scores.")

    def accumulate_(self, scores: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Add one optimizer step's term to a weight's accumulated ``scores``, in place (a method that
        `accumulates` implements it)."""
        raise NotImplementedError(f"Pruning method {self.name!r} accumulates no scores.")

    def check_start(self, layers: list[PrunableLayer], masks: list[torch.Tensor], pruned: int) -> None:
        """Refuse, or warn about, layers this method cannot prune as asked (called once the masks are set up).

        ``pruned`` counts the masked weights of the whole model (every rank's rows under FSDP2).
        """


@dataclass(frozen=True, kw_only=True)
class MagnitudeMethod(PruningMethod):
    """Scores ``|W|``: `magnitude`, and `bitter1`/`bitter2` (AdamWPrune's magnitude variants)."""

    def scores(self, weight, optimizer_state=None, *, movement=None, beta1=DEFAULT_BETA1):
        return magnitude_scores(weight)


@dataclass(frozen=True, kw_only=True)
class AdamStateMethod(PruningMethod):
    """Scores from AdamW's state: ``score(weight, *state[key] for key in optimizer_state)`` (and ``beta1=`` when
    it reads `step`).

    Args:
        score (`Callable`):
            One of the functions of `hf_gradprobe.training.importance`.
    """

    score: Callable[..., torch.Tensor]

    def scores(self, weight, optimizer_state=None, *, movement=None, beta1=DEFAULT_BETA1):
        state = optimizer_state or {}
        missing = [key for key in self.optimizer_state if key not in state]
        if missing:
            raise KeyError(
                f"`pruning_method`={self.name!r} reads {list(self.optimizer_state)} from the optimizer state, but "
                f"{missing} is missing (state keys: {sorted(state)}). Use an Adam-family optimizer "
                "(`optim='adamw_torch'`), or `pruning_method='magnitude'`/'movement'."
            )
        extra = {"beta1": beta1} if self.bias_corrects else {}
        return self.score(weight, *(state[key] for key in self.optimizer_state), **extra)


@dataclass(frozen=True, kw_only=True)
class MovementMethod(PruningMethod):
    """Movement pruning: the score ``-Σₜ w·g`` accumulated over the optimizer steps of the ramp."""

    def scores(self, weight, optimizer_state=None, *, movement=None, beta1=DEFAULT_BETA1):
        if movement is None:
            raise ValueError(f"`pruning_method`={self.name!r} scores from the accumulated movement; pass `movement`.")
        return movement.clone()

    def accumulate_(self, scores: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Add one optimizer step's ``-w * g`` to ``scores`` in place."""
        return accumulate_movement_(scores, weight, grad)

    def check_start(self, layers, masks, pruned):
        if not any(layer.weight.requires_grad for layer in layers):
            raise ValueError(
                f"`pruning_method`={self.name!r} scores weights from their gradients, but every prunable weight is "
                "frozen (e.g. the base layers of a LoRA/PEFT model). Use `pruning_method='fixed'` or `'magnitude'`."
            )


@dataclass(frozen=True, kw_only=True)
class FixedMethod(PruningMethod):
    """Keeps the zeros the model starts with (fine-tuning a pruned model): its masks never change."""

    updates_masks: bool = False

    def check_start(self, layers, masks, pruned):
        empty = [
            layer.param_name
            for layer, mask in zip(layers, masks, strict=True)
            if layer.weight.requires_grad and mask.all() and mask.numel()
        ]
        if empty:
            logger.warning(
                f"`pruning_method`={self.name!r} found {len(empty)} trainable layers that are all zeros ({empty[0]}"
                f"{', ...' if len(empty) > 1 else ''}): they stay zero and learn nothing. A zero-initialised "
                "adapter (LoRA's `lora_B`) must not be pruned: leave it out with `ignore`/`targets`."
            )
        if pruned == 0:
            logger.warning(
                f"`pruning_method`={self.name!r} keeps the zeros the model already has, but its prunable weights have "
                "none: training stays dense. Prune it first (e.g. `prune_pretrained`) or choose another method."
            )


METHODS: Registry[PruningMethod] = Registry("pruning method", "pruning_method")
# AdamWPrune's variants: bitter0-2 ramp linearly, bitter3-9 with the gentle cubic p**3; bitter2 trains 1.21x
# longer and bitter3/4/5/6/8/9 1.30x (opt-in). bitter4 makes each layer's sparsity 0.7x to 1.3x the target.
_MOMENTS = ("weight", "exp_avg", "exp_avg_sq")
_CUBIC = {"default_schedule": "cubic"}
_LONGER = {"default_schedule": "cubic", "step_budget_factor": 1.30}
METHODS.register(AdamStateMethod(name="bitter0", reads=_MOMENTS, score=bitter0_scores))
METHODS.register(MagnitudeMethod(name="bitter1"))
METHODS.register(MagnitudeMethod(name="bitter2", step_budget_factor=1.21))
METHODS.register(AdamStateMethod(name="bitter3", reads=("weight", "exp_avg"), score=bitter3_scores, **_LONGER))
METHODS.register(
    AdamStateMethod(
        name="bitter4", reads=("weight", "exp_avg"), score=bitter3_scores, layer_adaptive_default=True, **_LONGER
    )
)
METHODS.register(AdamStateMethod(name="bitter5", reads=_MOMENTS, score=bitter5_scores, **_LONGER))
METHODS.register(AdamStateMethod(name="bitter6", reads=_MOMENTS, score=bitter6_scores, **_LONGER))
METHODS.register(AdamStateMethod(name="bitter7", reads=("weight", "exp_avg_sq"), score=bitter7_scores, **_CUBIC))
METHODS.register(AdamStateMethod(name="bitter8", reads=("weight", "exp_avg", "step"), score=bitter8_scores, **_LONGER))
METHODS.register(AdamStateMethod(name="bitter9", reads=_MOMENTS, score=bitter9_scores, **_LONGER))
METHODS.register(MagnitudeMethod(name="magnitude"))
METHODS.register(MovementMethod(name="movement", reads=("weight", "grad"), accumulates=True, state_tensor="movement"))
METHODS.register(FixedMethod(name="fixed"))

DEFAULT_METHOD = "bitter7"
METHOD_HINT = (
    "bitter0..bitter9 score weights from AdamW's moments, 'magnitude' uses |W|, 'movement' -W*grad accumulated, "
    "and 'fixed' keeps the zeros the model already has"
)


def check_method(value, name: str = "pruning_method") -> PruningMethod:
    """The registered method called ``value``; one ``ValueError`` naming ``name`` and the choices otherwise."""
    check_choice(name, value, METHODS, hint=METHOD_HINT)
    return METHODS.get(value)


def get_method(method: str | PruningMethod) -> PruningMethod:
    """``method`` itself, or the registered method of that name."""
    return method if isinstance(method, PruningMethod) else check_method(method)

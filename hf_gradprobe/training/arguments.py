# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningTrainingArguments`: when and how to prune during training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging

from ..core.masking import COMPARISON_GROUPS, validate_sparsity
from .importance import METHODS, needs_optimizer_state
from .schedule import SCHEDULES, check_step_order


logger = logging.get_logger(__name__)

# Per-variant step budget of the AdamWPrune recipe: these variants train longer, spending the compute that
# sparse steps save. Opt-in only (`pruning_adjust_step_budget`), and always logged.
STEP_BUDGET_FACTORS = {"bitter2": 1.21, **{f"bitter{i}": 1.30 for i in (3, 4, 5, 6, 8, 9)}}
# Default ramps of the AdamWPrune recipe: bitter0-2 (and the baselines) linear, bitter3-9 the gentle cubic p**3.
LINEAR_BY_DEFAULT = ("bitter0", "bitter1", "bitter2", "magnitude", "movement", "fixed")


def resolve_pruning_options(
    method: str,
    target_sparsity: float,
    schedule: str | None,
    start_step: float,
    end_step: float,
    frequency: int,
    comparison_group: str | None,
    layer_adaptive: bool | None,
    sample_fraction: float | None,
) -> dict:
    """Validate the pruning options and fill the per-method defaults; returns the resolved values."""
    if method not in METHODS:
        raise ValueError(
            f"`pruning_method`={method!r} is not supported. Choose one of {list(METHODS)}: bitter0..bitter9 "
            "score weights from AdamW's moments, 'magnitude' uses |W|, 'movement' -W*grad accumulated, and "
            "'fixed' keeps the zeros the model already has."
        )
    validate_sparsity(target_sparsity, "pruning_target_sparsity")
    if schedule is None:
        schedule = "linear" if method in LINEAR_BY_DEFAULT else "cubic"
    if schedule not in SCHEDULES:
        raise ValueError(f"`pruning_schedule`={schedule!r} is not supported. Choose one of {list(SCHEDULES)}.")
    check_step_order(start_step, end_step)
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ValueError(
            f"`pruning_frequency`={frequency!r} must be a whole number of optimizer steps >= 1 "
            "(masks are recomputed every that many steps during the ramp)."
        )
    if layer_adaptive is None:
        layer_adaptive = method == "bitter4"
    if comparison_group is None:
        comparison_group = "per_layer" if layer_adaptive else "global"
    if comparison_group not in COMPARISON_GROUPS:
        raise ValueError(
            f"`pruning_comparison_group`={comparison_group!r} is not supported. Choose one of "
            f"{list(COMPARISON_GROUPS)}: the target sparsity in every output row of each layer, in every layer, or "
            "over all prunable weights at once."
        )
    if layer_adaptive and comparison_group != "per_layer":
        raise ValueError(
            "`pruning_layer_adaptive=True` gives each layer its own sparsity (0.7x to 1.3x the target from the "
            "first block to the last), which needs `pruning_comparison_group='per_layer'`, got "
            f"{comparison_group!r}. Set the group to 'per_layer' or turn layer-adaptive scaling off."
        )
    if sample_fraction is not None and not 0.0 < sample_fraction <= 1.0:
        raise ValueError(
            f"`pruning_sample_fraction`={sample_fraction!r} must be in (0, 1] (e.g. 0.02 samples 2% of the "
            "scores to estimate the threshold), or None to be exact on small pools and sample 2% on large ones."
        )
    return {
        "method": method,
        "target_sparsity": float(target_sparsity),
        "schedule": schedule,
        "start_step": start_step,
        "end_step": end_step,
        "frequency": frequency,
        "comparison_group": comparison_group,
        "layer_adaptive": bool(layer_adaptive),
        "sample_fraction": sample_fraction,
    }


NONFINITE_ACTIONS = ("skip", "raise")


def check_on_nonfinite(value, name: str = "pruning_on_nonfinite") -> str:
    """Validate what a mask update does when scores are NaN/inf: ``"skip"`` (warn, keep the masks) or ``"raise"``."""
    if value not in NONFINITE_ACTIONS:
        raise ValueError(
            f"`{name}`={value!r} is not supported. Choose 'skip' (a mask update whose scores hold NaN or inf is "
            "skipped with a warning) or 'raise' (it stops training)."
        )
    return value


@dataclass
class PruningTrainingArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] plus the schedule of pruning while training.

    > Parameters that choose what is pruned

    pruning_method (`str`, defaults to `"bitter7"`):
        `bitter0` ... `bitter9` (AdamWPrune scores from AdamW's `exp_avg`/`exp_avg_sq`, see
        `hf_gradprobe.training.importance`), `magnitude` (|W|), `movement` (-W*grad accumulated) or `fixed`
        (keep the zeros an already pruned model has, e.g. to fine-tune after `prune_pretrained`).
    pruning_target_sparsity (`float`, defaults to `0.5`):
        Fraction of the prunable weights that are zero at the end of the ramp, in [0, 1).
    pruning_targets / pruning_ignore (`list[str]`, *optional*):
        Regular expressions over module names; by default every Linear/Conv1D inside the repeated blocks.
    pruning_comparison_group (`str`, *optional*):
        Where the sparsity is met: `per_row` (every output row of each layer), `per_layer` or `global` (one
        threshold over all prunable weights). Defaults to `per_layer` when layer-adaptive scaling is on, else
        `global`.
    pruning_layer_adaptive (`bool`, *optional*):
        bitter4's ramp: layer sparsity from 0.7x (first block) to 1.3x (last block) the target, renormalised so
        the global sparsity equals the target. Defaults to True for `bitter4` only.

    > Parameters that control when

    pruning_schedule (`str`, *optional*):
        `linear`, `cubic` (target * p**3, slow start) or `zhu_gupta` (target * (1 - (1-p)**3), fast start).
        Defaults to `linear` for bitter0-2/magnitude/movement and `cubic` for bitter3-9 (the AdamWPrune recipe).
    pruning_start_step / pruning_end_step (`float`, defaults to `0.1` / `0.7`):
        Optimizer steps where the ramp starts and reaches the target: a whole number of steps, or a ratio of
        the total steps when below 1. Steps skipped by the fp16 loss scaler do not count.
    pruning_frequency (`int`, defaults to `50`):
        Masks are recomputed every that many optimizer steps during the ramp (and at its end).
    pruning_sample_fraction (`float`, *optional*):
        Estimate thresholds from this fraction of the scores (seeded, the same on every process). None: exact
        up to 2**24 scores, a 2% sample above.
    pruning_on_nonfinite (`str`, defaults to `"skip"`):
        What a mask update does when some scores are NaN or inf (a diverged loss, NaN weights): `skip` keeps the
        masks as they are and warns, `raise` stops training with an error. Non-finite scores never prune.
    pruning_adjust_step_budget (`bool`, defaults to `False`):
        Opt-in: multiply `max_steps` (or `num_train_epochs`) by the per-variant step budget of the AdamWPrune
        recipe (bitter2 x1.21, bitter3/4/5/6/8/9 x1.30). Logged as a warning when applied.
    """

    pruning_method: str = field(
        default="bitter7", metadata={"help": "How weights are scored.", "choices": list(METHODS)}
    )
    pruning_target_sparsity: float = field(
        default=0.5, metadata={"help": "Fraction of the prunable weights zeroed at the end of the ramp, in [0, 1)."}
    )
    pruning_schedule: str | None = field(
        default=None,
        metadata={
            "help": "Sparsity ramp: linear, cubic (p**3) or zhu_gupta; default linear for bitter0-2/magnitude/"
            "movement, cubic for bitter3-9.",
            "choices": [*SCHEDULES, None],
        },
    )
    pruning_start_step: float = field(
        default=0.1, metadata={"help": "Optimizer step starting the ramp (a ratio of the total steps if < 1)."}
    )
    pruning_end_step: float = field(
        default=0.7, metadata={"help": "Optimizer step where the target is reached (a ratio of the total if < 1)."}
    )
    pruning_frequency: int = field(default=50, metadata={"help": "Recompute masks every N optimizer steps."})
    pruning_comparison_group: str | None = field(
        default=None,
        metadata={
            "help": "Where the sparsity is met: per_row, per_layer or global (default: per_layer if "
            "layer-adaptive, else global).",
            "choices": [*COMPARISON_GROUPS, None],
        },
    )
    pruning_layer_adaptive: bool | None = field(
        default=None, metadata={"help": "bitter4's 0.7x -> 1.3x per-layer sparsity ramp (default: on for bitter4)."}
    )
    pruning_sample_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of scores sampled for the threshold (default: exact up to 2**24 scores, 2% above)."
        },
    )
    pruning_targets: list[str] | None = field(
        default=None, metadata={"help": "Regexes of module names to prune (default: Linear/Conv1D in the blocks)."}
    )
    pruning_ignore: list[str] | None = field(default=None, metadata={"help": "Regexes of module names to keep dense."})
    pruning_on_nonfinite: str = field(
        default="skip",
        metadata={
            "help": "A mask update whose scores hold NaN/inf: skip it with a warning, or raise.",
            "choices": list(NONFINITE_ACTIONS),
        },
    )
    pruning_adjust_step_budget: bool = field(
        default=False,
        metadata={"help": "Opt-in: the AdamWPrune per-variant step budget (bitter2 x1.21, bitter3/4/5/6/8/9 x1.30)."},
    )

    def __post_init__(self):
        super().__post_init__()
        resolved = resolve_pruning_options(
            self.pruning_method,
            self.pruning_target_sparsity,
            self.pruning_schedule,
            self.pruning_start_step,
            self.pruning_end_step,
            self.pruning_frequency,
            self.pruning_comparison_group,
            self.pruning_layer_adaptive,
            self.pruning_sample_fraction,
        )
        self.pruning_schedule = resolved["schedule"]
        self.pruning_comparison_group = resolved["comparison_group"]
        self.pruning_layer_adaptive = resolved["layer_adaptive"]
        check_on_nonfinite(self.pruning_on_nonfinite)
        optim = str(getattr(self.optim, "value", self.optim)).lower()
        if needs_optimizer_state(self.pruning_method) and "adam" not in optim:
            logger.warning(
                f"`pruning_method`={self.pruning_method!r} reads AdamW's moments, but `optim`={self.optim!r}; "
                "training will fail at its start unless the optimizer you pass keeps `exp_avg`/`exp_avg_sq`."
            )


def step_budget_factor(method: str) -> float:
    return STEP_BUDGET_FACTORS.get(method, 1.0)


def apply_step_budget(args: TrainingArguments) -> TrainingArguments:
    """Apply the AdamWPrune per-variant step budget to ``args`` in place when ``pruning_adjust_step_budget`` is on.

    Idempotent (marks ``args``), and always logged: never a silent change of the training length.
    """
    if not getattr(args, "pruning_adjust_step_budget", False) or getattr(args, "_pruning_step_budget_applied", False):
        return args
    factor = step_budget_factor(args.pruning_method)
    if factor == 1.0:
        logger.warning(
            f"`pruning_adjust_step_budget=True`: the AdamWPrune step budget gives {args.pruning_method!r} no extra "
            "steps; the step budget is unchanged."
        )
    elif args.max_steps > 0:
        new = math.ceil(args.max_steps * factor)
        logger.warning(
            f"`pruning_adjust_step_budget=True`: `max_steps` {args.max_steps} -> {new} (x{factor} for "
            f"{args.pruning_method!r}, the AdamWPrune step budget)."
        )
        args.max_steps = new
    else:
        new = args.num_train_epochs * factor
        logger.warning(
            f"`pruning_adjust_step_budget=True`: `num_train_epochs` {args.num_train_epochs} -> {new} (x{factor} "
            f"for {args.pruning_method!r}, the AdamWPrune step budget)."
        )
        args.num_train_epochs = new
    args._pruning_step_budget_applied = True
    return args

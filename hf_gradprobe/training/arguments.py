# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningTrainingArguments`: when and how to prune during training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging

from ..core.masking import COMPARISON_GROUPS
from ..core.validation import check_bool
from .methods import DEFAULT_METHOD, METHODS, get_method
from .plan import NONFINITE_ACTIONS, PruningPlan
from .schedule import SCHEDULES


__all__ = ["PruningTrainingArguments", "apply_step_budget", "check_step_budget_applied"]

logger = logging.get_logger(__name__)


@dataclass
class PruningTrainingArguments(TrainingArguments):
    """[`~transformers.TrainingArguments`] plus the schedule of pruning while training.

    Every `pruning_*` value is checked at construction by building the run's [`PruningPlan`] (a bad value raises
    one `ValueError` naming its field); the fields keep the values given, None included: the per-method defaults
    live in the plan (`PruningPlan.from_args(args)`).

    Args:
        pruning_method (`str`, *optional*, defaults to `bitter7`):
            A method of `hf_gradprobe.training.methods.METHODS`: `bitter0` ... `bitter9` (AdamWPrune scores from
            AdamW's `exp_avg`/`exp_avg_sq`), `magnitude` (|W|), `movement` (-W*grad accumulated) or `fixed` (keep
            the zeros an already pruned model has, e.g. to fine-tune after `prune_pretrained`).
        pruning_target_sparsity (`float`, *optional*, defaults to `0.5`):
            Fraction of the prunable weights that are zero at the end of the ramp, in [0, 1).
        pruning_schedule (`str`, *optional*):
            `linear`, `cubic` (target * p**3, slow start) or `zhu_gupta` (target * (1 - (1-p)**3), fast start).
            Defaults to `linear` for bitter0-2/magnitude/movement and `cubic` for bitter3-9 (the AdamWPrune
            recipe).
        pruning_start_step (`float`, *optional*, defaults to `0.1`):
            Optimizer step the ramp starts at: a whole number of steps, or a ratio of the total steps when below
            1. Steps skipped by the fp16 loss scaler do not count.
        pruning_end_step (`float`, *optional*, defaults to `0.7`):
            Optimizer step the ramp reaches the target at, in the same units.
        pruning_frequency (`int`, *optional*, defaults to `50`):
            Masks are recomputed every that many optimizer steps during the ramp (and at its end). At train
            begin a warning says when the resulting updates cannot follow the ramp (a ramp shorter than the
            frequency, too few updates, an end after `max_steps`).
        pruning_comparison_group (`str`, *optional*):
            Where the sparsity is met: `per_row` (every output row of each layer), `per_layer` or `global` (one
            threshold over all prunable weights). Defaults to `per_layer` when layer-adaptive scaling is on, else
            `global`.
        pruning_layer_adaptive (`bool`, *optional*):
            bitter4's ramp: layer sparsity from 0.7x (first block) to 1.3x (last block) the target, renormalised
            so the global sparsity equals the target. Defaults to True for `bitter4` only.
        pruning_sample_fraction (`float`, *optional*):
            Estimate thresholds from this fraction of the scores (seeded, the same on every process). None: exact
            up to 2**24 scores, a 2% sample above.
        pruning_targets (`list[str]`, *optional*):
            Regular expressions over module names to prune; by default every Linear/Conv1D inside the repeated
            blocks.
        pruning_ignore (`list[str]`, *optional*):
            Regular expressions over module names to keep dense.
        pruning_on_nonfinite (`str`, *optional*, defaults to `skip`):
            What a mask update does when some scores are NaN or inf (a diverged loss, NaN weights): `skip` keeps
            the masks as they are and warns, `raise` stops training with an error. Non-finite scores never prune.
        pruning_adjust_step_budget (`bool`, *optional*, defaults to `False`):
            Opt-in: multiply `max_steps` (or `num_train_epochs`) by the per-variant step budget of the AdamWPrune
            recipe (bitter2 x1.21, bitter3/4/5/6/8/9 x1.30), see [`apply_step_budget`]. Logged as a warning.

    Resuming (`trainer.train(resume_from_checkpoint=...)`): the checkpoint's `pruning_state.safetensors` is
    checked at train begin, before any step (see [`PruningCallback`]): a damaged file, one of another model,
    method or step, or masks that disagree with their own schedule are refused naming the file. With the same
    `pruning_*` values the run goes on exactly as the uninterrupted one. A different `pruning_method` is refused,
    and so are a different comparison group or layer-adaptive setting once anything is pruned, a
    `pruning_target_sparsity` below the sparsity already reached (masks only grow), and a `pruning_end_step` at
    or before the resumed step while the target is not reached. Another target, schedule, start or end step
    re-plans the ramp from the sparsity reached at the resumed step to the new target at the new end step
    (logged as a warning); a finished ramp stays finished.
    """

    pruning_method: str = field(
        default=DEFAULT_METHOD, metadata={"help": "How weights are scored.", "choices": list(METHODS)}
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
        default=None, metadata={"help": "The 0.7x -> 1.3x per-layer sparsity ramp (default: on for bitter4 only)."}
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
        plan = PruningPlan.from_args(self)
        check_bool("pruning_adjust_step_budget", self.pruning_adjust_step_budget)
        optim = str(getattr(self.optim, "value", self.optim)).lower()
        if plan.method.reads_optimizer_state and "adam" not in optim:
            logger.warning(
                f"`pruning_method`={self.pruning_method!r} reads AdamW's moments, but `optim`={self.optim!r}; "
                "training will fail at its start unless the optimizer you pass keeps `exp_avg`/`exp_avg_sq`."
            )


# Set on `TrainingArguments` by `apply_step_budget`, which applies the step budget once per arguments object.
BUDGET_APPLIED = "_pruning_step_budget_applied"


def apply_step_budget(args: TrainingArguments) -> TrainingArguments:
    """Apply the AdamWPrune per-variant step budget to ``args`` in place when `pruning_adjust_step_budget` is on.

    Idempotent (marks ``args``), and always logged: never a silent change of the training length.

    Args:
        args ([`PruningTrainingArguments`]):
            The arguments of the run; `max_steps` (or `num_train_epochs` without it) is multiplied by the
            method's `step_budget_factor`.

    Returns:
        The same ``args``.
    """
    if not getattr(args, "pruning_adjust_step_budget", False) or getattr(args, BUDGET_APPLIED, False):
        return args
    method = get_method(args.pruning_method)
    factor = method.step_budget_factor
    if factor == 1.0:
        logger.warning(
            f"`pruning_adjust_step_budget=True`: the AdamWPrune step budget gives {method.name!r} no extra "
            "steps; the step budget is unchanged."
        )
    elif args.max_steps > 0:
        new = math.ceil(args.max_steps * factor)
        logger.warning(
            f"`pruning_adjust_step_budget=True`: `max_steps` {args.max_steps} -> {new} (x{factor} for "
            f"{method.name!r}, the AdamWPrune step budget)."
        )
        args.max_steps = new
    else:
        new = args.num_train_epochs * factor
        logger.warning(
            f"`pruning_adjust_step_budget=True`: `num_train_epochs` {args.num_train_epochs} -> {new} (x{factor} "
            f"for {method.name!r}, the AdamWPrune step budget)."
        )
        args.num_train_epochs = new
    setattr(args, BUDGET_APPLIED, True)
    return args


def check_step_budget_applied(args) -> None:
    """Refuse a run whose `pruning_adjust_step_budget` asks for a step budget that was not applied before the
    Trainer was built (the Trainer has then fixed its number of steps)."""
    if getattr(args, "pruning_adjust_step_budget", False) and not getattr(args, BUDGET_APPLIED, False):
        raise ValueError(
            "`pruning_adjust_step_budget=True` changes `max_steps`, which must happen before the Trainer is "
            "built: use `PruningTrainer`, or call `hf_gradprobe.training.apply_step_budget(args)` first."
        )

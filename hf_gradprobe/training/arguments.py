# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningTrainingArguments`: when and how to prune during training."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging

from ..core.masking import COMPARISON_GROUPS
from ..core.validation import check_bool, check_choice, check_float, check_int, describe_value
from .importance import METHODS, needs_optimizer_state
from .schedule import SCHEDULES, STEP_MAX, check_step_order


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
    """Validate the pruning options and fill the per-method defaults; returns the resolved values.

    Each bad value raises one ``ValueError`` naming its `pruning_*` field (the same message for
    `PruningTrainingArguments` and `PruningCallback`).
    """
    check_choice(
        "pruning_method",
        method,
        METHODS,
        hint="bitter0..bitter9 score weights from AdamW's moments, 'magnitude' uses |W|, 'movement' -W*grad "
        "accumulated, and 'fixed' keeps the zeros the model already has",
    )
    target_sparsity = check_float(
        "pruning_target_sparsity",
        target_sparsity,
        minimum=0.0,
        maximum=1.0,
        exclusive_maximum=True,
        hint="the fraction of the prunable weights set to zero at the end of the ramp, e.g. 0.5",
    )
    if schedule is None:
        schedule = "linear" if method in LINEAR_BY_DEFAULT else "cubic"
    check_choice("pruning_schedule", schedule, SCHEDULES, hint="or None for the method's default")
    check_step_order(start_step, end_step)
    check_int(
        "pruning_frequency",
        frequency,
        minimum=1,
        maximum=STEP_MAX,
        hint="masks are recomputed every that many optimizer steps during the ramp",
    )
    if layer_adaptive is not None:
        check_bool("pruning_layer_adaptive", layer_adaptive, hint="or None: on for bitter4 only")
    else:
        layer_adaptive = method == "bitter4"
    if comparison_group is None:
        comparison_group = "per_layer" if layer_adaptive else "global"
    check_choice(
        "pruning_comparison_group",
        comparison_group,
        COMPARISON_GROUPS,
        hint="the target sparsity in every output row of each layer, in every layer, or over all prunable weights "
        "at once",
    )
    if layer_adaptive and comparison_group != "per_layer":
        raise ValueError(
            "`pruning_layer_adaptive=True` gives each layer its own sparsity (0.7x to 1.3x the target from the "
            "first block to the last), which needs `pruning_comparison_group='per_layer'`, got "
            f"{comparison_group!r}. Set the group to 'per_layer' or turn layer-adaptive scaling off."
        )
    sample_fraction = check_float(
        "pruning_sample_fraction",
        sample_fraction,
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
        allow_none=True,
        hint="e.g. 0.02 samples 2% of the scores to estimate the threshold; None is exact on small pools and "
        "samples 2% on large ones",
    )
    return {
        "method": method,
        "target_sparsity": target_sparsity,
        "schedule": schedule,
        "start_step": start_step,
        "end_step": end_step,
        "frequency": frequency,
        "comparison_group": comparison_group,
        "layer_adaptive": layer_adaptive,
        "sample_fraction": sample_fraction,
    }


NONFINITE_ACTIONS = ("skip", "raise")


def check_on_nonfinite(value, name: str = "pruning_on_nonfinite") -> str:
    """Validate what a mask update does when scores are NaN/inf: ``"skip"`` (warn, keep the masks) or ``"raise"``."""
    return check_choice(
        name,
        value,
        NONFINITE_ACTIONS,
        hint="'skip': a mask update whose scores hold NaN or inf is skipped with a warning; 'raise': it stops "
        "training",
    )


def check_patterns(name: str, value) -> str | list[str] | tuple[str, ...] | None:
    """Validate module-name regular expressions (`targets`/`ignore`): None, one string, or a list of strings."""
    patterns = [value] if isinstance(value, str) else value
    if value is not None and (
        not isinstance(patterns, (list, tuple)) or not all(isinstance(pattern, str) for pattern in patterns)
    ):
        raise ValueError(
            f"`{name}` must be a regular expression over module names, a list of them, or None, got "
            f"{describe_value(value)}."
        )
    for pattern in patterns or ():
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{name}` entry {describe_value(pattern)} is not a valid regular expression ({error}); escape "
                "literal characters such as '(' or '[' with a backslash."
            ) from None
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

    > Resuming (`trainer.train(resume_from_checkpoint=...)`)

    The checkpoint's `pruning_state.safetensors` is checked at train begin, before any step (see
    [`PruningCallback`]): a damaged file, one of another model, method or step, or masks that disagree with
    their own schedule are refused naming the file. With the same `pruning_*` values the run goes on exactly as
    the uninterrupted one. A different `pruning_method` is refused, and so are a different comparison group or
    layer-adaptive setting once anything is pruned, a `pruning_target_sparsity` below the sparsity already
    reached (masks only grow), and a `pruning_end_step` at or before the resumed step while the target is not
    reached. Another target, schedule, start or end step re-plans the ramp from the sparsity reached at the
    resumed step to the new target at the new end step (logged as a warning); a finished ramp stays finished.

    Every bad value raises one `ValueError` naming its `pruning_*` field.
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
        self.pruning_target_sparsity = resolved["target_sparsity"]
        self.pruning_schedule = resolved["schedule"]
        self.pruning_comparison_group = resolved["comparison_group"]
        self.pruning_layer_adaptive = resolved["layer_adaptive"]
        check_patterns("pruning_targets", self.pruning_targets)
        check_patterns("pruning_ignore", self.pruning_ignore)
        check_on_nonfinite(self.pruning_on_nonfinite)
        check_bool("pruning_adjust_step_budget", self.pruning_adjust_step_budget)
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

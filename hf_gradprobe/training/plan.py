# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningPlan`: the options of pruning while training, validated once, with every per-method default filled in.

`PruningTrainingArguments` validates its `pruning_*` fields by building one ([`PruningPlan.from_args`]);
`PruningTrainer` builds it once and hands it to its [`PruningCallback`], which builds one from its own arguments
otherwise. Every bad value raises one ``ValueError`` naming the field or argument where it was given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass

from ..core.masking import COMPARISON_GROUPS, EXACT_LIMIT
from ..core.validation import check_bool, check_choice, check_float, check_int, check_seed, describe_value
from .methods import DEFAULT_METHOD, PruningMethod, check_method
from .schedule import SCHEDULES, STEP_MAX, Ramp, check_step_order, resolve_steps


__all__ = [
    "ARGUMENT_NAMES",
    "CALLBACK_NAMES",
    "NONFINITE_ACTIONS",
    "PruningPlan",
    "check_on_nonfinite",
    "check_patterns",
]

NONFINITE_ACTIONS = ("skip", "raise")
# How each option is called in the messages about it: as a `PruningTrainingArguments` field, and as a
# `PruningCallback` argument (the options both share carry the field's name, so both give one message).
ARGUMENT_NAMES = {
    "method": "pruning_method",
    "target_sparsity": "pruning_target_sparsity",
    "schedule": "pruning_schedule",
    "frequency": "pruning_frequency",
    "comparison_group": "pruning_comparison_group",
    "layer_adaptive": "pruning_layer_adaptive",
    "sample_fraction": "pruning_sample_fraction",
    "targets": "pruning_targets",
    "ignore": "pruning_ignore",
    "seed": "seed",
    "exact_limit": "exact_limit",
    "sync_masks": "sync_masks",
    "on_nonfinite": "pruning_on_nonfinite",
}
CALLBACK_NAMES = {
    **ARGUMENT_NAMES,
    "targets": "targets",
    "ignore": "ignore",
    "on_nonfinite": "on_nonfinite",
}


def check_on_nonfinite(value, name: str = "pruning_on_nonfinite") -> str:
    """What a mask update does when scores are NaN/inf: `skip` (warn, keep the masks) or `raise`."""
    return check_choice(
        name,
        value,
        NONFINITE_ACTIONS,
        hint="'skip': a mask update whose scores hold NaN or inf is skipped with a warning; 'raise': it stops "
        "training",
    )


def check_patterns(name: str, value) -> str | list[str] | tuple[str, ...] | None:
    """Module-name regular expressions (`targets`/`ignore`): None, one string, or a list of strings."""
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


@dataclass(frozen=True)
class PruningPlan:
    """What is pruned while training, and when: validated at construction, the per-method defaults filled in.

    Args:
        method (`str` or `PruningMethod`, *optional*, defaults to `bitter7`):
            A registered method of `hf_gradprobe.training.methods` (its name, or itself); the plan holds the object.
        target_sparsity (`float`, *optional*, defaults to `0.5`):
            Fraction of the prunable weights that are zero at the end of the ramp, in [0, 1).
        schedule (`str`, *optional*):
            `linear`, `cubic` or `zhu_gupta`; None takes the method's `default_schedule`.
        start_step (`float`, *optional*, defaults to `0.1`):
            Optimizer step the ramp starts at: a whole number of steps, or a ratio of the total below 1.
        end_step (`float`, *optional*, defaults to `0.7`):
            Optimizer step the ramp reaches the target at, in the same units.
        frequency (`int`, *optional*, defaults to `50`):
            Masks are recomputed every that many optimizer steps during the ramp, and at its end.
        comparison_group (`str`, *optional*):
            `per_row`, `per_layer` or `global`; None is `per_layer` when layer-adaptive, else `global`.
        layer_adaptive (`bool`, *optional*):
            The 0.7x -> 1.3x per-layer sparsity ramp; None takes the method's `layer_adaptive_default`.
        sample_fraction (`float`, *optional*):
            Fraction of the scores sampled to estimate thresholds; None is exact up to `exact_limit` scores per
            pool and a 2% sample above.
        targets (`str` or `list[str]`, *optional*):
            Regular expressions of the module names to prune (default: every Linear/Conv1D inside the blocks).
        ignore (`str` or `list[str]`, *optional*):
            Regular expressions of the module names to keep dense.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sampled thresholds (the same on every process).
        exact_limit (`int`, *optional*, defaults to `2**24`):
            Pools of up to that many scores are decided exactly.
        sync_masks (`bool`, *optional*, defaults to `True`):
            Under DDP, broadcast rank 0's masks after every update.
        on_nonfinite (`str`, *optional*, defaults to `skip`):
            A mask update whose scores hold NaN or inf is skipped with a warning (`skip`) or raises (`raise`).
        names (`Mapping[str, str]`, *optional*):
            What each option is called in error messages (defaults to `CALLBACK_NAMES`; `from_args` passes
            `ARGUMENT_NAMES`).
    """

    method: PruningMethod | str = DEFAULT_METHOD
    target_sparsity: float = 0.5
    schedule: str | None = None
    start_step: float = 0.1
    end_step: float = 0.7
    frequency: int = 50
    comparison_group: str | None = None
    layer_adaptive: bool | None = None
    sample_fraction: float | None = None
    targets: str | Sequence[str] | None = None
    ignore: str | Sequence[str] | None = None
    seed: int = 0
    exact_limit: int = EXACT_LIMIT
    sync_masks: bool = True
    on_nonfinite: str = NONFINITE_ACTIONS[0]
    names: InitVar[Mapping[str, str] | None] = None

    def __post_init__(self, names: Mapping[str, str] | None) -> None:
        names = CALLBACK_NAMES if names is None else names

        def resolve(key: str, value) -> None:
            object.__setattr__(self, key, value)

        method = self.method if isinstance(self.method, PruningMethod) else check_method(self.method, names["method"])
        resolve("method", method)
        resolve(
            "target_sparsity",
            check_float(
                names["target_sparsity"],
                self.target_sparsity,
                minimum=0.0,
                maximum=1.0,
                exclusive_maximum=True,
                hint="the fraction of the prunable weights set to zero at the end of the ramp, e.g. 0.5",
            ),
        )
        if self.schedule is None:
            resolve("schedule", method.default_schedule)
        check_choice(names["schedule"], self.schedule, SCHEDULES, hint="or None for the method's default")
        check_step_order(self.start_step, self.end_step)
        check_int(
            names["frequency"],
            self.frequency,
            minimum=1,
            maximum=STEP_MAX,
            hint="masks are recomputed every that many optimizer steps during the ramp",
        )
        if self.layer_adaptive is None:
            resolve("layer_adaptive", method.layer_adaptive_default)
        else:
            check_bool(names["layer_adaptive"], self.layer_adaptive, hint="or None: on for bitter4 only")
        if self.comparison_group is None:
            resolve("comparison_group", "per_layer" if self.layer_adaptive else "global")
        check_choice(
            names["comparison_group"],
            self.comparison_group,
            COMPARISON_GROUPS,
            hint="the target sparsity in every output row of each layer, in every layer, or over all prunable weights "
            "at once",
        )
        if self.layer_adaptive and self.comparison_group != "per_layer":
            raise ValueError(
                f"`{names['layer_adaptive']}=True` gives each layer its own sparsity (0.7x to 1.3x the target from "
                f"the first block to the last), which needs `{names['comparison_group']}='per_layer'`, got "
                f"{self.comparison_group!r}. Set the group to 'per_layer' or turn layer-adaptive scaling off."
            )
        resolve(
            "sample_fraction",
            check_float(
                names["sample_fraction"],
                self.sample_fraction,
                minimum=0.0,
                maximum=1.0,
                exclusive_minimum=True,
                allow_none=True,
                hint="e.g. 0.02 samples 2% of the scores to estimate the threshold; None is exact on small pools and "
                "samples 2% on large ones",
            ),
        )
        check_patterns(names["targets"], self.targets)
        check_patterns(names["ignore"], self.ignore)
        resolve("seed", check_seed(names["seed"], self.seed))
        resolve(
            "exact_limit",
            check_int(
                names["exact_limit"],
                self.exact_limit,
                minimum=0,
                hint="pools up to that many scores are decided exactly",
            ),
        )
        check_bool(names["sync_masks"], self.sync_masks)
        check_on_nonfinite(self.on_nonfinite, names["on_nonfinite"])

    @classmethod
    def from_args(cls, args) -> PruningPlan:
        """The plan of [`PruningTrainingArguments`] ``args`` (its `pruning_*` fields and `seed`)."""
        return cls(
            **{key: getattr(args, name) for key, name in ARGUMENT_NAMES.items() if hasattr(args, name)},
            start_step=args.pruning_start_step,
            end_step=args.pruning_end_step,
            names=ARGUMENT_NAMES,
        )

    def ramp(self, max_steps: int) -> Ramp:
        """The ramp of a run of ``max_steps`` optimizer steps (its start and end steps resolved)."""
        start, end = resolve_steps(self.start_step, self.end_step, max_steps)
        return Ramp(self.target_sparsity, self.schedule, start, end, self.frequency)

    def recorded_schedule(self, ramp: Ramp) -> dict:
        """The schedule values a pruning state records (those of `state.SCHEDULE_KEYS` a resumed run compares with
        its own, and the `replan` of a resumed ramp)."""
        return {
            "target_sparsity": ramp.target_sparsity,
            "schedule": ramp.schedule,
            "start": ramp.start,
            "end": ramp.end,
            "frequency": ramp.frequency,
            "comparison_group": self.comparison_group,
            "layer_adaptive": self.layer_adaptive,
            "replan": list(ramp.replan) if ramp.replan is not None else None,
        }

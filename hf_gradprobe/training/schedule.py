# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The sparsity ramp, counted in optimizer steps: pure schedule functions, the one check of a step option, and
`Ramp`, a run's resolved schedule, which also says when its masks cannot follow it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..core.validation import check_float, describe_value


__all__ = [
    "SCHEDULES",
    "STEP_MAX",
    "Ramp",
    "check_step_order",
    "is_update_step",
    "last_update_step",
    "layer_adaptive_scales",
    "layer_sparsities",
    "planned_sparsity",
    "resolve_step",
    "resolve_steps",
    "schedule_progress",
    "scheduled_sparsity",
    "validate_step",
]

SCHEDULES = ("linear", "cubic", "zhu_gupta")


# Steps and frequencies are optimizer-step counters: 64-bit, like the Trainer's own.
STEP_MAX = 2**63 - 1
_STEP_ALLOWED = "a whole number of optimizer steps (1 to 2**63 - 1) or a ratio of the total training steps in [0, 1)"


def validate_step(value: float, name: str = "step") -> float:
    """Check a step option: a whole number of optimizer steps (>= 1) or a ratio of the total steps in [0, 1).

    The one check of a step value, used for the arguments, the callback and :func:`resolve_step`; same
    convention as `TrainingArguments.logging_steps`/`save_steps`.
    """
    try:
        number = check_float(name, value, minimum=0)
    except ValueError:
        raise ValueError(f"`{name}` must be {_STEP_ALLOWED}, got {describe_value(value)}.") from None
    if number >= 1 and (not number.is_integer() or value > STEP_MAX):
        raise ValueError(
            f"`{name}` must be {_STEP_ALLOWED}, got {describe_value(value)}: values >= 1 count optimizer steps and "
            "must be whole numbers."
        )
    return value


def resolve_step(value: float, max_steps: int, name: str = "step") -> int:
    """A step given as an absolute count (>= 1) or as a ratio of ``max_steps`` (in [0, 1)), as a step count."""
    validate_step(value, name)
    return math.ceil(value * max_steps) if value < 1 else int(value)


def check_step_order(start_step: float, end_step: float) -> None:
    """Validate both ramp steps, and their order when they compare before the total is known.

    Two counts or two ratios compare now; a count and a ratio only once the total steps are known
    (see :func:`resolve_steps`).
    """
    validate_step(start_step, "pruning_start_step")
    validate_step(end_step, "pruning_end_step")
    if (start_step >= 1) == (end_step >= 1) and end_step < start_step:
        raise _order_error(start_step, end_step, "")


def resolve_steps(start_step: float, end_step: float, max_steps: int) -> tuple[int, int]:
    """The optimizer steps ``(start, end)`` of the ramp for a run of ``max_steps``; the end may not precede the start."""
    start = resolve_step(start_step, max_steps, "pruning_start_step")
    end = resolve_step(end_step, max_steps, "pruning_end_step")
    if end < start:
        raise _order_error(start_step, end_step, f" (step {end} < step {start} of {max_steps} training steps)")
    return start, end


def _order_error(start_step: float, end_step: float, where: str) -> ValueError:
    return ValueError(
        f"`pruning_end_step`={end_step} is before `pruning_start_step`={start_step}{where}. The ramp runs from the "
        "start step to the end step: set `pruning_end_step` >= `pruning_start_step`."
    )


def schedule_progress(step: int, start: int, end: int) -> float:
    """Fraction of the ramp done after optimizer step ``step`` (0 before ``start``, 1 from ``end``)."""
    if end < start:
        raise ValueError(f"The pruning end step ({end}) is before the start step ({start}).")
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start) / (end - start)


def scheduled_sparsity(step: int, target: float, start: int, end: int, schedule: str = "linear") -> float:
    """Sparsity the masks should have after optimizer step ``step`` of a ramp from ``start`` to ``end``.

    * ``linear``: ``target * p``.
    * ``cubic``: ``target * p**3``, a gentle early ramp (slow start, most pruning near ``end``).
    * ``zhu_gupta``: ``target * (1 - (1 - p)**3)`` (Zhu & Gupta 2017: fast start, tapering near ``end``).

    ``p`` is :func:`schedule_progress`; ``target`` is reached exactly at ``end``.
    """
    p = schedule_progress(step, start, end)
    if schedule == "linear":
        return target * p
    if schedule == "cubic":
        return target * p**3
    if schedule == "zhu_gupta":
        return target * (1.0 - (1.0 - p) ** 3)
    raise ValueError(f"`pruning_schedule` must be one of {SCHEDULES}, got {schedule!r}.")


def is_update_step(step: int, start: int, end: int, frequency: int) -> bool:
    """Masks are recomputed every ``frequency`` steps from ``start``, and always at ``end``.

    Nothing happens after ``end``: the masks then stay as they are, so the sparsity cannot drift
    above the target the way repeated sampled thresholds would make it.
    """
    if frequency < 1:
        raise ValueError(f"`pruning_frequency` must be at least 1 optimizer step, got {frequency}.")
    if step < max(start, 1) or step > end:
        return False
    return step == end or (step - start) % frequency == 0


def last_update_step(step: int, start: int, end: int, frequency: int) -> int | None:
    """The last optimizer step up to ``step`` at which :func:`is_update_step` recomputes masks, None before any."""
    if step < max(start, 1):
        return None
    if step >= end:
        return end
    last = start + (step - start) // frequency * frequency
    return last if last >= max(start, 1) else None


def planned_sparsity(
    step: int,
    target: float,
    start: int,
    end: int,
    schedule: str,
    replan: tuple[int, float] | None = None,
) -> float:
    """:func:`scheduled_sparsity`, or, for a ramp re-planned on resume, the ramp from ``replan``.

    ``replan = (from_step, from_sparsity)``: a resumed run whose target or steps changed goes on from the
    sparsity its masks had at ``from_step`` to ``target`` at ``end``, shaped by ``schedule`` over what is left.
    """
    if replan is None:
        return scheduled_sparsity(step, target, start, end, schedule)
    from_step, from_sparsity = replan
    if step <= from_step:
        return from_sparsity
    return from_sparsity + scheduled_sparsity(step, target - from_sparsity, from_step, end, schedule)


def layer_adaptive_scales(
    positions: list[float], numels: list[int], low: float = 0.7, high: float = 1.3
) -> list[float]:
    """Per-layer multipliers of the sparsity: a ramp from ``low`` (first block) to ``high`` (last block).

    ``positions`` are in [0, 1] (block index / (blocks - 1)). bitter4's ramp, renormalised so the size-weighted
    mean multiplier is 1: the global sparsity then equals the target (unnormalised, it reaches 54.6% at a 50%
    target on GPT-2).
    """
    raw = [low + (high - low) * p for p in positions]
    total = sum(numels)
    mean = sum(r * n for r, n in zip(raw, numels, strict=True)) / total if total else 1.0
    return [r / mean for r in raw]


def layer_sparsities(target: float, scales: list[float], numels: list[int], cap: float = 0.95) -> list[float]:
    """Per-layer target sparsities ``target * scale``, capped at ``cap``; what a capped layer cannot take is
    spread over the other layers in proportion to their scale, so the pool still reaches ``target``."""
    out = [min(cap, target * s) for s in scales]
    total = sum(numels)
    for _ in range(len(scales)):
        missing = target * total - sum(o * n for o, n in zip(out, numels, strict=True))
        free = [i for i, o in enumerate(out) if o < cap]
        if missing <= 1e-12 * total or not free:
            break
        weight = sum(scales[i] * numels[i] for i in free)
        for i in free:
            out[i] = min(cap, out[i] + missing * scales[i] / weight)
    return out


# A ramp whose masks lag its schedule by more than this share of the sparsity left to prune is warned about.
LAG_WARNING = 0.5
# Mask updates a ramp needs to be followed closely (the suggested `pruning_frequency` gives that many).
FOLLOWING_UPDATES = 10


@dataclass(frozen=True)
class Ramp:
    """A run's sparsity ramp with its steps resolved: when masks are recomputed and how sparse they become.

    Args:
        target_sparsity (`float`):
            The sparsity reached at `end`.
        schedule (`str`):
            The ramp's shape: `linear`, `cubic` or `zhu_gupta` (see [`scheduled_sparsity`]).
        start (`int`):
            The optimizer step the ramp starts at.
        end (`int`):
            The optimizer step it reaches `target_sparsity` at; no mask update happens after it.
        frequency (`int`):
            Masks are recomputed every that many optimizer steps from `start`, and at `end`.
        replan (`tuple[int, float]`, *optional*):
            ``(step, sparsity)`` a resumed run's ramp goes on from when its options changed (see
            [`planned_sparsity`]).
    """

    target_sparsity: float
    schedule: str
    start: int
    end: int
    frequency: int
    replan: tuple[int, float] | None = None

    def sparsity_at(self, step: int) -> float:
        """The sparsity the masks should have after optimizer step ``step``."""
        return planned_sparsity(step, self.target_sparsity, self.start, self.end, self.schedule, self.replan)

    def is_update_step(self, step: int) -> bool:
        return is_update_step(step, self.start, self.end, self.frequency)

    def update_steps(self, after: int, until: int) -> list[int]:
        """The optimizer steps in ``(after, until]`` at which masks are recomputed."""
        low, high = max(after + 1, self.start, 1), min(until, self.end)
        if low > high:
            return []
        first = self.start + math.ceil((low - self.start) / self.frequency) * self.frequency
        steps = list(range(first, high + 1, self.frequency))
        if high == self.end and (not steps or steps[-1] != self.end):
            steps.append(self.end)
        return steps

    def with_steps(self, start: int, end: int, replan: tuple[int, float] | None) -> Ramp:
        return replace(self, start=start, end=end, replan=replan)

    def warnings(self, max_steps: int, step: int = 0) -> list[str]:
        """Why the masks of a run of ``max_steps`` optimizer steps, from optimizer step ``step`` on, cannot follow
        this ramp: it ends after the run, it is shorter than `frequency` (one jump), or its updates are too few."""
        found = []
        if self.end > max_steps:
            found.append(
                f"`pruning_end_step` resolves to optimizer step {self.end}, after the last training step "
                f"({max_steps}): training ends before the target sparsity {self.target_sparsity} is reached."
            )
        begin = max(self.start, step, self.replan[0] if self.replan is not None else 0)
        left = self.target_sparsity - self.sparsity_at(step)
        if self.end <= begin or left <= 0 or self.end - begin >= 6 * self.frequency:
            # A ramp of at least six intervals never lags by half of it (cubic's last sixth is 42% of the target).
            return found
        last = min(self.end, max_steps)
        updates = self.update_steps(step, last)
        advice = (
            f"Set `pruning_frequency` to at most {max(1, (self.end - begin) // FOLLOWING_UPDATES)} "
            f"({FOLLOWING_UPDATES} mask updates), or lengthen the ramp."
        )
        ramp = f"the {self.schedule} ramp to {self.target_sparsity:.2%} from optimizer step {self.start} to {self.end}"
        if self.end - self.start < self.frequency:
            found.append(
                f"`pruning_frequency`={self.frequency} is longer than {ramp}: masks are recomputed at steps {updates} "
                f"only, so the ramp is one jump at step {self.end} (`pruning/target_sparsity` rises while "
                f"`pruning/sparsity` stays behind). {advice}"
            )
            return found
        held = [step, *updates]
        ends = [after - 1 for after in held[1:]] + ([max_steps] if last < self.end else [held[-1]])
        lag, at, holds = max(
            (self.sparsity_at(upto) - self.sparsity_at(since), upto, since)
            for since, upto in zip(held, ends, strict=True)
        )
        if lag > LAG_WARNING * left:
            found.append(
                f"With `pruning_frequency`={self.frequency}, {ramp} gets {len(updates)} mask updates (steps "
                f"{updates}), too few to follow it: at step {at} the schedule asks {self.sparsity_at(at):.2%} while "
                f"the masks hold {self.sparsity_at(holds):.2%}. {advice}"
            )
        return found

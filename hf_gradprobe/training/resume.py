# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Resuming pruning: a checkpointed pruning state is restored only once it is checked against itself, the model
and this run's plan, and the ramp goes on (or is re-planned) from it.

Every refusal is one ``ValueError`` naming the file, at train begin, before any step; under FSDP2 every rank checks
its own file and all ranks stop together when one refuses, so no rank is left waiting in a collective. Refused:

* A damaged file (not safetensors, truncated, metadata missing or of the wrong type, a mask that is missing, not
  bool or not the layer's shape, tensors of no layer) or one saved for another method, model or layers.
* A file that disagrees with itself or the run: a mask count other than the one it records, counters of another
  step than the checkpoint's, masks sparser or denser than its own schedule allows at its step (within the
  sampled-threshold tolerance), or, for a method keeping the model's zeros, masks where the weights are not zero.
* Changed options that cannot go on. Unchanged, the run goes on exactly as the uninterrupted one. A different
  `pruning_method` is refused, so are a different `pruning_comparison_group`/`pruning_layer_adaptive` once the
  masks prune anything, and a `pruning_target_sparsity` below what the masks already prune (masks only grow).

A different target, schedule, start or end step (including ratios that resolve elsewhere because `max_steps`
changed) re-plans the ramp from the sparsity the masks have at the resumed step to the new target at the new end
step, with a warning; an end step at or before the resumed step is refused while the target is not reached. A
finished ramp (or a target already reached) stays finished. A new `pruning_frequency` applies from the resumed
step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers.utils import logging

from ..core.masking import DEFAULT_SAMPLE_FRACTION
from .distributed import values_of_ranks
from .masks import MaskedLayers
from .plan import PruningPlan
from .schedule import Ramp, last_update_step, planned_sparsity
from .selection import count_pruned
from .state import COUNTER_KEYS, DAMAGED_HINT, SCHEDULE_KEYS, read_pruning_metadata, read_pruning_tensors


__all__ = ["RestoredState", "check_every_rank_found", "restore_pruning_state"]

logger = logging.get_logger(__name__)

# The `PruningTrainingArguments` field of each schedule value a pruning state records (steps resolved).
ARGUMENT_OF = {
    "target_sparsity": "pruning_target_sparsity",
    "schedule": "pruning_schedule",
    "start": "pruning_start_step",
    "end": "pruning_end_step",
    "frequency": "pruning_frequency",
    "comparison_group": "pruning_comparison_group",
    "layer_adaptive": "pruning_layer_adaptive",
}
# The values that shape the sparsity ramp; a change of any of them re-plans a resumed ramp.
RAMP_KEYS = ("target_sparsity", "schedule", "start", "end")
# Standard deviations of a sampled threshold's quantile error allowed when a restored state is checked.
SAMPLED_SIGMAS = 6.0


@dataclass(frozen=True)
class RestoredState:
    """What a checked pruning state gives the run besides its masks (which it restores into the `MaskedLayers`):
    its counters as saved (the fields added later default for files written before them), and the ramp.

    Args:
        ramp (`Ramp`):
            The ramp the run goes on with: the plan's, re-planned from the restored masks when options changed.
        optimizer_steps (`int`):
            Optimizer steps that updated the weights.
        skipped_steps (`int`):
            Steps the fp16 loss scaler skipped.
        mask_updates (`int`):
            Mask updates done.
        nonfinite_updates (`int`):
            Mask updates skipped because of NaN/inf scores.
        threshold (`float`):
            The last update's threshold (NaN before any).
        preexisting_zeros (`float`):
            The share of the weights that were zero before the schedule pruned.
    """

    ramp: Ramp
    optimizer_steps: int
    skipped_steps: int
    mask_updates: int
    nonfinite_updates: int
    threshold: float
    preexisting_zeros: float


def check_every_rank_found(found: bool, masked: MaskedLayers, global_step: int) -> None:
    """Under FSDP2, refuse a resume where some ranks found their pruning state file and others did not."""
    if masked.shards is None:
        return
    every = values_of_ranks(float(found), masked.shards, masked.device)
    if 0 < sum(every) < len(every):
        missing = [rank for rank, value in enumerate(every) if not value]
        raise ValueError(
            f"Resuming FSDP2 pruning at step {global_step}: ranks {missing} found no {masked.state_name()} of their "
            "own in the checkpoint. A sharded pruning state resumes on the same number of ranks it was saved with, "
            "from a folder every rank can read."
        )


def restore_pruning_state(
    path: str, masked: MaskedLayers, plan: PruningPlan, ramp: Ramp, global_step: int
) -> RestoredState:
    """Restore the masks (and accumulated scores) of the file at ``path`` into ``masked``, once checked.

    Args:
        path (`str`):
            This process's pruning state file in the checkpoint being resumed.
        masked (`MaskedLayers`):
            The run's layers; their masks are replaced by the file's.
        plan (`PruningPlan`):
            The run's options, compared with those the file was saved with.
        ramp (`Ramp`):
            The run's ramp as its options resolve for this run's `max_steps`.
        global_step (`int`):
            The Trainer's global step being resumed: the file's steps (done and skipped) must add up to it.
    """
    method = plan.method.name
    names = [layer.name for layer in masked.layers]
    weights = masked.local_weights()
    problem = None
    try:
        meta = read_pruning_metadata(path, names, method, required=(*SCHEDULE_KEYS, *COUNTER_KEYS))
        saved, layout = meta.get("shard"), masked.shard_layout()
        if saved != layout:
            raise ValueError(
                f"{path} holds the pruning state of {_describe_layout(saved)}, but this process is "
                f"{_describe_layout(layout)} (or the rows differ). A sharded (FSDP2) pruning state resumes with "
                "FSDP2 on the same number of ranks."
            )
        masks, movement = read_pruning_tensors(
            path, names, method, [w.device for w in weights], [tuple(w.shape) for w in weights]
        )
        _check_state_itself(path, meta, masks, weights, global_step, plan, masked)
    except ValueError as error:
        problem = error
    _stop_together(problem, masked)
    masked.masks = masks
    if movement is not None:
        masked.movement = movement
    masked.pruned = masked.count_pruned()
    problem = None
    try:
        if plan.method.updates_masks:
            tolerance = _sparsity_tolerance(masked, plan)
            _check_state_against_its_schedule(path, meta, masked.sparsity, tolerance)
            ramp = _continue_plan(path, meta, plan, ramp, masked, tolerance)
    except ValueError as error:
        problem = error
    _stop_together(problem, masked)
    logger.info(f"Restored pruning masks and schedule (optimizer step {meta['optimizer_steps']}) from {path}.")
    return RestoredState(
        ramp=ramp,
        optimizer_steps=meta["optimizer_steps"],
        skipped_steps=meta["skipped_steps"],
        mask_updates=meta["mask_updates"],
        nonfinite_updates=meta.get("nonfinite_updates", 0),
        threshold=meta["threshold"],
        preexisting_zeros=meta.get("preexisting_zeros", 0.0),
    )


def _stop_together(problem: ValueError | None, masked: MaskedLayers) -> None:
    """Raise ``problem``; under FSDP2 on every rank when any rank has one."""
    if masked.shards is not None:
        flags = values_of_ranks(float(problem is not None), masked.shards, masked.device)
        if problem is None and any(flags):
            ranks = [rank for rank, flag in enumerate(flags) if flag]
            problem = ValueError(
                f"Resuming FSDP2 pruning: ranks {ranks} refused their pruning state file "
                "(their error names the file and what is wrong); every rank stops before training."
            )
    if problem is not None:
        raise problem


def _check_state_itself(path, meta, masks, weights, global_step: int, plan: PruningPlan, masked) -> None:
    """A state whose counters, mask count or (for a method keeping the model's zeros) zeros disagree with it or
    the model is refused."""
    steps, skipped = meta["optimizer_steps"], meta["skipped_steps"]
    if steps + skipped != global_step:
        raise ValueError(
            f"{path} was saved at optimizer step {steps} (+{skipped} skipped), but the checkpoint resumes global "
            f"step {global_step}: the file belongs to another checkpoint. {DAMAGED_HINT}"
        )
    pruned = count_pruned(masks)
    numel = sum(mask.numel() for mask in masks)
    if "masked" in meta and meta["masked"] != pruned:
        raise ValueError(
            f"{path}: its masks prune {pruned} weights ({_share(pruned, numel)}), but its metadata records "
            f"{meta['masked']} ({_share(meta['masked'], numel)}): the file was altered or damaged. {DAMAGED_HINT}"
        )
    if not plan.method.updates_masks:
        for layer, mask, weight in zip(masked.layers, masks, weights, strict=True):
            stray = int((mask & (weight != 0)).sum())
            if stray:
                raise ValueError(
                    f"{path}: its masks prune {stray} weights of {layer.name} that are not zero in the model, but "
                    f"`pruning_method`={plan.method.name!r} masks exactly the model's zeros: the state belongs to "
                    f"another model or was altered. Resume with the model the checkpoint was trained from. "
                    f"{DAMAGED_HINT}"
                )


def _sparsity_tolerance(masked: MaskedLayers, plan: PruningPlan) -> float:
    """How far masks may be from their schedule's sparsity: one weight per rounding group (exact counts are
    ``round(sparsity * n)`` per row, layer or pool), plus ``SAMPLED_SIGMAS`` standard deviations of the quantile
    of a sampled threshold (``sqrt(p (1 - p) / m) <= 0.5 / sqrt(m)`` for ``m`` sampled scores)."""
    layers = masked.layers
    numels = [layer.weight.numel() for layer in layers]  # whole weights, also for DTensors
    total = sum(numels) or 1
    if plan.comparison_group == "per_row":
        groups = sum(layer.weight.shape[1] if layer.transposed else layer.weight.shape[0] for layer in layers)
        pools = []  # every row is decided exactly
    elif plan.comparison_group == "per_layer":
        groups, pools = len(numels), numels
    else:
        groups, pools = 1, [total]
    sampled = [n for n in pools if plan.sample_fraction is not None or n > plan.exact_limit]
    tolerance = groups / total + 1e-9
    if sampled:
        fraction = plan.sample_fraction if plan.sample_fraction is not None else DEFAULT_SAMPLE_FRACTION
        tolerance += SAMPLED_SIGMAS * 0.5 / math.sqrt(min(math.ceil(fraction * n) for n in sampled))
    return tolerance


def _check_state_against_its_schedule(path: str, meta: dict, sparsity: float, tolerance: float) -> None:
    """Masks sparser or denser than the schedule they were saved with allows at their step are refused."""
    step = meta["optimizer_steps"]
    replan = tuple(meta["replan"]) if meta.get("replan") is not None else None

    def planned(at: int) -> float:
        return planned_sparsity(at, meta["target_sparsity"], meta["start"], meta["end"], meta["schedule"], replan)

    described = f"{meta['schedule']} to {meta['target_sparsity']:.2%} from step {meta['start']} to {meta['end']}" + (
        f", re-planned at step {replan[0]}" if replan else ""
    )
    highest = min(1.0, planned(step) + meta.get("preexisting_zeros", 0.0))
    if sparsity > highest + tolerance:
        raise ValueError(
            f"{path}: its masks prune {sparsity:.2%} of the weights at optimizer step {step}, but its schedule "
            f"({described}) allows at most {highest:.2%} there: the file was altered or belongs to another run. "
            f"{DAMAGED_HINT}"
        )
    # Skipped non-finite updates leave masks below their schedule; older files do not record them.
    last = last_update_step(step, meta["start"], meta["end"], meta["frequency"])
    if meta.get("nonfinite_updates") == 0 and last is not None and sparsity < planned(last) - tolerance:
        raise ValueError(
            f"{path}: its masks prune {sparsity:.2%} of the weights at optimizer step {step}, but its schedule "
            f"({described}) reached {planned(last):.2%} at step {last}: the file was altered or belongs to "
            f"another run. {DAMAGED_HINT}"
        )


def _continue_plan(path: str, meta: dict, plan: PruningPlan, ramp: Ramp, masked: MaskedLayers, tolerance: float):
    """The ramp the restored masks go on with when this run's schedule options differ from the checkpoint's."""
    replan = tuple(meta["replan"]) if meta.get("replan") is not None else None
    mine = plan.recorded_schedule(ramp)
    changed = {key: (meta[key], mine[key]) for key in SCHEDULE_KEYS if meta[key] != mine[key]}
    if not changed:
        return ramp.with_steps(ramp.start, ramp.end, replan)
    step, sparsity, target = meta["optimizer_steps"], masked.sparsity, ramp.target_sparsity
    listed = ", ".join(f"`{ARGUMENT_OF[key]}` {old!r} -> {new!r}" for key, (old, new) in changed.items())
    for key in ("comparison_group", "layer_adaptive"):
        if key in changed and masked.pruned:
            old, new = changed[key]
            raise ValueError(
                f"`{ARGUMENT_OF[key]}`={new!r}, but {path} was saved with {old!r} and its masks already prune "
                f"{sparsity:.2%}: masks chosen by one rule cannot be grown to meet another's targets. Resume with "
                f"`{ARGUMENT_OF[key]}`={old!r}, or start a new run from the pruned model."
            )
    if target < sparsity - tolerance:
        raise ValueError(
            f"`pruning_target_sparsity`={target!r}, but {path} (saved with {meta['target_sparsity']!r}) already "
            f"prunes {sparsity:.2%} at optimizer step {step}, and masks only grow: the lower target cannot be met. "
            f"Resume with `pruning_target_sparsity` >= {sparsity:.4g}, or from an earlier checkpoint."
        )
    if not any(key in changed for key in RAMP_KEYS):
        logger.warning(f"Resuming pruning from {path} at optimizer step {step} with {listed}: applied from here.")
        return ramp.with_steps(ramp.start, ramp.end, replan)
    ramp_done = step >= meta["end"] and target == meta["target_sparsity"]
    if ramp_done or target <= sparsity + tolerance:
        # Nothing is left to prune: no update step remains, so sampled thresholds cannot drift the masks.
        logger.warning(
            f"Resuming pruning from {path} at optimizer step {step} with {listed}: its masks prune "
            f"{sparsity:.2%} and the target is {target:.2%}, so nothing is left to prune; the masks stay as "
            "they are."
        )
        return ramp.with_steps(min(ramp.start, step), min(ramp.end, step), None if ramp_done else (step, sparsity))
    if ramp.end <= step:
        raise ValueError(
            f"`pruning_end_step` resolves to optimizer step {ramp.end}, but {path} resumes at step {step} with "
            f"{sparsity:.2%} pruned of the target {target:.2%}: the ramp would end before the run goes on. Set "
            f"`pruning_end_step` after step {step} (the checkpoint's ramp ends at step {meta['end']})."
        )
    begin = max(step, ramp.start)
    logger.warning(
        f"Resuming pruning from {path} at optimizer step {step} with {listed}: the ramp is re-planned from the "
        f"{sparsity:.2%} its masks prune to {target:.2%} at step {ramp.end} ({ramp.schedule}, masks every "
        f"{ramp.frequency} steps)."
    )
    # Not yet started and nothing pruned: the new ramp as it stands is the re-planned one.
    return ramp.with_steps(ramp.start, ramp.end, None if sparsity == 0 and begin == ramp.start else (begin, sparsity))


def _share(count: int, numel: int) -> str:
    return f"{count / numel:.2%}" if numel else "0.00%"


def _describe_layout(layout: dict | None) -> str:
    return (
        "a single-process/DDP run"
        if layout is None
        else f"rank {layout['rank']} of {layout['world_size']} FSDP2 ranks"
    )

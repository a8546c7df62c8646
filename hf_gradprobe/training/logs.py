# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What pruning while training logs: the `pruning/*` metrics of the training log entries, and the run's plan."""

from __future__ import annotations

import math


__all__ = ["LOG_PREFIX", "describe_run", "is_training_log", "pruning_logs"]


LOG_PREFIX = "pruning/"


def is_training_log(logs: dict) -> bool:
    """Whether ``logs`` is a training-loss entry (the ones the pruning metrics go with), not an evaluation."""
    return "loss" in logs or "train_loss" in logs


def pruning_logs(
    target_sparsity: float, sparsity: float, seconds: float, mask_updates: int, threshold: float, skipped_steps: int
) -> dict[str, float]:
    """The metrics of one log entry: scheduled and measured sparsity, time and number of mask updates since
    the last entry, the last threshold (when there is one) and the steps the fp16 loss scaler skipped (if any)."""
    logs = {
        f"{LOG_PREFIX}target_sparsity": round(target_sparsity, 6),
        f"{LOG_PREFIX}sparsity": round(sparsity, 6),
        f"{LOG_PREFIX}mask_update_seconds": round(seconds, 6),
        f"{LOG_PREFIX}mask_updates": mask_updates,
    }
    if math.isfinite(threshold):
        logs[f"{LOG_PREFIX}threshold"] = threshold
    if skipped_steps:
        logs[f"{LOG_PREFIX}skipped_steps"] = skipped_steps
    return logs


def describe_run(plan, ramp, masked) -> str:
    """The line logged at train begin: what is pruned, with which method, along which ramp.

    Args:
        plan ([`PruningPlan`]):
            The run's options.
        ramp ([`Ramp`]):
            Its resolved ramp.
        masked ([`MaskedLayers`]):
            Its layers and masks.
    """
    shards = masked.shards
    where = f", sharded by rows over {len(shards.counts[0])} FSDP2 ranks" if shards else ""
    if not plan.method.updates_masks:
        what = f"keeping {masked.sparsity:.2%} zeros."
    else:
        what = (
            f"{ramp.schedule} ramp to {ramp.target_sparsity:.2%} from optimizer step {ramp.start} to {ramp.end}, "
            f"masks every {ramp.frequency} steps, {plan.comparison_group} thresholds"
            + (", layer-adaptive." if plan.layer_adaptive else ".")
        )
    return f"Pruning {len(masked.layers)} layers ({masked.total:,} weights{where}) with {plan.method.name!r}: {what}"

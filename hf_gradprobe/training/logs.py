# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The `pruning/*` metrics added to the training logs."""

from __future__ import annotations

import math


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

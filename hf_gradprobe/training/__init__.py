# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pruning while training: AdamWPrune "bitter" variants, magnitude, movement and fixed masks."""

from .arguments import PruningTrainingArguments, apply_step_budget, resolve_pruning_options
from .callback import PRUNING_STATE_NAME, PruningCallback
from .importance import METHODS, adam_scores
from .schedule import SCHEDULES, scheduled_sparsity
from .trainer import PruningTrainer

__all__ = [
    "METHODS",
    "PRUNING_STATE_NAME",
    "SCHEDULES",
    "PruningCallback",
    "PruningTrainer",
    "PruningTrainingArguments",
    "adam_scores",
    "apply_step_budget",
    "resolve_pruning_options",
    "scheduled_sparsity",
]

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pruning while training: AdamWPrune "bitter" variants, magnitude, movement and fixed masks.

`PruningCallback` (callback) runs the lifecycle inside any `Trainer`; `PruningTrainer` (trainer) wires it in
from `PruningTrainingArguments` (arguments). One concept per module: `schedule` (sparsity ramp, step options),
`importance` (scores), `selection` (masks and threshold), `optimizer` (AdamW state, skipped steps),
`distributed` (same masks on every DDP rank, row shards under FSDP2), `state` (checkpointed masks and
counters, resume), `logs` (`pruning/*` metrics), `lora` (merging LoRA adapters into a pruned model without
losing its zeros).
"""

from .arguments import PruningTrainingArguments, apply_step_budget, resolve_pruning_options
from .callback import PruningCallback
from .importance import METHODS, adam_scores, method_scores
from .lora import merge_lora_and_keep_zeros
from .schedule import SCHEDULES, scheduled_sparsity
from .state import PRUNING_STATE_NAME
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
    "merge_lora_and_keep_zeros",
    "method_scores",
    "resolve_pruning_options",
    "scheduled_sparsity",
]

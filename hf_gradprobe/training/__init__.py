# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pruning while training: AdamWPrune's bitter variants, magnitude, movement and fixed masks.

`PruningCallback` (callback) runs the lifecycle inside any `Trainer`; `PruningTrainer` (trainer) wires it in
from `PruningTrainingArguments` (arguments), whose options become one validated `PruningPlan` (plan). One concept
per module: `methods` (the registry of pruning methods), `importance` (their pure score functions), `schedule`
(sparsity ramp, step options), `selection` (masks and threshold), `masks` (the masked layers), `optimizer` (AdamW
state, skipped steps), `distributed` (same masks on every DDP rank, row shards under FSDP2, which sharded runs are
supported), `state` (the checkpointed masks and counters), `resume` (restoring them), `integration` (what a
callback learns from its Trainer: the checkpoint resumed, where the metrics go), `logs` (`pruning/*` metrics),
`lora` (merging LoRA adapters into a pruned model without losing its zeros).
"""

from .arguments import PruningTrainingArguments, apply_step_budget
from .callback import PruningCallback
from .lora import merge_lora_and_keep_zeros
from .methods import METHODS, PruningMethod, get_method
from .plan import PruningPlan
from .schedule import SCHEDULES, Ramp, scheduled_sparsity
from .state import PRUNING_STATE_NAME
from .trainer import PruningTrainer


__all__ = [
    "METHODS",
    "PRUNING_STATE_NAME",
    "SCHEDULES",
    "PruningCallback",
    "PruningMethod",
    "PruningPlan",
    "PruningTrainer",
    "PruningTrainingArguments",
    "Ramp",
    "apply_step_budget",
    "get_method",
    "merge_lora_and_keep_zeros",
    "scheduled_sparsity",
]

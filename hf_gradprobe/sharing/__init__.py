# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Saving, describing, inspecting and pushing pruned models.

One concept per module: ``metadata`` (``pruning_config.json``: its name, reading, writing, and whether a model
is pruned), ``save`` (the folder), ``swap`` (replacing a folder safely), ``push`` (the Hub), ``card`` (README.md),
``plot``, ``inspection`` (``sparsity_report``), ``redaction`` (secrets kept out).
"""

from .card import build_model_card
from .inspection import sparsity_report
from .metadata import load_pruning_metadata
from .push import PushToHubError, push_to_hub
from .save import save_pruned


__all__ = [
    "PushToHubError",
    "build_model_card",
    "load_pruning_metadata",
    "push_to_hub",
    "save_pruned",
    "sparsity_report",
]

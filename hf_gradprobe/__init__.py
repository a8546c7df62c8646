# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""hf_gradprobe: sparse language models with Hugging Face Transformers.

Layout: `core` (prunable layers, mask maths, sparsity measurement), `oneshot` (`prune_pretrained`),
`training` (`PruningTrainer`, `PruningCallback`), `evaluation` (perplexity), `sharing` (save, card, Hub),
`cli` (`hf-gradprobe`). Internals stay importable from their modules.
"""

__version__ = "0.2.0"

from .core.layers import PrunableLayer, find_prunable_layers
from .core.sparsity import SparsityReport, measure_sparsity
from .evaluation import PERPLEXITY_METRIC_PATH, PerplexityResult, compute_perplexity
from .models import DEFAULT_MODEL, load_model
from .oneshot import GradProbeConfig, PruningReport, prune_pretrained
from .sharing import PushToHubError, build_model_card, load_pruning_metadata, push_to_hub, save_pruned, sparsity_report
from .training import PruningCallback, PruningTrainer, PruningTrainingArguments


__all__ = [
    "DEFAULT_MODEL",
    "PERPLEXITY_METRIC_PATH",
    "GradProbeConfig",
    "PerplexityResult",
    "PrunableLayer",
    "PruningCallback",
    "PruningReport",
    "PruningTrainer",
    "PruningTrainingArguments",
    "PushToHubError",
    "SparsityReport",
    "build_model_card",
    "compute_perplexity",
    "find_prunable_layers",
    "load_model",
    "load_pruning_metadata",
    "measure_sparsity",
    "prune_pretrained",
    "push_to_hub",
    "save_pruned",
    "sparsity_report",
]

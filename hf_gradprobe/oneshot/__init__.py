# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning of a pretrained model: config, strategies, gradient probe, decision, block pipeline."""

from .config import GradProbeConfig
from .prune import PruningReport, prune_pretrained


__all__ = ["GradProbeConfig", "PruningReport", "prune_pretrained"]

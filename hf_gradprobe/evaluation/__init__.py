# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Evaluation data and perplexity, in memory or through the `evaluate` metric shipped with the package.

``data`` (text sources and token windows), ``perplexity`` (``compute_perplexity``), ``metric`` (where the
`evaluate` metric lives).
"""

from .metric import PERPLEXITY_METRIC_PATH
from .perplexity import PerplexityResult, compute_perplexity


__all__ = ["PERPLEXITY_METRIC_PATH", "PerplexityResult", "compute_perplexity"]

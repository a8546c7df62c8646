# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Where the `evaluate` metric modules shipped with hf_gradprobe live.

``evaluate.load(PERPLEXITY_METRIC_PATH)`` loads the perplexity metric from the installed package, with no
network access (set ``HF_EVALUATE_OFFLINE=1`` to make sure nothing is looked up on the Hub).
"""

from __future__ import annotations

from pathlib import Path


__all__ = ["METRICS_DIR", "PERPLEXITY_METRIC_PATH"]

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
# A folder holding `perplexity.py`: evaluate loads a folder whose script has the folder's name.
PERPLEXITY_METRIC_PATH = str(METRICS_DIR / "perplexity")

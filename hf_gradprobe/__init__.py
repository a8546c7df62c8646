# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""hf_gradprobe: sparse language models with Hugging Face Transformers."""

__version__ = "0.1.0"

from .data import calibration_windows, evaluation_windows, load_text, tokenize_corpus
from .evaluation import PerplexityResult, compute_perplexity
from .layers import PrunableLayer, find_prunable_layers, find_repeated_blocks
from .masking import apply_mask_, global_masks, nm_mask, per_row_mask, sampled_threshold, select_mask
from .models import DEFAULT_MODEL, load_model
from .sparsity import SparsityReport, measure_sparsity
from .config import GradProbeConfig
from .pruning import PruningReport, causal_lm_loss, prune_pretrained
from .metric_path import PERPLEXITY_METRIC_PATH
from .training import PruningCallback, PruningTrainer, PruningTrainingArguments
from .card import build_model_card
from .hub import PushToHubError, load_pruning_metadata, push_folder_to_hub, push_to_hub, save_pruned
from .inspection import sparsity_report

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`GradProbeConfig`: what one-shot pruning does, as a flat dataclass `HfArgumentParser` can read."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from .masking import COMPARISON_GROUPS, parse_nm_pattern, validate_sparsity
from .probing import GRADIENT_STATISTICS
from .strategies import STRATEGIES


CONFIG_NAME = "gradprobe_config.json"
STORAGE_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


@dataclass
class GradProbeConfig:
    """Configuration of :func:`hf_gradprobe.prune_pretrained`.

    > What is pruned

    sparsity, strategy, comparison_group, pattern, targets, ignore.

    > Gradient probing

    probe, reduction_factor, gradient_threshold, gradient_weight, candidate_ratio, gradient_statistic,
    num_probe_samples.

    > Calibration and resources

    num_calibration_samples, calibration_seq_len, calibration_batch_size, seed, layerwise,
    gradient_dtype, gradient_checkpointing.
    """

    sparsity: float = field(default=0.5, metadata={"help": "Fraction of the prunable weights set to zero, in [0, 1)."})
    strategy: str = field(
        default="wanda", metadata={"help": "Proposes the candidates: |W| or Wanda's |W|*||X||.", "choices": list(STRATEGIES)}
    )
    comparison_group: str = field(
        default="per_row",
        metadata={"help": "Where the target sparsity is met exactly: every output row, every layer, or the "
                  "whole model.", "choices": list(COMPARISON_GROUPS)},
    )
    pattern: str = field(
        default="unstructured",
        metadata={"help": "'unstructured' or 'N:M' (N kept in every M consecutive input weights, e.g. 2:4); "
                  "N:M overrides `sparsity` and `comparison_group`."},
    )
    probe: bool = field(default=True, metadata={"help": "Gradient probing on; False gives the plain strategy."})
    reduction_factor: float = field(
        default=0.1, metadata={"help": "Candidates are multiplied by this factor while gradients are re-measured."}
    )
    gradient_threshold: Optional[float] = field(
        default=None,
        metadata={"help": "If set, only candidates whose gradient grew by more than this relative amount "
                  "(g1 > g0 * (1 + threshold)) are judged on the probed gradient g1, the others on the dense "
                  "gradient g0. Default: every candidate on g1."},
    )
    gradient_weight: float = field(
        default=0.3,
        metadata={"help": "Weight of the probed saliency |W|*g against the strategy score when choosing "
                  "which candidates are pruned (both scaled to mean 1 per layer); 0 = strategy order only."},
    )
    candidate_ratio: float = field(
        default=1.25,
        metadata={"help": "Candidates proposed per group, as a multiple of the weights to prune (>= 1); "
                  "the probe chooses which of them are pruned. For N:M: extra candidates per group of M."},
    )
    gradient_statistic: str = field(
        default="max_abs",
        metadata={"help": "How per-batch gradients are aggregated.", "choices": list(GRADIENT_STATISTICS[:3])},
    )
    num_calibration_samples: int = field(default=64, metadata={"help": "Calibration windows (Wanda statistics)."})
    calibration_seq_len: int = field(default=512, metadata={"help": "Tokens per calibration window."})
    calibration_batch_size: int = field(default=4, metadata={"help": "Windows per forward for statistics."})
    num_probe_samples: int = field(
        default=16,
        metadata={"help": "Calibration windows used for the gradient probe (each costs two forward+backward "
                  "passes); the first ones of the calibration set."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the calibration windows and of sampled thresholds."})
    layerwise: bool = field(
        default=False,
        metadata={"help": "Probe decoder blocks in order, each block pruned before the next one is scored "
                  "and probed (later blocks see earlier pruning)."},
    )
    gradient_dtype: str = field(
        default="float16", metadata={"help": "Storage dtype of gradient statistics.", "choices": ["float16", "float32"]}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: saves activation memory, costs ~30-50% "
                  "time. Off by default; turn on only when memory demands it."},
    )
    targets: Optional[list[str]] = field(
        default=None, metadata={"help": "Regular expressions of module names to prune (default: Linear layers "
                                "inside the repeated blocks)."}
    )
    ignore: Optional[list[str]] = field(default=None, metadata={"help": "Regular expressions of modules to keep dense."})

    def __post_init__(self):
        validate_sparsity(self.sparsity, "sparsity")
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("comparison_group", self.comparison_group, COMPARISON_GROUPS)
        parse_nm_pattern(self.pattern, "pattern")
        _check_choice("gradient_statistic", self.gradient_statistic, GRADIENT_STATISTICS[:3])
        if self.gradient_dtype not in STORAGE_DTYPES:
            raise ValueError(f"`gradient_dtype` must be one of ['float16', 'float32'], got {self.gradient_dtype!r}.")
        self.gradient_dtype = "float16" if STORAGE_DTYPES[self.gradient_dtype] == torch.float16 else "float32"
        if not (isinstance(self.reduction_factor, (int, float)) and 0.0 <= self.reduction_factor < 1.0):
            raise ValueError(
                f"`reduction_factor` must be in [0, 1) (candidates are multiplied by it while probing), "
                f"got {self.reduction_factor!r}."
            )
        if self.gradient_threshold is not None and not (
            isinstance(self.gradient_threshold, (int, float)) and self.gradient_threshold >= 0
        ):
            raise ValueError(f"`gradient_threshold` must be None or a number >= 0, got {self.gradient_threshold!r}.")
        if not (isinstance(self.gradient_weight, (int, float)) and self.gradient_weight >= 0):
            raise ValueError(f"`gradient_weight` must be a number >= 0, got {self.gradient_weight!r}.")
        if not (isinstance(self.candidate_ratio, (int, float)) and self.candidate_ratio >= 1.0):
            raise ValueError(f"`candidate_ratio` must be >= 1 (1 = probe only the strategy's choice), got {self.candidate_ratio!r}.")
        for name in ("num_calibration_samples", "calibration_seq_len", "calibration_batch_size", "num_probe_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.calibration_seq_len < 2:
            raise ValueError(f"`calibration_seq_len` must be at least 2 tokens, got {self.calibration_seq_len}.")
        if self.num_probe_samples > self.num_calibration_samples:
            raise ValueError(
                f"`num_probe_samples`={self.num_probe_samples} exceeds `num_calibration_samples`="
                f"{self.num_calibration_samples}: the probe uses calibration windows. Lower it or add calibration samples."
            )
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if isinstance(self.ignore, str):
            self.ignore = [self.ignore]
        if not self.probe and self.candidate_ratio != 1.25:
            warnings.warn("`candidate_ratio` is ignored when `probe=False`.", stacklevel=3)

    @property
    def storage_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.gradient_dtype]

    @property
    def method(self) -> str:
        """Short name used in reports and model cards, e.g. ``gradprobe-wanda`` or ``wanda``."""
        return f"gradprobe-{self.strategy}" if self.probe else self.strategy

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory`={save_directory!r} is a file; give a folder.")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w") as f:
            f.write(self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, values: dict) -> GradProbeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(
                f"Ignoring unknown GradProbeConfig keys {unknown} (saved by a newer hf_gradprobe? `pip install -U hf_gradprobe`).",
                stacklevel=2,
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GradProbeConfig:
        """Load from a JSON file or a folder holding ``gradprobe_config.json``."""
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
        with open(file) as f:
            return cls.from_dict(json.load(f))


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")

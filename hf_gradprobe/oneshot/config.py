# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`GradProbeConfig`: what one-shot pruning does, as a flat dataclass `HfArgumentParser` can read."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import torch

from ..core.masking import COMPARISON_GROUPS, parse_nm_pattern, validate_sparsity
from ..core.runtime import DTYPES, dtype_name
from .probing import GRADIENT_STATISTICS
from .strategies import STRATEGIES


# The one metadata file of a pruned model; the config is stored in it once, under "config".
CONFIG_NAME = "pruning_config.json"
GRADIENT_DTYPES = ("float16", "float32")
RECONSTRUCTIONS = ("none", "admm", "sparsegpt")
PROBE_LOSSES = ("lm", "kl")
RECONSTRUCTION_ORDERS = ("sequential", "parallel")


@dataclass
class GradProbeConfig:
    """Configuration of :func:`hf_gradprobe.prune_pretrained`.

    > What is pruned

    target_sparsity, strategy, comparison_group, pattern, targets, ignore.

    > Gradient probing

    probe, reduction_factor, gradient_threshold, gradient_weight, candidate_ratio, gradient_statistic,
    num_probe_samples.

    > Calibration and resources

    num_calibration_samples, calibration_seq_len, calibration_batch_size, calibration_seed, layerwise,
    gradient_dtype, probe_gradient_checkpointing.
    """

    target_sparsity: float = field(
        default=0.5, metadata={"help": "Fraction of the prunable weights set to zero, in [0, 1)."}
    )
    strategy: str = field(
        default="wanda",
        metadata={"help": "Proposes the candidates: |W| or Wanda's |W|*||X||.", "choices": list(STRATEGIES)},
    )
    comparison_group: str = field(
        default="per_row",
        metadata={
            "help": "Where the target sparsity is met exactly: every output row, every layer, or the whole model.",
            "choices": list(COMPARISON_GROUPS),
        },
    )
    pattern: str = field(
        default="unstructured",
        metadata={
            "help": "'unstructured' or 'N:M' (N kept in every M consecutive input weights, e.g. 2:4); "
            "N:M overrides `target_sparsity` and `comparison_group`."
        },
    )
    probe: bool = field(
        default=False,
        metadata={
            "help": "Gradient probing of the strategy's candidates. Off by default: on validation text it did not improve "
            "on Wanda with reconstruction (see the README); True turns it on."
        },
    )
    reduction_factor: float = field(
        default=0.1, metadata={"help": "Candidates are multiplied by this factor while gradients are re-measured."}
    )
    gradient_threshold: float | None = field(
        default=None,
        metadata={
            "help": "If set, only candidates whose gradient grew by more than this relative amount "
            "(g1 > g0 * (1 + threshold)) are judged on the probed gradient g1, the others on the dense "
            "gradient g0. Default: every candidate on g1."
        },
    )
    gradient_weight: float = field(
        default=0.3,
        metadata={
            "help": "Weight of the probed saliency |W|*g against the strategy score when choosing "
            "which candidates are pruned (both scaled to mean 1 per layer); 0 = strategy order only."
        },
    )
    candidate_ratio: float = field(
        default=1.25,
        metadata={
            "help": "Candidates proposed per group, as a multiple of the weights to prune (>= 1); "
            "the probe chooses which of them are pruned. For N:M: extra candidates per group of M."
        },
    )
    probe_loss: str = field(
        default="lm",
        metadata={
            "help": "What the probe differentiates: 'lm' (next-token cross-entropy on the calibration text) or 'kl' "
            "(KL divergence to the dense model's next-token distribution: function preservation).",
            "choices": list(PROBE_LOSSES),
        },
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
        metadata={
            "help": "Calibration windows used for the gradient probe (each costs two forward+backward "
            "passes); the first ones of the calibration set."
        },
    )
    calibration_seed: int = field(
        default=0, metadata={"help": "Seed of the calibration windows and of sampled thresholds."}
    )
    layerwise: bool = field(
        default=False,
        metadata={
            "help": "Probe decoder blocks in order, each block pruned before the next one is scored "
            "and probed (later blocks see earlier pruning)."
        },
    )
    gradient_dtype: str = field(
        default="float16",
        metadata={"help": "Storage dtype of gradient statistics.", "choices": ["float16", "float32"]},
    )
    probe_gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute activations in the backward pass: saves activation memory, costs ~30-50 percent "
            "time. Off by default; turn on only when memory demands it."
        },
    )
    reconstruction: str = field(
        default="admm",
        metadata={
            "help": "Update the kept weights after pruning so each layer's output on the calibration data is "
            "preserved: 'admm' (least squares on the fixed mask by ADMM), 'sparsegpt' (OBS column sweep on the "
            "fixed mask) or 'none'. Runs block by block on the outputs of the already pruned blocks.",
            "choices": list(RECONSTRUCTIONS),
        },
    )
    reconstruction_damping: float = field(
        default=0.01, metadata={"help": "Added to the Hessian's diagonal, as a fraction of its mean diagonal."}
    )
    reconstruction_iterations: int = field(default=20, metadata={"help": "ADMM iterations per layer."})
    reconstruction_ridge: float = field(
        default=0.0,
        metadata={
            "help": "Ridge term pulling the kept weights toward their original values (fraction of the "
            "Hessian's mean diagonal); guards against fitting the calibration text."
        },
    )
    reconstruction_order: str = field(
        default="sequential",
        metadata={
            "help": "'sequential': each sub-layer's inputs come from the already pruned sub-layers of its block "
            "(o_proj sees the pruned attention); 'parallel': every sub-layer from the block's input.",
            "choices": list(RECONSTRUCTION_ORDERS),
        },
    )
    targets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Regular expressions of module names to prune (default: Linear layers inside the repeated blocks)."
        },
    )
    ignore: list[str] | None = field(default=None, metadata={"help": "Regular expressions of modules to keep dense."})

    def __post_init__(self):
        for name in ("probe", "layerwise", "probe_gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false, got {getattr(self, name)!r}.")
        validate_sparsity(self.target_sparsity, "target_sparsity")
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("comparison_group", self.comparison_group, COMPARISON_GROUPS)
        parse_nm_pattern(self.pattern, "pattern")
        _check_choice("gradient_statistic", self.gradient_statistic, GRADIENT_STATISTICS[:3])
        if DTYPES.get(self.gradient_dtype) not in (torch.float16, torch.float32):
            raise ValueError(f"`gradient_dtype` must be one of {list(GRADIENT_DTYPES)}, got {self.gradient_dtype!r}.")
        self.gradient_dtype = dtype_name(DTYPES[self.gradient_dtype])
        _check_number(
            "reduction_factor", self.reduction_factor, 0.0, 1.0, "candidates are multiplied by it while probing"
        )
        if self.gradient_threshold is not None:
            _check_number("gradient_threshold", self.gradient_threshold, 0.0, None, "or None")
        _check_number("gradient_weight", self.gradient_weight, 0.0, None, "0 = strategy order only")
        _check_number("candidate_ratio", self.candidate_ratio, 1.0, None, "1 = probe only the strategy's choice")
        for name in ("num_calibration_samples", "calibration_seq_len", "calibration_batch_size", "num_probe_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(self.calibration_seed, bool) or not isinstance(self.calibration_seed, int):
            raise ValueError(f"`calibration_seed` must be an integer, got {self.calibration_seed!r}.")
        if self.calibration_seq_len < 2:
            raise ValueError(f"`calibration_seq_len` must be at least 2 tokens, got {self.calibration_seq_len}.")
        if self.probe and self.num_probe_samples > self.num_calibration_samples:
            raise ValueError(
                f"`num_probe_samples`={self.num_probe_samples} exceeds `num_calibration_samples`="
                f"{self.num_calibration_samples}: the probe uses calibration windows. Lower it or add calibration samples."
            )
        blockwise = self.layerwise or self.reconstruction != "none"
        if blockwise and self.comparison_group == "global" and parse_nm_pattern(self.pattern) is None:
            raise ValueError(
                "`comparison_group`='global' needs every layer's scores at once, but `layerwise=True` and "
                "`reconstruction` decide one block at a time. Use comparison_group='per_layer' or 'per_row' with "
                "them, or layerwise=False and reconstruction='none'."
            )
        _check_choice("probe_loss", self.probe_loss, PROBE_LOSSES)
        if self.probe_loss == "kl" and self.gradient_threshold is not None:
            raise ValueError(
                "`probe_loss`='kl' has zero gradient at the dense weights, so `gradient_threshold` (which compares "
                "with the dense gradient) cannot be used with it: set gradient_threshold=None or probe_loss='lm'."
            )
        _check_choice("reconstruction", self.reconstruction, RECONSTRUCTIONS)
        _check_choice("reconstruction_order", self.reconstruction_order, RECONSTRUCTION_ORDERS)
        _check_number("reconstruction_damping", self.reconstruction_damping, 0.0, None, "fraction of mean diag H")
        _check_number("reconstruction_ridge", self.reconstruction_ridge, 0.0, None, "0 = plain least squares")
        if (
            isinstance(self.reconstruction_iterations, bool)
            or not isinstance(self.reconstruction_iterations, int)
            or (self.reconstruction_iterations < 1)
        ):
            raise ValueError(
                f"`reconstruction_iterations` must be a positive integer, got {self.reconstruction_iterations!r}."
            )
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if isinstance(self.ignore, str):
            self.ignore = [self.ignore]

    @property
    def storage_dtype(self) -> torch.dtype:
        return DTYPES[self.gradient_dtype]

    @property
    def method(self) -> str:
        """Short name used in reports and model cards, e.g. ``gradprobe-wanda-admm`` or ``wanda``."""
        name = f"gradprobe-{self.strategy}" if self.probe else self.strategy
        return name if self.reconstruction == "none" else f"{name}-{self.reconstruction}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write ``pruning_config.json`` with this config under ``"config"`` (the layout pruned models carry)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory`={os.fspath(save_directory)!r} is a file; give a folder.")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"config": self.to_dict()}, f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    @classmethod
    def from_dict(cls, values: dict) -> GradProbeConfig:
        if not isinstance(values, dict):
            raise ValueError(f"A GradProbeConfig is read from a mapping of field names, got {type(values).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            warnings.warn(
                f"Ignoring unknown GradProbeConfig keys {unknown} (saved by a newer hf_gradprobe? `pip install -U hf_gradprobe`).",
                stacklevel=2,
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None, token=None) -> GradProbeConfig:
        """Read the config a pruned model was made with, or a config file.

        ``path``: a folder or Hub repo holding ``pruning_config.json`` (the config is its ``"config"`` entry), or a
        JSON/YAML file holding either that layout or the fields themselves.
        """
        from ..sharing.metadata import load_pruning_metadata

        file = os.fspath(path)
        if os.path.isfile(file) and file.endswith((".yaml", ".yml")):
            import yaml

            with open(file, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        else:
            values = load_pruning_metadata(path, revision=revision, token=token)
        if isinstance(values, dict) and isinstance(values.get("config"), dict):
            values = values["config"]
        return cls.from_dict(values)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def _check_number(name: str, value, low: float, high: float | None, hint: str) -> None:
    """``low <= value`` (and ``value < high`` when given); booleans and strings are refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and value >= low
    ok = ok and (high is None or value < high)
    if not ok:
        bounds = f"in [{low:g}, {high:g})" if high is not None else f"a number >= {low:g}"
        raise ValueError(f"`{name}` must be {bounds} ({hint}), got {value!r}.")

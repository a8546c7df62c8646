# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`GradProbeConfig`: what one-shot pruning does, as a flat dataclass `HfArgumentParser` can read."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from ..core.masking import COMPARISON_GROUPS, parse_nm_pattern, validate_sparsity
from ..core.runtime import DTYPES, dtype_name
from ..core.validation import (
    COUNT_MAX,
    SEED_MAX,
    check_bool,
    check_choice,
    check_float,
    check_seed,
    describe_value,
)
from ..sharing.metadata import PRUNING_CONFIG_NAME, load_pruning_metadata, write_metadata_file
from .allocation import ALLOCATIONS
from .probing import GRADIENT_STATISTICS
from .reconstructors import RECONSTRUCTORS
from .refinement import REFINE_TARGETS
from .strategies import STRATEGIES


__all__ = [
    "BOOL_FIELDS",
    "FLOAT_BOUNDS",
    "FLOAT_HINTS",
    "GRADIENT_DTYPES",
    "INT_BOUNDS",
    "PROBE_LOSSES",
    "QUALITY_PRESET",
    "RECONSTRUCTION_ORDERS",
    "SETTING_MAX",
    "GradProbeConfig",
]


GRADIENT_DTYPES = ("float16", "float32")
PROBE_LOSSES = ("lm", "kl")
RECONSTRUCTION_ORDERS = ("sequential", "parallel")
BOOL_FIELDS = ("probe", "layerwise", "probe_gradient_checkpointing")

# (lowest, highest) value of each float field; fractions (upper end 1) exclude 1. The unbounded settings stop at
# 1e6: the decision keys, damped Hessians and growth ratios are fp32, whose resolution (~1e-7) means a larger
# weight or damping no longer lets the other term register at all, and inf or 1e40 overflows to inf or NaN, which
# silently prunes nothing ("non-finite never prunes"). At 1e6 each setting is already at its limit in effect: every
# weight proposed (candidate_ratio, for targets down to 1e-6), the strategy's score lost in the key (gradient_weight),
# no candidate judged on its probed gradient (gradient_threshold), kept weights barely moved (damping, ridge).
SETTING_MAX = 1e6
FLOAT_BOUNDS = {
    "target_sparsity": (0.0, 1.0),
    "reduction_factor": (0.0, 1.0),
    "gradient_threshold": (0.0, SETTING_MAX),
    "gradient_weight": (0.0, SETTING_MAX),
    "candidate_ratio": (1.0, SETTING_MAX),
    "reconstruction_damping": (0.0, SETTING_MAX),
    "reconstruction_ridge": (0.0, SETTING_MAX),
    "loss_weighting": (0.0, 1.0),
    "refine_lr": (0.0, 1.0),
    "allocation_strength": (0.0, 1.0),
    "outlier_threshold": (1.0, SETTING_MAX),
}
# Fractions whose upper end is allowed.
CLOSED_FRACTIONS = ("loss_weighting",)
FLOAT_HINTS = {
    "target_sparsity": "the fraction of prunable weights set to zero, e.g. 0.5",
    "reduction_factor": "candidates are multiplied by it while probing",
    "gradient_threshold": "None judges every candidate on its probed gradient",
    "gradient_weight": "0 = strategy order only",
    "candidate_ratio": "1 = probe only the strategy's choice",
    "reconstruction_damping": "a fraction of the Hessian's mean diagonal, e.g. 0.01",
    "reconstruction_ridge": "0 = plain least squares",
    "loss_weighting": "0 = every token alike, 1 = tokens weighted by the loss's sensitivity alone",
    "refine_lr": "Adam's learning rate, e.g. 1e-4",
    "allocation_strength": "the largest change of a block's sparsity, e.g. 0.08",
    "outlier_threshold": "a score this many times its layer's mean is an outlier, e.g. 5",
}
# (lowest, highest) value of each int field.
INT_BOUNDS = {
    "num_calibration_samples": (1, COUNT_MAX),
    "calibration_seq_len": (2, COUNT_MAX),
    "calibration_batch_size": (1, COUNT_MAX),
    "num_probe_samples": (1, COUNT_MAX),
    "calibration_seed": (0, SEED_MAX),
    "reconstruction_iterations": (1, COUNT_MAX),
    "refine_steps": (0, COUNT_MAX),
    "refine_batch_size": (1, COUNT_MAX),
    "allocation_samples": (1, COUNT_MAX),
}


# The slower "best quality" preset, chosen on validation text (README): masks chosen by the solver, block
# refinement toward the dense model, OWL allocation; about 2-3x the default's time.
QUALITY_PRESET = MappingProxyType(
    {"reconstruction": "alps", "refine_steps": 16, "refine_target": "model", "refine_lr": 3e-4, "allocation": "owl"}
)


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
        metadata={"help": "Proposes the candidates: |W| or Wanda's |W|*||X||.", "choices": STRATEGIES.names()},
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
            "N:M sets `target_sparsity` to 1 - N/M and ignores `comparison_group`."
        },
    )
    probe: bool = field(
        default=False,
        metadata={
            "help": "Gradient probing of the strategy's candidates: they are shrunk, the gradients of the probe loss "
            "re-measured, and the probe decides which of them are pruned."
        },
    )
    reduction_factor: float = field(
        default=0.1,
        metadata={"help": "Candidates are multiplied by this factor while gradients are re-measured, in [0, 1)."},
    )
    gradient_threshold: float | None = field(
        default=None,
        metadata={
            "help": "If set, only candidates whose gradient grew by more than this relative amount "
            "(g1 > g0 * (1 + threshold)) are judged on the probed gradient g1, the others on the dense "
            "gradient g0; in [0, 1e6]. Default: every candidate on g1."
        },
    )
    gradient_weight: float = field(
        default=0.3,
        metadata={
            "help": "Weight of the probed saliency |W|*g against the strategy score when choosing "
            "which candidates are pruned (both scaled to mean 1 per layer), in [0, 1e6]; 0 = strategy order only."
        },
    )
    candidate_ratio: float = field(
        default=1.25,
        metadata={
            "help": "Candidates proposed per group, as a multiple of the weights to prune, in [1, 1e6]; "
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
        metadata={"help": "How per-batch gradients are aggregated.", "choices": list(GRADIENT_STATISTICS)},
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
            "choices": RECONSTRUCTORS.names(),
        },
    )
    reconstruction_damping: float = field(
        default=0.01,
        metadata={"help": "Added to the Hessian's diagonal, as a fraction of its mean diagonal, in [0, 1e6]."},
    )
    reconstruction_iterations: int = field(default=20, metadata={"help": "ADMM iterations per layer."})
    reconstruction_ridge: float = field(
        default=0.0,
        metadata={
            "help": "Ridge term pulling the kept weights toward their original values (fraction of the "
            "Hessian's mean diagonal, in [0, 1e6]); guards against fitting the calibration text."
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
    loss_weighting: float = field(
        default=0.0,
        metadata={
            "help": "Loss-aware layer objectives: each calibration token's share of X^T X is weighted by the squared "
            "gradient of the loss with respect to the layer's outputs there (one backward pass of the dense model), "
            "blended with uniform weights: w = (1 - a) + a * g^2 / mean(g^2). 0 = every token alike; needs a "
            "reconstruction."
        },
    )
    refine_steps: int = field(
        default=0,
        metadata={
            "help": "Block refinement: Adam steps fitting each pruned block's kept weights (masks fixed) to the dense "
            "outputs, after its layers are reconstructed; 0 = off."
        },
    )
    refine_lr: float = field(default=1e-4, metadata={"help": "Adam's learning rate of block refinement."})
    refine_batch_size: int = field(default=4, metadata={"help": "Calibration windows per refinement step."})
    refine_target: str = field(
        default="block",
        metadata={
            "help": "What a refined block's output approaches: 'block' (the dense block on the same inputs) or "
            "'model' (the dense model's hidden states: the block also corrects earlier blocks' errors).",
            "choices": list(REFINE_TARGETS),
        },
    )
    allocation: str | None = field(
        default=None,
        metadata={
            "help": "How the target sparsity is spread over blocks: 'uniform', or 'owl' (blocks with more outlier "
            "scores are pruned less, Yin et al. 2024); the total stays exactly on target. N:M patterns and the global "
            "comparison group set it to 'uniform' (they fix the counts themselves). None (the default): 'owl' where "
            "the configuration reads calibration data anyway, else 'uniform'; the resolved value is recorded.",
            "choices": list(ALLOCATIONS),
        },
    )
    allocation_strength: float = field(
        default=0.08, metadata={"help": "With allocation='owl': the largest change of a block's sparsity."}
    )
    allocation_samples: int = field(
        default=16,
        metadata={
            "help": "With allocation='owl': the calibration windows (the first ones) whose activations give the outlier "
            "ratios; more cost a forward pass each and change the allocation little."
        },
    )
    outlier_threshold: float = field(
        default=5.0,
        metadata={
            "help": "With allocation='owl': a Wanda score above this multiple of its layer's mean is an outlier."
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
        # Every field is checked, each with one message naming it; values are stored in their normal form
        # (floats as float, `pattern` as 'unstructured' or 'N:M', regex lists as lists), so a valid config
        # saved as JSON reads back equal.
        for name in BOOL_FIELDS:
            check_bool(name, getattr(self, name))
        for name, (low, high) in FLOAT_BOUNDS.items():
            setattr(self, name, _check_float_field(name, getattr(self, name), low, high))
        for name, (low, high) in INT_BOUNDS.items():
            if name == "calibration_seed":
                self.calibration_seed = check_seed(name, self.calibration_seed)
            else:
                setattr(self, name, _check_count(name, getattr(self, name), low, high))
        check_choice("strategy", self.strategy, STRATEGIES.names())
        check_choice("comparison_group", self.comparison_group, COMPARISON_GROUPS)
        self.pattern = _normal_pattern(self.pattern)
        nm = parse_nm_pattern(self.pattern)
        if nm is not None:
            # N:M fixes the sparsity: what is recorded and shown is the sparsity the model gets.
            self.target_sparsity = 1.0 - nm[0] / nm[1]
        check_choice("gradient_statistic", self.gradient_statistic, GRADIENT_STATISTICS)
        gradient_dtype = DTYPES.get(self.gradient_dtype) if isinstance(self.gradient_dtype, str) else None
        if gradient_dtype not in (torch.float16, torch.float32):
            check_choice("gradient_dtype", self.gradient_dtype, GRADIENT_DTYPES, hint="'fp16'/'fp32' also work")
        self.gradient_dtype = dtype_name(gradient_dtype)
        check_choice("probe_loss", self.probe_loss, PROBE_LOSSES)
        check_choice("reconstruction", self.reconstruction, RECONSTRUCTORS.names())
        check_choice("reconstruction_order", self.reconstruction_order, RECONSTRUCTION_ORDERS)
        check_choice("refine_target", self.refine_target, REFINE_TARGETS)
        if self.allocation is None:
            self.allocation = "owl" if self._reads_calibration_without_allocation() else "uniform"
        check_choice("allocation", self.allocation, ALLOCATIONS)
        self.targets = _regex_list("targets", self.targets, allow_empty=False)
        self.ignore = _regex_list("ignore", self.ignore, allow_empty=True)
        if self.probe and self.num_probe_samples > self.num_calibration_samples:
            raise ValueError(
                f"`num_probe_samples`={self.num_probe_samples} exceeds `num_calibration_samples`="
                f"{self.num_calibration_samples}: the probe uses calibration windows. Lower it or add calibration samples."
            )
        if self.blockwise and self.comparison_group == "global" and nm is None:
            raise ValueError(
                "`comparison_group`='global' needs every layer's scores at once, but `layerwise=True` and "
                "`reconstruction` decide one block at a time. Use comparison_group='per_layer' or 'per_row' with "
                "them, or layerwise=False and reconstruction='none'."
            )
        if self.probe_loss == "kl" and self.gradient_threshold is not None:
            raise ValueError(
                "`probe_loss`='kl' has zero gradient at the dense weights, so `gradient_threshold` (which compares "
                "with the dense gradient) cannot be used with it: set gradient_threshold=None or probe_loss='lm'."
            )
        reconstructs = RECONSTRUCTORS.get(self.reconstruction).needs_hessian
        if self.loss_weighting > 0 and not reconstructs:
            raise ValueError(
                f"`loss_weighting`={self.loss_weighting} weights the layer objectives of a reconstruction, but "
                "reconstruction='none': choose a reconstruction (e.g. 'admm') or set loss_weighting=0."
            )
        if nm is not None or self.comparison_group == "global":
            # N:M fixes every group's count and one global threshold spreads the zeros by itself: there is nothing to
            # allocate, and what is recorded is what happens.
            self.allocation = "uniform"

    @property
    def storage_dtype(self) -> torch.dtype:
        return DTYPES[self.gradient_dtype]

    def _reads_calibration_without_allocation(self) -> bool:
        # The default allocation (None) is OWL only where its outlier pass costs no data the user must supply.
        return (
            self.probe
            or STRATEGIES.get(self.strategy).needs_activations
            or RECONSTRUCTORS.get(self.reconstruction).needs_hessian
            or self.refine_steps > 0
        )

    @property
    def needs_calibration(self) -> bool:
        """Whether pruning reads calibration data: the strategy's activations, the probe, the reconstruction, the
        refinement or the allocation."""
        return self._reads_calibration_without_allocation() or self.allocation != "uniform"

    @property
    def blockwise(self) -> bool:
        """Whether blocks are pruned one at a time, each on the outputs of the already pruned ones."""
        reconstructs = RECONSTRUCTORS.get(self.reconstruction).needs_hessian
        return self.needs_calibration and (self.layerwise or reconstructs or self.refine_steps > 0)

    @property
    def method(self) -> str:
        """Short name used in reports and model cards, e.g. ``wanda-admm``, ``gradprobe-wanda`` or
        ``wanda-alps-refined-owl``: the strategy (``gradprobe-`` with the probe), the reconstruction, then the
        options that change the result (loss-aware objectives, block refinement, a non-uniform allocation)."""
        parts = [f"gradprobe-{self.strategy}" if self.probe else self.strategy]
        parts += [self.reconstruction] if self.reconstruction != "none" else []
        parts += ["loss-aware"] if self.loss_weighting > 0 else []
        parts += ["refined"] if self.refine_steps > 0 else []
        parts += [self.allocation] if self.allocation != "uniform" else []
        return "-".join(parts)

    @classmethod
    def quality(cls, **overrides) -> GradProbeConfig:
        """The best-quality preset (:data:`QUALITY_PRESET`), slower than the defaults; ``overrides`` replace its fields.

        Example:

        ```python
        >>> config = GradProbeConfig.quality(target_sparsity=0.7)
        >>> config.method
        'wanda-alps-refined-owl'
        ```
        """
        return cls(**{**QUALITY_PRESET, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write ``pruning_config.json`` with this config under ``"config"`` (the layout pruned models carry)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory`={os.fspath(save_directory)!r} is a file; give a folder.")
        os.makedirs(save_directory, exist_ok=True)
        return os.fspath(write_metadata_file(save_directory, {"config": self.to_dict()}, sort_keys=True))

    @classmethod
    def from_dict(cls, values: dict, *, source: str | None = None) -> GradProbeConfig:
        """A config from a mapping of field names; unknown keys warn (a newer version's fields). ``source`` names
        where the mapping was read, for the messages."""
        where = f" in {source}" if source else ""
        if not isinstance(values, dict):
            raise ValueError(
                f"A GradProbeConfig is read from a mapping of field names, got {type(values).__name__}{where}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            warnings.warn(
                f"Ignoring unknown GradProbeConfig keys {unknown}{where} (saved by a newer hf_gradprobe? "
                "`pip install -U hf_gradprobe`).",
                stacklevel=2,
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None, token=None) -> GradProbeConfig:
        """Read the config a pruned model was made with, or a config file.

        ``path``: a folder or Hub repo holding ``pruning_config.json`` (the config is its ``"config"`` entry), or a
        JSON/YAML file holding either that layout or the fields themselves.
        """
        file = os.fspath(path)
        if os.path.isfile(file) and file.endswith((".yaml", ".yml")):
            import yaml

            with open(file, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        else:
            values = load_pruning_metadata(path, revision=revision, token=token)
            if not os.path.isfile(file):
                file = (
                    os.path.join(file, PRUNING_CONFIG_NAME) if os.path.isdir(file) else f"{file}/{PRUNING_CONFIG_NAME}"
                )
        if isinstance(values, dict) and "config" in values:
            if not isinstance(values["config"], dict):
                # The layout pruned models carry, damaged: its fields are not there to read.
                raise ValueError(
                    f'{file!r}: its "config" entry is not a mapping of GradProbeConfig fields (got '
                    f"{type(values['config']).__name__} {describe_value(values['config'])}); the file is damaged. "
                    "Save the config again (`GradProbeConfig.save_pretrained`) or fix the entry."
                )
            values = values["config"]
        return cls.from_dict(values, source=repr(file))


def _check_float_field(name: str, value, low: float, high: float) -> float | None:
    if name == "target_sparsity":
        return validate_sparsity(value, name)  # the wording sparsity has everywhere in the package
    hint = FLOAT_HINTS[name]
    if high <= 1.0:  # a fraction: the upper end is excluded unless it is meaningful
        exclusive = name not in CLOSED_FRACTIONS
        return check_float(name, value, minimum=low, maximum=high, exclusive_maximum=exclusive, hint=hint)
    return check_float(name, value, minimum=low, maximum=high, allow_none=name == "gradient_threshold", hint=hint)


def _check_count(name: str, value, low: int, high: int) -> int:
    """An int in ``[low, high]``, worded as counts are: "a positive integer" (or "an integer >= low")."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return int(value)
    allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
    raise ValueError(f"`{name}` must be {allowed} (at most {high}), got {describe_value(value)}.")


def _normal_pattern(pattern) -> str:
    """'unstructured' or the canonical 'N:M' (``" 02:4"`` -> ``"2:4"``); anything else is refused."""
    if not isinstance(pattern, str):
        raise ValueError(
            f"`pattern` must be a string, 'unstructured' or 'N:M' such as '2:4', got {describe_value(pattern)}."
        )
    pattern = pattern.strip()
    nm = parse_nm_pattern(pattern, "pattern")
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


def _regex_list(name: str, value, *, allow_empty: bool) -> list[str] | None:
    """``None``, or a list of non-empty regular expressions that compile (one string is a list of one)."""
    if value is None:
        return None
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(
            f"`{name}` must be None, a regular expression or a list of them (non-empty strings matched against module "
            f"names, e.g. ['q_proj', 'mlp']), got {describe_value(value)}."
        )
    if not patterns and not allow_empty:
        raise ValueError(
            f"`{name}` must name at least one module pattern (or be None for the default layers), got []."
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"`{name}` holds {pattern!r}, which is not a regular expression ({err}); escape special characters "
                "with a backslash."
            ) from None
    return list(patterns)

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Typed specs of the one-shot benchmarks: a sparsity pattern, the options every row shares, one row's spec.

A ``RowSpec`` is what a row's process receives (``--row-json``, ``to_dict``) and what the results JSON keeps
under each row's ``"spec"``; ``from_dict`` reads the specs of earlier results back (fields added since then take
their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hf_gradprobe import DEFAULT_MODEL
from protocol.splits import CALIBRATION_SAMPLES, CALIBRATION_SEED, TEST_WINDOWS, check_seed, check_texts


__all__ = ["DEFAULT_DEVICE", "DEFAULT_MODEL", "KINDS", "PURPOSES", "Pattern", "RowSpec", "RunOptions"]

DEFAULT_DEVICE = "cpu"
KINDS = ("dense", "ours", "llmcompressor")
PURPOSES = ("benchmark", "tune")


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern and its target: ``unstructured`` at any sparsity, or ``N:M`` (sparsity ``1 - N/M``)."""

    name: str
    target: float

    @classmethod
    def parse(cls, spec: str) -> Pattern:
        """``"unstructured@0.6"`` -> ``Pattern("unstructured", 0.6)``; ``"2:4"`` -> ``Pattern("2:4", 0.5)``."""
        pattern, _, target = spec.partition("@")
        if ":" in pattern:
            n, m = (int(x) for x in pattern.split(":"))
            implied = 1 - n / m
            if target and abs(float(target) - implied) > 1e-9:
                raise ValueError(f"{pattern} means {implied:g} sparsity, not {target}")
            return cls(pattern, implied)
        if pattern != "unstructured":
            raise ValueError(f"pattern {spec!r}: 'unstructured@SPARSITY' or 'N:M'")
        return cls(pattern, float(target or 0.5))

    @classmethod
    def parse_list(cls, specs: str) -> list[tuple[str, Pattern]]:
        """``"unstructured@0.5,2:4"`` -> ``[(spelling, Pattern), ...]`` in the order given."""
        return [(spec, cls.parse(spec)) for spec in specs.split(",")]

    @property
    def is_nm(self) -> bool:
        return ":" in self.name


@dataclass(frozen=True)
class RunOptions:
    """The options every row of a launch shares (the benchmark scripts' common flags)."""

    eval_windows: int = TEST_WINDOWS
    calibration_samples: int = CALIBRATION_SAMPLES
    probe_samples: int = 16
    layerwise_probe_samples: int = 2
    progress: bool = False
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE

    @classmethod
    def from_args(cls, args) -> RunOptions:
        """The options of a parsed ``protocol.cli.benchmark_parser`` command line."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class RowSpec:
    """One row: what to prune (``kind``: dense, ours with GradProbeConfig ``overrides``, or llm-compressor's
    ``method``), at which pattern and target, and which texts to score, on how many windows.

    ``validation_windows``: also score the validation texts on that many windows (choosing a configuration on
    them, never on the test texts); ``grid_overrides``: the tuning grid's entry this row stands for;
    ``calibration_seed``: the seed of the calibration windows (one of ``splits.CALIBRATION_SEEDS``, which the
    validation windows avoid); ``full_test_windows``: score only the first windows of the full test text (smoke
    runs; ``None``, the default, scores it whole).
    """

    name: str
    kind: str
    pattern: str
    target: float
    eval: tuple[str, ...]
    eval_windows: int = TEST_WINDOWS
    calibration_samples: int = CALIBRATION_SAMPLES
    probe_samples: int = 16
    purpose: str = "benchmark"
    progress: bool = False
    overrides: dict = field(default_factory=dict)
    method: str | None = None
    validation_windows: int | None = None
    grid_overrides: dict | None = None
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    calibration_seed: int = CALIBRATION_SEED
    full_test_windows: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "eval", tuple(self.eval))
        check_seed(self.calibration_seed)
        if self.kind not in KINDS:
            raise ValueError(f"row {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.purpose not in PURPOSES:
            raise ValueError(f"row {self.name!r}: purpose {self.purpose!r} is not one of {PURPOSES}")
        if self.kind == "llmcompressor" and not self.method:
            raise ValueError(f"row {self.name!r}: an llm-compressor row needs its method")
        check_texts(self.eval, tuning=self.purpose == "tune")

    @property
    def label(self) -> str:
        seed = f" seed {self.calibration_seed}" if self.calibration_seed != CALIBRATION_SEED else ""
        return f"{self.name} {self.pattern}@{self.target:g}{seed}"

    def to_dict(self) -> dict:
        """The JSON of the spec; fields that do not apply to the row (``None``) are left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["eval"] = list(self.eval)
        return {key: value for key, value in out.items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict) -> RowSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown row spec fields {unknown}")
        return cls(**values)

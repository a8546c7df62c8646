# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The row catalogue: our rows (GradProbeConfig settings), the peer rows (llm-compressor's), and dense.

Our rows pin their configuration: each states every GradProbeConfig setting it means (``PINNED``, then the
row's own ``OUR_ROWS`` entry and reconstruction), so a changed package default changes no row; only the sizes
the launch gives (``SPEC_FIELDS``: sparsity, pattern, calibration windows and seed, probe windows) come from the
row's spec. A row name of ours may end in ``-admm`` or ``-sparsegpt`` (reconstruction of the kept weights):
``wanda-admm`` is ``wanda`` with ``reconstruction="admm"``. ``default`` pins nothing: it is ``GradProbeConfig()``'s
defaults at the time of the launch (each row records the config it resolved to). ``row_spec`` turns a row name
into its ``RowSpec``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from protocol.specs import Pattern, RowSpec, RunOptions


__all__ = [
    "DEFAULT_ROW",
    "LLMC_ROWS",
    "OUR_ROWS",
    "PINNED",
    "RECONSTRUCTION_SUFFIXES",
    "SPEC_FIELDS",
    "our_overrides",
    "renamed",
    "row_spec",
    "validate",
]

# Every GradProbeConfig setting a row of ours pins: GradProbeConfig()'s defaults of the day the rows were pinned
# (before issue 18's options), but reconstruction="none" (a suffix adds one). A field GradProbeConfig gains must be
# added here or to SPEC_FIELDS (tests/test_benchmark_protocol.py fails until it is).
PINNED = {
    "strategy": "wanda",
    "comparison_group": "per_row",
    "probe": False,
    "reduction_factor": 0.1,
    "gradient_threshold": None,
    "gradient_weight": 0.3,
    "candidate_ratio": 1.25,
    "probe_loss": "lm",
    "gradient_statistic": "max_abs",
    "calibration_batch_size": 4,
    "layerwise": False,
    "gradient_dtype": "float16",
    "probe_gradient_checkpointing": False,
    "reconstruction": "none",
    "reconstruction_damping": 0.01,
    "reconstruction_iterations": 20,
    "reconstruction_ridge": 0.0,
    "reconstruction_order": "sequential",
    "loss_weighting": 0.0,
    "refine_steps": 0,
    "refine_lr": 1e-4,
    "refine_batch_size": 4,
    "refine_target": "block",
    "allocation": "uniform",
    "allocation_strength": 0.08,
    "allocation_samples": 16,
    "outlier_threshold": 5.0,
    "targets": None,
    "ignore": None,
}
# The GradProbeConfig fields a row's spec sets (protocol.child.prune_ours), never pinned.
SPEC_FIELDS = (
    "target_sparsity",
    "pattern",
    "num_calibration_samples",
    "calibration_seq_len",
    "calibration_seed",
    "num_probe_samples",
)
DEFAULT_ROW = "default"
# Our rows: name -> what the row changes in PINNED.
OUR_ROWS = {
    "magnitude": {"strategy": "magnitude", "probe": False},
    "wanda": {"strategy": "wanda", "probe": False},
    "gradprobe-magnitude": {"strategy": "magnitude", "probe": True},
    "gradprobe-wanda": {"strategy": "wanda", "probe": True},
    "wanda-layerwise": {"strategy": "wanda", "probe": False, "layerwise": True},
    "gradprobe-magnitude-layerwise": {"strategy": "magnitude", "probe": True, "layerwise": True},
    "gradprobe-wanda-layerwise": {"strategy": "wanda", "probe": True, "layerwise": True},
}
RECONSTRUCTION_SUFFIXES = ("admm", "sparsegpt")
# The peer rows: name -> llm-compressor method (``benchmarks/llmcompressor_baseline.py``, its own environment).
LLMC_ROWS = {"llmcompressor-sparsegpt": "sparsegpt", "llmcompressor-wanda": "wanda"}


def our_overrides(row: str) -> dict:
    """The GradProbeConfig settings of a row of ours: every ``PINNED`` setting, with the ``OUR_ROWS`` entry and
    the ``-admm``/``-sparsegpt`` suffix's reconstruction on top; ``{}`` for ``default`` (the package defaults)."""
    if row == DEFAULT_ROW:
        return {}
    if row in OUR_ROWS:
        return {**PINNED, **OUR_ROWS[row], "reconstruction": "none"}
    base, _, suffix = row.rpartition("-")
    if base in OUR_ROWS and suffix in RECONSTRUCTION_SUFFIXES:
        return {**PINNED, **OUR_ROWS[base], "reconstruction": suffix}
    raise ValueError(
        f"unknown row {row!r}; choose from dense, {DEFAULT_ROW}, {', '.join(LLMC_ROWS)}, or one of "
        f"{', '.join(OUR_ROWS)} optionally ending in -{' / -'.join(RECONSTRUCTION_SUFFIXES)}"
    )


def row_spec(
    row: str,
    pattern: Pattern | None,
    eval_names: Iterable[str],
    options: RunOptions,
    purpose: str = "benchmark",
    extra: dict | None = None,
) -> RowSpec:
    """The spec of a row name: ``dense`` (``pattern`` ignored), llm-compressor's, or ours with ``extra`` overrides
    on top of the catalogue's settings."""
    common = {
        "name": row,
        "eval": tuple(eval_names),
        "eval_windows": options.eval_windows,
        "calibration_samples": options.calibration_samples,
        "probe_samples": options.probe_samples,
        "purpose": purpose,
        "progress": options.progress,
        "model": options.model,
        "device": options.device,
    }
    if row == "dense":
        return RowSpec(kind="dense", pattern="dense", target=0.0, **common)
    if pattern is None:
        raise ValueError(f"row {row!r} needs a pattern")
    if row in LLMC_ROWS:
        return RowSpec(
            kind="llmcompressor", pattern=pattern.name, target=pattern.target, method=LLMC_ROWS[row], **common
        )
    overrides = {**our_overrides(row), **(extra or {})}
    unknown = sorted(set(overrides) & (set(SPEC_FIELDS) - {"num_probe_samples"}))  # probe windows may be tuned
    if unknown:
        raise ValueError(f"row {row!r}: {unknown} come from the launch's options, not from a row's overrides")
    if overrides.get("layerwise") and overrides.get("probe", True):
        common["probe_samples"] = options.layerwise_probe_samples
    return RowSpec(kind="ours", pattern=pattern.name, target=pattern.target, overrides=overrides, **common)


def renamed(spec: RowSpec, name: str, **changes) -> RowSpec:
    """``spec`` under another name (a named row, a grid entry), with ``changes``."""
    return dataclasses.replace(spec, name=name, **changes)


def validate(specs: Iterable[RowSpec]) -> None:
    """Fail before the first row if a row's overrides make no valid GradProbeConfig (a typo would waste an hour)."""
    from hf_gradprobe import GradProbeConfig

    for spec in specs:
        if spec.kind == "ours":
            GradProbeConfig(target_sparsity=spec.target, pattern=spec.pattern, **spec.overrides)
        elif spec.kind == "llmcompressor" and spec.pattern not in ("unstructured", "2:4"):
            raise ValueError(f"{spec.name} runs unstructured or 2:4, not {spec.pattern}")

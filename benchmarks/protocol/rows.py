# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The row catalogue: our rows (GradProbeConfig overrides), the peer rows (llm-compressor's), and dense.

A row name of ours may end in ``-admm`` or ``-sparsegpt`` (reconstruction of the kept weights):
``wanda-admm`` is ``wanda`` with ``reconstruction="admm"``. ``row_spec`` turns a row name into its ``RowSpec``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from protocol.specs import Pattern, RowSpec, RunOptions


__all__ = [
    "LLMC_ROWS",
    "OUR_ROWS",
    "RECONSTRUCTION_SUFFIXES",
    "our_overrides",
    "renamed",
    "row_spec",
    "validate",
]

# Our rows: name -> GradProbeConfig overrides.
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
    """GradProbeConfig overrides of an ``OUR_ROWS`` name, with an optional ``-admm``/``-sparsegpt`` suffix."""
    if row in OUR_ROWS:
        return {**OUR_ROWS[row], "reconstruction": "none"}
    base, _, suffix = row.rpartition("-")
    if base in OUR_ROWS and suffix in RECONSTRUCTION_SUFFIXES:
        return {**OUR_ROWS[base], "reconstruction": suffix}
    raise ValueError(
        f"unknown row {row!r}; choose from dense, {', '.join(LLMC_ROWS)}, or one of {', '.join(OUR_ROWS)} "
        f"optionally ending in -{' / -'.join(RECONSTRUCTION_SUFFIXES)}"
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
    on top of the catalogue's."""
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

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Measured sparsity of a model: per prunable layer, over the prunable weights, over all parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .layers import PrunableLayer, find_prunable_layers
from .masking import nm_violations, parse_nm_pattern


__all__ = [
    "LayerSparsity",
    "SparsityReport",
    "format_sparsity_table",
    "layer_sparsity",
    "measure_sparsity",
    "row_sparsity",
]


@dataclass
class LayerSparsity:
    name: str
    shape: list[int]
    numel: int
    zeros: int
    # N:M compliance, only when a pattern was asked for: groups that hold more than N non-zeros.
    nm_violating_groups: int | None = None
    nm_first_violation: list[int] | None = None  # [row, group] in (out, in) orientation

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    layers: list[LayerSparsity]
    total_parameters: int
    total_zeros: int
    pattern: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def prunable_numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def prunable_zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Zeros over the prunable weights (the number pruning papers report)."""
        return self.prunable_zeros / self.prunable_numel if self.prunable_numel else 0.0

    @property
    def overall_sparsity(self) -> float:
        """Zeros over every parameter of the model (embeddings, norms, biases included)."""
        return self.total_zeros / self.total_parameters if self.total_parameters else 0.0

    @property
    def nm_compliant(self) -> bool | None:
        if self.pattern is None:
            return None
        return all(not layer.nm_violating_groups for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "overall_sparsity": self.overall_sparsity,
            "prunable_parameters": self.prunable_numel,
            "prunable_zeros": self.prunable_zeros,
            "total_parameters": self.total_parameters,
            "total_zeros": self.total_zeros,
            "pattern": self.pattern,
            "nm_compliant": self.nm_compliant,
            "layers": [{**asdict(layer), "sparsity": layer.sparsity} for layer in self.layers],
            **self.extra,
        }

    def to_markdown(self) -> str:
        return format_sparsity_table(self.layers, self.pattern, totals=(self.total_parameters, self.total_zeros))


def layer_sparsity(name: str, weight: torch.Tensor, transposed: bool, nm: tuple[int, int] | None) -> LayerSparsity:
    """Zeros of one weight and, with ``nm``, its N:M violations (``transposed``: stored as (in, out))."""
    entry = LayerSparsity(name=name, shape=list(weight.shape), numel=weight.numel(), zeros=int((weight == 0).sum()))
    if nm is not None:
        matrix = weight.t() if transposed else weight
        if matrix.dim() != 2 or matrix.shape[1] % nm[1]:
            entry.nm_violating_groups = -1  # the pattern cannot apply to this shape
        else:
            bad = nm_violations(matrix, *nm).nonzero()
            entry.nm_violating_groups = int(bad.shape[0])
            entry.nm_first_violation = bad[0].tolist() if bad.shape[0] else None
    return entry


def _field(row, key: str):
    return row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)


def row_sparsity(row: LayerSparsity | Mapping) -> float | None:
    """The sparsity of a table row: its ``sparsity``, else ``zeros / numel``, else ``None``."""
    value = _field(row, "sparsity")
    if isinstance(value, (int, float)):
        return float(value)
    numel = _field(row, "numel")
    return (_field(row, "zeros") or 0) / numel if numel else None


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _pct(value) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "n/a"


def _nm_cells(row) -> list[str]:
    bad, first = _field(row, "nm_violating_groups"), _field(row, "nm_first_violation")
    if bad == -1:
        return ["n/a", "input size not a multiple of M"]
    return [_count(bad), f"({first[0]}, {first[1]})" if first else ("-" if bad is not None else "?")]


def format_sparsity_table(
    rows: Sequence[LayerSparsity | Mapping],
    pattern: str | None = None,
    style: str = "markdown",
    totals: tuple[int, int] | None = None,
) -> str:
    """The per-layer sparsity table, as Markdown or as aligned plain text.

    ``rows`` are ``LayerSparsity`` or their dicts (``name``, ``shape``, ``zeros``, ``numel``/``sparsity``,
    N:M fields); missing values show as ``?``. ``pattern`` adds the N:M columns. ``totals``, as
    ``(total_parameters, total_zeros)``, adds a prunable-total and an all-parameters row.
    """
    if style not in ("markdown", "text"):
        raise ValueError(f"`style` must be 'markdown' or 'text', got {style!r}.")
    head = ["layer", "shape", "zeros", "sparsity"]
    if pattern:
        head += [f"{pattern} violations", "first violation (row, group)"]
    table = [head]
    for row in rows:
        shape = "x".join(str(d) for d in _field(row, "shape") or []) or "?"
        cells = [str(_field(row, "name") or "?"), shape, _count(_field(row, "zeros")), _pct(row_sparsity(row))]
        table.append(cells + (_nm_cells(row) if pattern else []))
    if totals is not None:
        numel = sum(_field(row, "numel") or 0 for row in rows)
        zeros = sum(_field(row, "zeros") or 0 for row in rows)
        total_parameters, total_zeros = totals
        bold = "**{}**" if style == "markdown" else "{}"
        pad = [""] * (len(head) - 4)
        prunable = zeros / numel if numel else 0.0
        overall = total_zeros / total_parameters if total_parameters else 0.0
        table.append(
            [bold.format("prunable total"), f"{numel:,} weights", f"{zeros:,}", bold.format(_pct(prunable)), *pad]
        )
        table.append(["all parameters", f"{total_parameters:,}", f"{total_zeros:,}", _pct(overall), *pad])
    if style == "markdown":
        lines = ["| " + " | ".join(cells) + " |" for cells in table]
        lines.insert(1, "|---|---|" + "---:|" * (len(head) - 2))
        return "\n".join(lines)
    widths = [max(len(cells[i]) for cells in table) for i in range(len(head))]
    # Names and shapes to the left, numbers to the right.
    align = [str.ljust, str.ljust] + [str.rjust] * (len(head) - 2)
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, cells, widths, strict=True)).rstrip() for cells in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@torch.no_grad()
def measure_sparsity(
    model: nn.Module,
    layers: Sequence[PrunableLayer] | None = None,
    pattern: str | None = None,
    targets=None,
    ignore=None,
) -> SparsityReport:
    """Count zeros in ``model``: per prunable layer and in total. ``pattern='N:M'`` also checks compliance."""
    if layers is None:
        layers = find_prunable_layers(model, targets=targets, ignore=ignore)
    nm = parse_nm_pattern(pattern)
    rows = [layer_sparsity(layer.name, layer.weight, layer.transposed, nm) for layer in layers]
    total = zeros = 0
    for param in model.parameters():  # named_parameters de-duplicates tied weights
        total += param.numel()
        zeros += int((param == 0).sum())
    return SparsityReport(layers=rows, total_parameters=total, total_zeros=zeros, pattern=pattern)

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Measured sparsity of a model: per prunable layer, over the prunable weights, over all parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .layers import PrunableLayer, find_prunable_layers
from .masking import nm_violations, parse_nm_pattern


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
        nm = self.pattern is not None
        head = "| layer | shape | sparsity |" + (f" {self.pattern} violations |" if nm else "")
        sep = "|---|---|---:|" + ("---:|" if nm else "")
        rows = [head, sep]
        for layer in self.layers:
            row = f"| {layer.name} | {'x'.join(map(str, layer.shape))} | {layer.sparsity:.2%} |"
            if nm:
                row += f" {layer.nm_violating_groups} |"
            rows.append(row)
        rows.append(f"| **prunable total** | {self.prunable_numel:,} weights | **{self.sparsity:.2%}** |" + (" |" if nm else ""))
        rows.append(f"| all parameters | {self.total_parameters:,} | {self.overall_sparsity:.2%} |" + (" |" if nm else ""))
        return "\n".join(rows)


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
    rows = []
    for layer in layers:
        weight = layer.weight
        entry = LayerSparsity(
            name=layer.name, shape=list(weight.shape), numel=weight.numel(), zeros=int((weight == 0).sum())
        )
        if nm is not None:
            matrix = layer.out_in(weight)
            if matrix.shape[1] % nm[1]:
                entry.nm_violating_groups = -1  # the pattern cannot apply to this shape
            else:
                violations = nm_violations(matrix, *nm)
                bad = violations.nonzero()
                entry.nm_violating_groups = int(bad.shape[0])
                entry.nm_first_violation = bad[0].tolist() if bad.shape[0] else None
        rows.append(entry)
    total = zeros = 0
    for param in model.parameters():  # named_parameters de-duplicates tied weights
        total += param.numel()
        zeros += int((param == 0).sum())
    return SparsityReport(layers=rows, total_parameters=total, total_zeros=zeros, pattern=pattern)

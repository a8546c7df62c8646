# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The per-layer sparsity plot saved beside a pruned model's card."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.sparsity import row_sparsity


PLOT_FILE = "sparsity_per_layer.png"
_BLOCK_NAME = re.compile(r"^(?P<prefix>.*?)\.(?P<block>\d+)\.(?P<kind>.+)$")


def plot_layer_sparsity(
    layers: Sequence[Mapping], path: str | os.PathLike, target: float | None = None, title: str | None = None
) -> Path:
    """Write a PNG of per-layer sparsity: one series per projection kind across blocks, or one bar per layer.

    Uses matplotlib's Agg canvas directly (no pyplot), so it needs no display and touches no global state.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError as err:
        raise ImportError(
            "The sparsity plot needs matplotlib: `pip install matplotlib` (or `hf_gradprobe[card]`)."
        ) from err

    values = [row_sparsity(layer) or 0.0 for layer in layers]
    parsed = [_BLOCK_NAME.match(str(layer.get("name", ""))) for layer in layers]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    blocks = {int(m["block"]) for m in parsed if m}
    if layers and all(parsed) and len(blocks) > 1:
        series: dict[str, list[tuple[int, float]]] = {}
        for match, value in zip(parsed, values, strict=True):
            series.setdefault(match["kind"], []).append((int(match["block"]), value))
        for kind, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=kind.removesuffix(".weight"))
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.bar(range(len(values)), values, color="#4c72b0")
        if len(layers) <= 24:
            ax.set_xticks(
                range(len(layers)),
                [str(layer.get("name", "")) for layer in layers],
                rotation=60,
                ha="right",
                fontsize=6,
            )
        ax.set_xlabel("layer")
    if isinstance(target, (int, float)):
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label=f"target {target:.0%}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=4, loc="lower right")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("zeros / weights")
    ax.set_title(title or "Sparsity per prunable layer", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    # No "Software" entry: the PNG then does not change with the matplotlib version.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The per-layer plot saved beside a pruned model's card: what differs between layers.

Per-row pruning (the default) gives every layer the same sparsity, so a sparsity plot would be a flat line.
The plot shows, in this order of preference, what the one-shot report recorded per layer and varies:

1. ``output_error``: the relative output error of each layer (``||(W - W')X|| / ||WX||`` on the calibration
   inputs) after reconstruction, with ``output_error_pruned`` (before reconstruction) dashed;
2. ``restored``: the share of the strategy's candidates that the gradient probe restored;
3. ``sparsity``.

Each only where it differs between layers: when none does there is no plot (the card says so, and its per-layer
table has the figures).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.sparsity import row_sparsity


__all__ = ["PLOT_FILE", "PLOT_KINDS", "plot_kind", "plot_layer_sparsity"]

PLOT_FILE = "sparsity_per_layer.png"
_BLOCK_NAME = re.compile(r"^(?P<prefix>.*?)\.(?P<block>\d+)\.(?P<kind>.+)$")
# What a plot can show: (title, y-axis label, alt text in the card).
PLOT_KINDS = {
    "output_error": (
        "Relative output error per prunable layer",
        "relative output error",
        "Relative output error of each prunable layer (solid: after reconstruction; dashed: pruned, before it)",
    ),
    "restored": (
        "Share of the candidates the gradient probe restored, per layer",
        "restored / candidates",
        "Share of the strategy's pruning candidates that the gradient probe restored, per prunable layer",
    ),
    "sparsity": ("Sparsity per prunable layer", "zeros / weights", "Sparsity of each prunable layer"),
}
_VARIES = 5e-4


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _restored_share(layer: Mapping) -> float | None:
    candidates, restored = _number(layer.get("candidates")), _number(layer.get("restored"))
    return restored / candidates if candidates and restored is not None else None


def _varies(values) -> bool:
    values = [v for v in values if v is not None]
    return bool(values) and max(values) - min(values) > _VARIES


def plot_kind(layers: Sequence[Mapping]) -> str | None:
    """What the plot of ``layers`` shows.

    Args:
        layers (`Sequence[Mapping]`):
            The per-layer entries of ``pruning_config.json``.

    Returns:
        `str` or `None`: a key of :data:`PLOT_KINDS`, the first of the relative output error, the share of
        candidates restored and the sparsity that differs between layers; ``None`` when none does (per-row groups
        give every layer the same sparsity and the same restored share).
    """
    layers = [layer for layer in layers if isinstance(layer, Mapping)]
    for kind in ("output_error", "restored", "sparsity"):
        if any(_varies(values) for values in _series(layers, kind).values()):
            return kind
    return None


def _series(layers: Sequence[Mapping], kind: str) -> dict[str, list[float | None]]:
    if kind == "output_error":
        out = {"after": [_number(layer.get("output_error")) for layer in layers]}
        before = [_number(layer.get("output_error_pruned")) for layer in layers]
        if any(v is not None for v in before):
            out["before"] = before
        return out
    if kind == "restored":
        return {"after": [_restored_share(layer) for layer in layers]}
    return {"after": [row_sparsity(layer) for layer in layers]}


def plot_layer_sparsity(
    layers: Sequence[Mapping],
    path: str | os.PathLike,
    target: float | None = None,
    title: str | None = None,
    kind: str | None = None,
) -> Path | None:
    """Write a PNG of what differs between layers (see the module docstring).

    One series per projection kind across blocks, or one bar per layer. Uses matplotlib's Agg canvas directly
    (no pyplot), so it needs no display and touches no global state.

    Args:
        layers (`Sequence[Mapping]`):
            The per-layer entries of ``pruning_config.json``.
        path (`str` or `os.PathLike`):
            The PNG to write.
        target (`float`, *optional*):
            The target sparsity, drawn as a line on a sparsity plot.
        title (`str`, *optional*):
            Defaults to the title of the kind shown.
        kind (`str`, *optional*):
            One of :data:`PLOT_KINDS`; defaults to :func:`plot_kind`.

    Returns:
        `Path` or `None`: the file written, or ``None`` (nothing written) when nothing differs between layers.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError as err:
        raise ImportError(
            "The sparsity plot needs matplotlib: `pip install matplotlib` (or `hf_gradprobe[card]`)."
        ) from err

    layers = [layer for layer in layers if isinstance(layer, Mapping)]
    kind = kind or plot_kind(layers)
    if kind is None:
        return None
    if kind not in PLOT_KINDS:
        raise ValueError(f"`kind` must be one of {sorted(PLOT_KINDS)}, got {kind!r}.")
    default_title, ylabel, _ = PLOT_KINDS[kind]
    series = _series(layers, kind)
    parsed = [_BLOCK_NAME.match(str(layer.get("name", ""))) for layer in layers]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    blocks = {int(m["block"]) for m in parsed if m}
    if layers and all(parsed) and len(blocks) > 1:
        colors = {}
        for which, values in series.items():
            lines: dict[str, list[tuple[int, float]]] = {}
            for match, value in zip(parsed, values, strict=True):
                if value is not None:
                    lines.setdefault(match["kind"], []).append((int(match["block"]), value))
            for name, points in lines.items():
                xs, ys = zip(*sorted(points), strict=True)
                label = name.removesuffix(".weight")
                (line,) = ax.plot(
                    xs,
                    ys,
                    marker="o" if which == "after" else None,
                    markersize=3,
                    linewidth=1,
                    linestyle="-" if which == "after" else "--",
                    color=colors.get(label),
                    label=label if which == "after" else None,
                )
                colors[label] = line.get_color()
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        values = [v if v is not None else 0.0 for v in series["after"]]
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
    if kind == "sparsity" and isinstance(target, (int, float)):
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label=f"target {target:.0%}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=4, loc="best")
    if kind == "sparsity":
        ax.set_ylim(0, 1)
    else:
        ax.set_ylim(bottom=0)
    if kind != "output_error":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(ylabel)
    ax.set_title(title or default_title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    # No "Software" entry: the PNG then does not change with the matplotlib version.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path

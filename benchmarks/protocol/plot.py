# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Perplexity against sparsity, as a PNG: what a one-shot result looks like at a glance.

Two panels, in domain (WikiText-2 test: the full text at seqlen 2048 when every plotted row scored it, else the
first windows at 1024) and out of domain (Tiny Shakespeare); one line per row name over the unstructured targets
(50%, 60%, 70%, ...), 2:4 as a star at 50% beside them, a bar spanning the calibration seeds where a row ran more
than one (the line goes through seed 0), dense as a dashed line. Log-scale perplexity; title, legend and axis
labels inside the image. matplotlib is imported only when drawing (Agg canvas, no display, no global state), so the
protocol's other modules (and llm-compressor's environment) never need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from protocol.report import PACKAGED_MODEL_NAME, row_seed
from protocol.specs import DEFAULT_MODEL
from protocol.splits import CALIBRATION_SEED, EVAL_SEQ_LEN, FULL_TEST_SEQ_LEN


__all__ = ["DEFAULT_PLOT_ROWS", "PANELS", "PLOT_LABELS", "in_domain_text", "series", "sparsity_plot"]

DEFAULT_PLOT_ROWS = ("default", "llmcompressor-sparsegpt", "wanda")
# (texts in order of preference, heading)
PANELS = (
    (("test-wikitext-full", "test-wikitext"), "In domain: WikiText-2 test"),
    (("test-shakespeare",), "Out of domain: Tiny Shakespeare"),
)
PLOT_LABELS = {
    "default": "default (GradProbeConfig())",
    "llmcompressor-sparsegpt": "SparseGPT (llm-compressor)",
    "llmcompressor-wanda": "Wanda (llm-compressor)",
    "wanda": "Wanda (ours, no reconstruction)",
    "wanda-admm": "Wanda + ADMM (pinned)",
}
SPARSITY_TICKS = (0.5, 0.6, 0.7)
NM_PATTERN = "2:4"


def _value(values: dict[int, float]) -> float:
    """The value a line goes through: seed 0's, or (only other seeds ran) their mean."""
    if CALIBRATION_SEED in values:
        return values[CALIBRATION_SEED]
    return sum(values.values()) / len(values)


def series(rows: Iterable[dict], name: str, text: str) -> dict[tuple[str, float], dict[int, float]]:
    """``{(pattern, target): {seed: perplexity}}`` of one row name on one text (rows without it left out)."""
    out: dict[tuple[str, float], dict[int, float]] = {}
    for row in rows:
        value = (row.get("perplexity") or {}).get(text)
        if row.get("name") == name and row.get("kind") != "dense" and value is not None:
            out.setdefault((row["pattern"], float(row["target"])), {})[row_seed(row)] = value
    return out


def in_domain_text(rows: Sequence[dict], names: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` that every pruned seed-0 row of ``names`` scored (what the lines go through;
    the other seeds' copies may skip the full test), else the first any of them scored."""
    pruned = [row for row in rows if row.get("name") in names and row.get("kind") != "dense"]
    pruned = [row for row in pruned if row_seed(row) == CALIBRATION_SEED] or pruned
    for text in candidates:
        if pruned and all(text in (row.get("perplexity") or {}) for row in pruned):
            return text
    for text in candidates:
        if any(text in (row.get("perplexity") or {}) for row in pruned):
            return text
    return None


def _text_label(result: dict, text: str) -> str:
    if text == "test-wikitext-full":
        if result.get("full_test_windows"):  # a smoke run's cap
            return f"first {result['full_test_windows']} x {FULL_TEST_SEQ_LEN} tokens only"
        return f"whole text, {FULL_TEST_SEQ_LEN}-token windows"
    if text.startswith("test-"):
        return f"first {result.get('eval_windows', '?')} x {EVAL_SEQ_LEN} tokens"
    return text


def sparsity_plot(result: dict, path: str | Path, names: Sequence[str] = DEFAULT_PLOT_ROWS) -> Path | None:
    """Draw the rows named ``names`` of a one-shot ``result`` into the PNG ``path``; ``None`` (nothing written)
    when none of them is in the result."""
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = result.get("rows", [])
    present = [name for name in names if any(r.get("name") == name and r.get("kind") != "dense" for r in rows)]
    if not present:
        return None
    dense = next((row for row in rows if row.get("kind") == "dense"), None)
    figure = Figure(figsize=(12, 6.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    targets = sorted({float(r["target"]) for r in rows if r.get("name") in present and r["pattern"] == "unstructured"})
    ticks = sorted(set(SPARSITY_TICKS) | set(targets))
    seeds_shown = False
    for axis, (candidates, heading) in zip(axes, PANELS, strict=True):
        text = in_domain_text(rows, present, candidates)
        if text is None:
            axis.set_title(f"{heading}: not measured")
            continue
        for number, name in enumerate(present):
            color = f"C{list(names).index(name) % 10}"  # a row's colour follows --plot-rows, present or not
            points = series(rows, name, text)
            line = sorted((target, seeds) for (pattern, target), seeds in points.items() if pattern == "unstructured")
            if line:
                axis.plot(
                    [target for target, _ in line],
                    [_value(seeds) for _, seeds in line],
                    marker="o",
                    color=color,
                    label=PLOT_LABELS.get(name, name),
                )
            nm_x = 0.5 + 0.01 * (number - (len(present) - 1) / 2)  # side by side at 50%
            spread = list(line)
            if (NM_PATTERN, 0.5) in points:
                seeds = points[(NM_PATTERN, 0.5)]
                axis.scatter(
                    [nm_x],
                    [_value(seeds)],
                    marker="*",
                    s=180,
                    color=color,
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=3,
                    label=None if line else PLOT_LABELS.get(name, name),
                )
                spread.append((nm_x, seeds))
            for x, seeds in spread:
                if len(seeds) > 1:
                    seeds_shown = True
                    axis.vlines(x, min(seeds.values()), max(seeds.values()), color=color, linewidth=4, alpha=0.35)
        dense_value = (dense or {}).get("perplexity", {}).get(text)
        if dense_value is not None:
            axis.axhline(dense_value, color="gray", linestyle="--", linewidth=1)
        axis.set_yscale("log")
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
        axis.yaxis.set_minor_formatter(plain)
        axis.set_xticks(ticks, [f"{tick:.0%}" for tick in ticks])
        axis.set_xlim(min(ticks) - 0.03, max(ticks) + 0.03)
        axis.set_xlabel("sparsity of the decoder blocks' Linear layers (unstructured; star: 2:4)")
        axis.set_ylabel("perplexity (log scale, lower is better)")
        axis.set_title(f"{heading} ({_text_label(result, text)})")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    extra = [
        (Line2D([], [], marker="*", linestyle="", color="gray", markeredgecolor="black", markersize=12), "2:4 (50%)")
    ]
    if seeds_shown:
        extra.append((Line2D([], [], color="gray", linewidth=4, alpha=0.35), "range over calibration seeds"))
    if dense is not None:
        extra.append((Line2D([], [], color="gray", linestyle="--"), "dense"))
    figure.legend(
        handles + [handle for handle, _ in extra],
        labels + [label for _, label in extra],
        loc="lower center",
        ncol=min(4, len(handles) + len(extra)),
        frameon=False,
    )
    model_id = result.get("model_id", DEFAULT_MODEL)
    model = f"{PACKAGED_MODEL_NAME} (Q4_1 GGUF de-quantized to fp32)" if model_id == DEFAULT_MODEL else model_id
    figure.suptitle(
        f"One-shot pruning of {model}: perplexity against sparsity\n"
        f"calibration {result.get('calibration_samples', '?')} x 512 tokens of WikiText-2 valid, no fine-tuning"
    )
    rows_of_legend = -(-(len(handles) + len(extra)) // 4)
    figure.tight_layout(rect=(0, 0.04 + 0.045 * rows_of_legend, 1, 1))
    path = Path(path)
    partial = path.with_name(path.stem + ".partial.png")
    figure.savefig(partial, dpi=110)
    partial.replace(path)
    return path

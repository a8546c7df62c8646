# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Every committed ``benchmarks/results/*.json`` renders again to its committed markdown (``--render``): the
tables line for line; the whole file where no prose was added by hand. No model, nothing run.

python -m pytest -q tests/test_benchmark_reports.py
"""

import json
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import block_memory
import oneshot
import order_time
import training
import tune_oneshot
from protocol import report


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RENDERERS = {
    "oneshot": oneshot.to_markdown,
    "tune_order": tune_oneshot.to_markdown,
    "tune_reconstruction": tune_oneshot.to_markdown,
    "order_time": order_time.to_markdown,
    "block_memory": block_memory.to_markdown,
    "training": training.to_markdown,
    "finetune": training.to_markdown,
}
# Rendered exactly (but the weights note, added since they were launched); the others carry hand-written notes
# (launch history, machine load) and commands whose local --out-dir was shortened by hand, so only their tables are
# compared.
IDENTICAL = ("order_time", "block_memory", "training")
# The results of the packaged SmolLM2 (Q4_1 GGUF, de-quantized): their headers say so.
SMOLLM2 = ("oneshot", "tune_order", "tune_reconstruction", "order_time", "finetune")


def render(name: str) -> str:
    return RENDERERS[name](json.loads((RESULTS / f"{name}.json").read_text()))


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_every_results_file_has_a_renderer():
    assert {path.stem for path in RESULTS.glob("*.json")} == set(RENDERERS)


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_results_render_to_their_committed_markdown(name):
    rendered, committed = render(name), (RESULTS / f"{name}.md").read_text()
    assert table_lines(rendered) == table_lines(committed)
    note = report.PACKAGED_WEIGHTS + "\n\n"
    assert (note in rendered) == (name in SMOLLM2)
    if name in IDENTICAL:
        assert rendered.replace(note, "") == committed.replace(note, "")


def test_header_records_model_and_device():
    result = json.loads((RESULTS / "oneshot.json").read_text())
    first = oneshot.to_markdown(result).splitlines()[0]
    assert first.startswith("SmolLM2-135M-Instruct (fp32, 513 MiB); calibration 64 x 512 tokens")  # old launches
    rows = [{**row, "model_dtype": "bfloat16"} for row in result["rows"]]
    other = {**result, "rows": rows, "model_id": "org/causal-lm", "device": "cuda"}
    assert oneshot.to_markdown(other).startswith("org/causal-lm (bf16, 513 MiB, cuda); calibration")
    assert report.PACKAGED_WEIGHTS in oneshot.to_markdown(result)  # the packaged Q4_1 GGUF, de-quantized
    assert "Q4_1" not in oneshot.to_markdown(other)
    assert report.model_label({**result, "model_id": "smollm2-135m", "device": "cpu"}).endswith("(fp32, 513 MiB, cpu)")


def test_launch_column_only_for_merged_results():
    result = json.loads((RESULTS / "oneshot.json").read_text())
    assert "| launch |" in oneshot.to_markdown(result)
    fresh = {**result, "rows": [{k: v for k, v in row.items() if k != "launch"} for row in result["rows"]]}
    assert "| launch |" not in oneshot.to_markdown(fresh)

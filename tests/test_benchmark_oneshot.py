# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot benchmark's outputs: the plot (perplexity against sparsity), the markdown of a launch with the full
test column and a second seed, and the results saved after every row. Rows are stand-ins: no model, nothing pruned.

python -m pytest -q tests/test_benchmark_oneshot.py
"""

import json
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import oneshot
from protocol import plot, report, runner, splits


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PNG = b"\x89PNG\r\n\x1a\n"
PATTERNS = "unstructured@0.5,unstructured@0.6,unstructured@0.7,2:4"
# wiki test perplexity of the stand-in rows: (name, pattern, target) -> value at seed 0
BASE = {"default": 30.0, "llmcompressor-sparsegpt": 33.0, "wanda": 40.0, "wanda-admm": 30.0}


def fake_row(spec) -> dict:
    """What a row's process would report for ``spec`` (a RowSpec), with made-up numbers that rise with sparsity."""
    scale = 1.0 if spec.kind == "dense" else (1 + 4 * (spec.target - 0.4)) * (1.4 if ":" in spec.pattern else 1.0)
    value = (20.0 if spec.kind == "dense" else BASE.get(spec.name, 35.0)) * scale * (1 + 0.02 * spec.calibration_seed)
    names = list(spec.eval) + (list(splits.VALIDATION_TEXTS) if spec.validation_windows else [])
    row = {
        "name": spec.name,
        "kind": spec.kind,
        "pattern": spec.pattern,
        "target": spec.target,
        "reconstruction": "admm" if spec.kind == "ours" else "none",
        "probe_samples": None,
        "sparsity": spec.target,
        "perplexity": {name: value * (1.5 if "shakespeare" in name else 1.0) for name in names},
        "prune_seconds": 10.0,
        "extra_memory_bytes": 2**20,
        "model_bytes": 513 * 2**20,
        "model_dtype": "float32",
        "calibration_seed": spec.calibration_seed,
    }
    if "test-wikitext-full" in spec.eval:
        row["scored"] = {
            "test-wikitext-full": {"windows": 147, "seq_len": 2048, "tokens": 147 * 2047, "text_tokens": 301_948}
        }
    if spec.kind == "ours":
        from hf_gradprobe import GradProbeConfig

        config = GradProbeConfig(target_sparsity=spec.target, pattern=spec.pattern, **spec.overrides)
        row["config"], row["method"] = config.to_dict(), config.method
    return row


HEADLINE = [
    "--patterns",
    PATTERNS,
    "--rows",
    "dense,wanda,llmcompressor-sparsegpt,wanda-admm,default",
    "--full-test-rows",
    "dense,wanda,llmcompressor-sparsegpt,default",
    "--seed-rows",
    "default,llmcompressor-sparsegpt",
    "--validation-windows",
    "8",
    "--jobs",
    "2",
    "--threads-per-row",
    "1",
]


@pytest.fixture
def launched(tmp_path, monkeypatch):
    """A headline-shaped launch with stand-in rows; after each row, what was on disk then."""
    on_disk = []

    def run_in_process(command, env):
        spec = command("row.json")  # row_command below hands the spec itself
        saved = tmp_path / "headline.json"
        on_disk.append(len(json.loads(saved.read_text())["rows"]) if saved.exists() else 0)
        return fake_row(spec), ""

    monkeypatch.setattr(runner, "row_command", lambda spec, script, out: spec)
    monkeypatch.setattr(runner, "run_in_process", run_in_process)
    monkeypatch.setattr(runner, "LLMC_PYTHON", Path(sys.executable))  # "installed"
    assert oneshot.main([*HEADLINE, "--name", "headline", "--out-dir", str(tmp_path)]) == 0
    return tmp_path, on_disk


def test_headline_launch_saves_after_every_row(launched):
    folder, on_disk = launched
    result = json.loads((folder / "headline.json").read_text())
    # dense, then per pattern: wanda, sparsegpt (+ seed 1), wanda-admm, default (+ seed 1)
    assert len(result["rows"]) == 1 + 4 * 6 and not result["failed"]
    # Each row, as it started, found the rows finished before it already saved (two run at a time).
    assert min(on_disk) == 0 and max(on_disk) >= len(result["rows"]) - 2
    assert result["rows_at_a_time"] == 2 and result["threads_per_row"] == 1
    assert result["seed_rows"] == ["default", "llmcompressor-sparsegpt"]
    assert result["validation_avoids_seeds"] == list(splits.CALIBRATION_SEEDS)
    assert result["package_defaults"]["reconstruction"] and result["pinned"]["reconstruction"] == "none"
    assert result["plot"] == "headline.png" and (folder / "headline.png").read_bytes().startswith(PNG)
    markdown = (folder / "headline.md").read_text()
    assert "![Perplexity against sparsity (`default`, `llmcompressor-sparsegpt`, `wanda`)" in markdown
    assert "(headline.png)" in markdown
    header = markdown.splitlines()[0]
    assert "calibration 64 x 512 tokens of WikiText-2 valid (seeds 0, 1: the seed column says which)" in header
    assert "the whole of WikiText-2 raw test (301,948 tokens) in 147 x 2048 windows" in header
    assert report.PACKAGED_WEIGHTS in markdown
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0].startswith("| method | pattern | target | seed | reconstruction |")
    assert "| ppl wiki test (full, 2048) |" in table[0] and "| ppl wiki valid (val) |" in table[0]
    assert any(line.startswith("| default | 2:4 | 0.5 | 1 |") for line in table)
    assert "* `default` (method `" in markdown and "* `wanda-admm` (method `wanda-admm`)" in markdown


def test_plot_from_a_small_fake_result(tmp_path):
    specs = oneshot.build_specs(oneshot.argument_parser().parse_args(HEADLINE))
    result = {"rows": [fake_row(spec) for spec in specs], "eval_windows": 32, "calibration_samples": 64}
    path = plot.sparsity_plot(result, tmp_path / "fake.png")
    assert path == tmp_path / "fake.png" and path.read_bytes().startswith(PNG) and path.stat().st_size > 20_000
    assert plot.in_domain_text(result["rows"], plot.DEFAULT_PLOT_ROWS, plot.PANELS[0][0]) == "test-wikitext-full"
    points = plot.series(result["rows"], "default", "test-wikitext")
    assert set(points) == {("unstructured", 0.5), ("unstructured", 0.6), ("unstructured", 0.7), ("2:4", 0.5)}
    assert set(points[("2:4", 0.5)]) == {0, 1}  # both seeds: drawn as a range
    # Without the full column on every plotted row, the in-domain panel falls back to the 1024 windows.
    partial = {**result, "rows": [r for r in result["rows"] if r["name"] != "wanda"] + [fake_row(specs[1])]}
    partial["rows"][-1]["perplexity"].pop("test-wikitext-full")
    assert plot.in_domain_text(partial["rows"], plot.DEFAULT_PLOT_ROWS, plot.PANELS[0][0]) == "test-wikitext"
    assert plot.sparsity_plot(result, tmp_path / "none.png", names=["magnitude"]) is None
    assert not (tmp_path / "none.png").exists()


def test_render_committed_oneshot_draws_the_plot(tmp_path, capsys):
    """``--render`` of the committed results: the markdown (tables as committed) and the plot of the rows it has
    (no ``default`` row yet: SparseGPT and Wanda), into --out-dir."""
    assert oneshot.main(["--render", str(RESULTS / "oneshot.json"), "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    committed = (RESULTS / "oneshot.md").read_text()
    assert [line for line in printed.splitlines() if line.startswith("|")] == [
        line for line in committed.splitlines() if line.startswith("|")
    ]
    assert (tmp_path / "oneshot.png").read_bytes().startswith(PNG)
    assert "](oneshot.png)" in printed
    assert "`llmcompressor-sparsegpt`, `wanda`" in printed  # the rows present of the defaults


def test_a_failing_plot_never_stops_a_launch(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plot, "sparsity_plot", broken)
    monkeypatch.setattr(runner, "row_command", lambda spec, script, out: spec)
    monkeypatch.setattr(runner, "run_in_process", lambda command, env: (fake_row(command("row.json")), ""))
    assert oneshot.main(["--rows", "wanda", "--patterns", "2:4", "--name", "x", "--out-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["rows"][0]["name"] == "wanda"
    assert (tmp_path / "x.md").exists() and not (tmp_path / "x.png").exists()
    assert "could not write the further outputs of x: RuntimeError: no fonts" in capsys.readouterr().err

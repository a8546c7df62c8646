# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The finetune benchmark (``benchmarks/training_finetune.py``): arm specs and the report, on synthetic rows (no
model).

python -m pytest -q tests/test_benchmark_finetune.py
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import training  # the command line that builds FinetuneOptions
import training_finetune as finetune
from protocol import runner, splits
from training_finetune_report import finetune_markdown


def options(**overrides) -> finetune.FinetuneOptions:
    return finetune.FinetuneOptions(seeds=(0, 1), **overrides)


def test_specs_same_budget_every_arm_longest_first():
    specs = finetune.finetune_specs(options())
    names = [spec.name for spec in specs]
    assert names[:3] == [finetune.LLMC_ARM, finetune.OURS_ARM, "overhead"]
    # dense and the one-shot arms once (first seed), the gradual arms for every seed
    assert sorted(n for n in names if "/seed1" in n) == sorted(f"{arm}/seed1" for arm in finetune.GRADUAL_ARMS)
    arms = [spec for spec in specs if spec.kind == "finetune"]
    assert len(arms) == len(finetune.FINETUNE_ARMS) + len(finetune.GRADUAL_ARMS)
    assert {(s.steps, s.batch_size, s.seq_len, s.learning_rate) for s in arms} == {(32, 4, 256, 1e-4)}
    assert all(spec.eval == tuple(splits.TEST_TEXTS) for spec in specs)
    overhead = specs[2]
    assert (overhead.kind, overhead.steps, overhead.repeats) == ("overhead", 12, 2)
    assert [spec.name for spec in finetune.finetune_specs(options(overhead_repeats=0))][2] != "overhead"
    with pytest.raises(ValueError, match="unknown arms"):
        options(arms=("dense", "wanda"))


def test_command_line_builds_the_options():
    args = training.argument_parser().parse_args(
        ["--parts", "finetune", "--finetune-arms", "dense", "bitter7", "--finetune-seeds", "0", "1"]
        + ["--finetune-steps", "2", "--jobs", "2", "--threads-per-row", "1", "--start", "0.2"]
    )
    got = training.finetune_options(args)
    assert got == options(arms=("dense", "bitter7"), steps=2, jobs=2, threads_per_row=1, start=0.2)


def test_arm_specs_round_trip_through_the_runner():
    """An arm's spec reaches its process as JSON (``training_finetune.py --row-json``) and reads back equal; the
    specs of the committed results read back too."""
    for spec in finetune.finetune_specs(options()):
        command = runner.row_command(spec, finetune.__file__, "out.json")
        assert command[1:3] == [finetune.__file__, "--row-json"]
        assert finetune.FinetuneArm.from_dict(json.loads(command[3])) == spec
    saved = json.loads((Path(splits.BENCHMARKS) / "results" / "finetune.json").read_text())["finetune@cpu"]
    for row in saved["result"]["rows"]:
        spec = finetune.FinetuneArm.from_dict(row["spec"])
        assert {key: spec.to_dict()[key] for key in row["spec"]} == row["spec"]


def row(arm, seed, wiki, shakespeare, sparsity=0.5, step=10.0):
    return {
        "name": arm,
        "arm": arm,
        "seed": seed,
        "sparsity": sparsity,
        "perplexity": {"test-wikitext": wiki, "test-shakespeare": shakespeare},
        "prune_seconds": 0.0,
        "train_seconds": 320.0,
        "median_step_seconds": step,
        "mask_updates": 0,
        "mask_update_seconds": 0.0,
        "eval_seconds": 260.0,
        "process_seconds": 700.0,
    }


def report(rows, overhead_ratio=1.02):
    overhead = {
        "model": "SmolLM2",
        "repeats": 2,
        "steps": 12,
        "timed_steps_per_run": 10,
        "frequency": 50,
        "plain_median_step_ms": [10_000.0],
        "pruning_median_step_ms": [10_150.0],
        "plain_total_s": [100.0],
        "pruning_total_s": [101.5],
        "mask_update_ms": 3000.0,
        "ratio_median_step": 1.015,
        "ratio_total_time": 1.015,
        "ratio_median_step_plus_amortized_update": overhead_ratio,
    }
    values = dataclasses.asdict(options())
    data = {
        "model": "SmolLM2-135M-Instruct",
        "target_sparsity": values["target_sparsity"],
        "schedule": values["schedule"],
        "calibration_samples": values["calibration_samples"],
        "eval_windows": values["eval_windows"],
        "steps": 32,
        "batch_size": 4,
        "seq_len": 256,
        "tokens_per_step": 1024,
        "learning_rate": 1e-4,
        "start_step": 4,
        "end_step": 23,
        "frequency": 4,
        "sample_fraction": None,
        "timing_warmup": 2,
        "eval": list(splits.TEST_TEXTS),
        "machine": "x86_64",
        "command": "python benchmarks/training.py --parts finetune",
        "failed": [],
        "rows": [*rows, {"arm": "overhead", "name": "overhead", "overhead": overhead}],
    }
    return "\n".join(finetune_markdown(data))


def test_report_targets_and_noise():
    rows = [
        row("dense", 0, 20.0, 38.0, sparsity=0.0),
        row("bitter7", 0, 60.0, 90.0),
        row("bitter7", 1, 62.0, 95.0),
        row(finetune.OURS_ARM, 0, 30.0, 60.0),
        row(finetune.LLMC_ARM, 0, 33.0, 70.0, sparsity=0.500012),
    ]
    text = report(rows)
    assert "beats llmcompressor-sparsegpt+fixed on both texts at exactly 50%: **met**" in text
    assert "measured sparsity 0.500000 vs 0.500012)." in text
    assert "<= 1.03: **met** (x1.020" in text
    assert "| bitter7 | 61.00 (2.00) | 92.50 (5.00) |" in text  # mean (max - min) over the two seeds
    assert "Command: `python benchmarks/training.py --parts finetune`" in text
    assert "masks every 4 steps" in text and "every 50 steps" in text

    rows[3] = row(finetune.OURS_ARM, 0, 30.0, 75.0)  # worse out of domain: not met
    assert "on both texts at exactly 50%: **not met**" in report(rows, overhead_ratio=1.2)
    assert "<= 1.03: **not met**" in report(rows, overhead_ratio=1.2)

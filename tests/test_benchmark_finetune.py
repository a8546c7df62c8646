# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The finetune part of ``benchmarks/training.py``: arm specs and the report, on synthetic rows (no model).

python -m pytest -q tests/test_benchmark_finetune.py
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import protocol
import training


def options(**overrides):
    values = {
        "finetune_arms": list(training.FINETUNE_ARMS),
        "finetune_seeds": [0, 1],
        "finetune_steps": 32,
        "finetune_batch_size": 4,
        "finetune_seq_len": 256,
        "finetune_learning_rate": 1e-4,
        "finetune_frequency": 4,
        "finetune_sample_fraction": None,
        "finetune_timing_warmup": 2,
        "finetune_overhead_steps": 12,
        "finetune_overhead_repeats": 2,
        "target_sparsity": 0.5,
        "schedule": "cubic",
        "start": 0.1,
        "end": 0.7,
        "calibration_samples": 64,
        "eval_windows": 32,
        "eval_before_recovery": False,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_specs_same_budget_every_arm_longest_first():
    specs = training.finetune_specs(options())
    names = [spec["name"] for spec in specs]
    assert names[:3] == [training.LLMC_ARM, training.OURS_ARM, "overhead"]
    # dense and the one-shot arms once (first seed), the gradual arms for every seed
    assert sorted(n for n in names if "/seed1" in n) == sorted(f"{arm}/seed1" for arm in training.GRADUAL_ARMS)
    arms = [spec for spec in specs if spec["kind"] == "finetune"]
    assert len(arms) == len(training.FINETUNE_ARMS) + len(training.GRADUAL_ARMS)
    assert {(s["steps"], s["batch_size"], s["seq_len"], s["learning_rate"]) for s in arms} == {(32, 4, 256, 1e-4)}
    assert all(spec["eval"] == list(protocol.TEST_TEXTS) for spec in specs)
    with pytest.raises(ValueError, match="unknown arms"):
        training.finetune_specs(options(finetune_arms=["dense", "wanda"]))


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
        "plain_median_step_ms": [10_000.0],
        "pruning_median_step_ms": [10_150.0],
        "plain_total_s": [100.0],
        "pruning_total_s": [101.5],
        "mask_update_ms": 3000.0,
        "ratio_median_step": 1.015,
        "ratio_total_time": 1.015,
        "ratio_median_step_plus_amortized_update": overhead_ratio,
    }
    data = {
        **{k: v for k, v in vars(options()).items() if not k.startswith("finetune_")},
        "model": "SmolLM2-135M-Instruct",
        "steps": 32,
        "batch_size": 4,
        "seq_len": 256,
        "tokens_per_step": 1024,
        "learning_rate": 1e-4,
        "start_step": 3,
        "end_step": 22,
        "frequency": 4,
        "sample_fraction": None,
        "timing_warmup": 2,
        "eval": list(protocol.TEST_TEXTS),
        "machine": "x86_64",
        "command": "python benchmarks/training.py --parts finetune",
        "failed": [],
        "rows": [*rows, {"arm": "overhead", "name": "overhead", "overhead": overhead}],
    }
    return "\n".join(training.finetune_markdown(data))


def test_report_targets_and_noise():
    rows = [
        row("dense", 0, 20.0, 38.0, sparsity=0.0),
        row("bitter7", 0, 60.0, 90.0),
        row("bitter7", 1, 62.0, 95.0),
        row(training.OURS_ARM, 0, 30.0, 60.0),
        row(training.LLMC_ARM, 0, 33.0, 70.0, sparsity=0.500012),
    ]
    text = report(rows)
    assert "beats llmcompressor-sparsegpt+fixed on both texts at exactly 50%: **met**" in text
    assert "measured sparsity 0.500000 vs 0.500012)." in text
    assert "<= 1.03: **met** (x1.020" in text
    assert "| bitter7 | 61.00 (2.00) | 92.50 (5.00) |" in text  # mean (max - min) over the two seeds
    assert "Command: `python benchmarks/training.py --parts finetune`" in text

    rows[3] = row(training.OURS_ARM, 0, 30.0, 75.0)  # worse out of domain: not met
    assert "on both texts at exactly 50%: **not met**" in report(rows, overhead_ratio=1.2)
    assert "<= 1.03: **not met**" in report(rows, overhead_ratio=1.2)

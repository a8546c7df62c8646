# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``examples/train_with_pruning.py`` end to end on the packaged SmolLM2 (prune -> recover -> evaluate -> save).

A few steps only (``pytest -m slow``): the recipe runs, the saved model is exactly at the target sparsity, its
card exists and the perplexity is finite.
"""

import json
import math
import os
import subprocess
import sys

import pytest
from testing_utils import REPO_ROOT, WIKITEXT_TEST, require_smollm2

from hf_gradprobe import load_pruning_metadata, sparsity_report


CALIBRATION_TEXT = REPO_ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"

pytestmark = [
    pytest.mark.slow,
    require_smollm2,
    pytest.mark.skipif(
        not (WIKITEXT_TEST.is_file() and CALIBRATION_TEXT.is_file()), reason="needs the shared WikiText-2 files"
    ),
]


def test_prune_recover_evaluate_save(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "examples" / "train_with_pruning.py"),
        "--output_dir",
        str(tmp_path / "out"),
        "--model_dir",
        str(tmp_path / "pruned"),
        "--target_sparsity",
        "0.5",
        "--num_calibration_samples",
        "4",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--seq_len",
        "64",
        "--eval_seq_len",
        "256",
        "--eval_windows",
        "2",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
    ]
    # The example imports this checkout's package, whatever else is installed.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path}
    done = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    folder = tmp_path / "pruned"
    assert summary["model_dir"] == str(folder)
    report = sparsity_report(str(folder))
    assert report.prunable_zeros * 2 == report.prunable_numel  # exactly 50% of the block Linear weights
    assert summary["sparsity"] == summary["one_shot_sparsity"] == 0.5  # recovery kept exactly the one-shot zeros
    assert (folder / "README.md").is_file()
    metadata = load_pruning_metadata(str(folder))
    assert metadata["sparsity"] == 0.5
    assert metadata["training"]["pruning_method"] == "fixed" and metadata["training"]["max_steps"] == 2
    assert math.isfinite(summary["perplexity"]) and metadata["perplexity_after"] == summary["perplexity"]
    assert metadata["perplexity_eval"]["windows"] == 2

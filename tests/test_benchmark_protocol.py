# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot benchmarks' data splits (``benchmarks/protocol.py``), on synthetic token ids: no model, no files.

python -m pytest -q tests/test_benchmark_protocol.py
"""

import argparse
import itertools
import sys
from pathlib import Path

import pytest
import torch

from hf_gradprobe.evaluation.data import calibration_windows


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import protocol
import tune_oneshot


IDS = torch.arange(40_000)


@pytest.mark.parametrize("num_windows,seq_len,seed", [(64, 512, 0), (4, 512, 0), (16, 100, 3)])
def test_calibration_starts_match_calibration_windows(num_windows, seq_len, seed):
    starts = protocol.calibration_starts(IDS.numel(), num_windows, seq_len, seed)
    windows = calibration_windows(IDS, num_windows, seq_len, seed=seed)
    assert len(starts) == num_windows
    assert torch.equal(windows, torch.stack([IDS[s : s + seq_len] for s in starts]))


def test_validation_windows_are_disjoint_from_calibration():
    calib = protocol.calibration_starts(IDS.numel(), 16, 512, 0)
    starts = protocol.validation_starts(IDS.numel(), calib, 512, 1024, 8)
    windows = protocol.validation_windows(IDS, calib, 512, 1024, 8)
    assert windows.shape == (8, 1024)
    assert windows[:, 0].tolist() == starts
    assert all(b >= a + 1024 for a, b in itertools.pairwise(starts))  # non-overlapping, in order
    covered = torch.zeros(IDS.numel(), dtype=torch.bool)
    for start in calib:
        covered[start : start + 512] = True
    assert not covered[windows.reshape(-1)].any()
    protocol.check_disjoint(calib, 512, starts, 1024)


def test_validation_windows_refuse_overlap_and_shortage():
    with pytest.raises(protocol.ProtocolError, match="overlaps calibration"):
        protocol.check_disjoint([1000], 512, [600], 1024)
    protocol.check_disjoint([1000], 512, [1512], 1024)  # touching is not overlapping
    with pytest.raises(protocol.ProtocolError, match="free of the calibration"):
        protocol.validation_starts(4096, [1000, 3000], 512, 1024, 3)


def test_tuning_never_sees_test_texts():
    assert set(tune_oneshot.EVAL_TEXTS) == set(protocol.VALIDATION_TEXTS)
    assert not set(tune_oneshot.EVAL_TEXTS) & set(protocol.TEST_TEXTS)
    for name in protocol.TEST_TEXTS:
        with pytest.raises(protocol.ProtocolError, match="tuning may only look at the validation texts"):
            protocol.check_disjoint(eval_names=[*tune_oneshot.EVAL_TEXTS, name], tuning=True)
    protocol.check_disjoint(eval_names=list(protocol.TEST_TEXTS))  # reporting on test texts is fine
    with pytest.raises(protocol.ProtocolError, match="tuning may only"):  # a child refuses before loading a model
        protocol.run_row({"name": "x", "eval": ["test-wikitext"], "purpose": "tune", "kind": "ours"})


def test_tune_specs_use_validation_texts_only():
    args = argparse.Namespace(
        patterns="unstructured@0.5,2:4",
        base="gradprobe-wanda",
        eval_windows=1,
        calibration_samples=4,
        probe_samples=2,
        layerwise_probe_samples=2,
        progress=False,
        grid='{"admm": {"reconstruction": "admm"}}',
    )
    specs = tune_oneshot.build_specs(args)
    assert [(s["pattern"], s["target"]) for s in specs] == [("unstructured", 0.5), ("2:4", 0.5)]
    for spec in specs:
        assert spec["purpose"] == "tune" and tuple(spec["eval"]) == tune_oneshot.EVAL_TEXTS
        assert spec["overrides"] == {"strategy": "wanda", "probe": True, "reconstruction": "admm"}


def test_texts_are_exact_windows(monkeypatch):
    for path in (protocol.CALIBRATION_TEXT, *protocol.VALIDATION_TEXTS.values(), *protocol.TEST_TEXTS.values()):
        monkeypatch.setitem(protocol._TOKENS, str(path), IDS)
    out = protocol.texts(None, [*protocol.VALIDATION_TEXTS, "test-shakespeare"], 3, calibration_samples=8)
    assert all(ids.shape == (3 * protocol.EVAL_SEQ_LEN,) for ids in out.values())
    assert torch.equal(out["test-shakespeare"], IDS[: 3 * protocol.EVAL_SEQ_LEN])
    calib = protocol.calibration_starts(IDS.numel(), 8, protocol.CALIBRATION_SEQ_LEN, protocol.CALIBRATION_SEED)
    valid = out["valid-wikitext"].reshape(3, -1)[:, 0].tolist()
    protocol.check_disjoint(calib, protocol.CALIBRATION_SEQ_LEN, valid, protocol.EVAL_SEQ_LEN)
    with pytest.raises(protocol.ProtocolError, match="unknown texts"):
        protocol.texts(None, ["wiki.test.raw"], 1)


def test_rows_and_patterns():
    assert protocol.parse_pattern("unstructured@0.6") == ("unstructured", 0.6)
    assert protocol.parse_pattern("2:4") == ("2:4", 0.5)
    with pytest.raises(ValueError):
        protocol.parse_pattern("2:4@0.6")
    assert protocol.our_overrides("wanda-admm") == {"strategy": "wanda", "probe": False, "reconstruction": "admm"}
    assert protocol.our_overrides("gradprobe-wanda")["reconstruction"] == "none"
    with pytest.raises(ValueError, match="unknown row"):
        protocol.our_overrides("wanda-foo")

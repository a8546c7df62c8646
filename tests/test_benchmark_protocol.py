# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot benchmarks' protocol (``benchmarks/protocol/``): data splits, typed specs, the row catalogue and the
runner's commands, on synthetic token ids: no model, no files.

python -m pytest -q tests/test_benchmark_protocol.py
"""

import itertools
import json
import sys
from pathlib import Path

import pytest
import torch

from hf_gradprobe.evaluation.data import calibration_window_starts, calibration_windows


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import oneshot
import tune_oneshot
from protocol import child, rows, runner, splits
from protocol.specs import DEFAULT_MODEL, Pattern, RowSpec, RunOptions


IDS = torch.arange(40_000)
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize("num_windows,seq_len,seed", [(64, 512, 0), (4, 512, 0), (16, 100, 3)])
def test_calibration_starts_match_calibration_windows(num_windows, seq_len, seed):
    starts = splits.calibration_starts(IDS.numel(), num_windows, seq_len, seed)
    assert starts == calibration_window_starts(IDS.numel(), num_windows, seq_len, seed)
    windows = calibration_windows(IDS, num_windows, seq_len, seed=seed)
    assert len(starts) == num_windows
    assert torch.equal(windows, torch.stack([IDS[s : s + seq_len] for s in starts]))


def test_validation_windows_are_disjoint_from_calibration():
    calib = splits.calibration_starts(IDS.numel(), 16, 512, 0)
    starts = splits.validation_starts(IDS.numel(), calib, 512, 1024, 8)
    windows = splits.validation_windows(IDS, calib, 512, 1024, 8)
    assert windows.shape == (8, 1024)
    assert windows[:, 0].tolist() == starts
    assert all(b >= a + 1024 for a, b in itertools.pairwise(starts))  # non-overlapping, in order
    covered = torch.zeros(IDS.numel(), dtype=torch.bool)
    for start in calib:
        covered[start : start + 512] = True
    assert not covered[windows.reshape(-1)].any()
    splits.check_disjoint(calib, 512, starts, 1024)


@pytest.mark.parametrize("num_tokens,samples,seed", [(300_000, 64, 0), (300_000, 4, 0), (120_000, 64, 1)])
def test_splits_disjoint_at_protocol_sizes(num_tokens, samples, seed):
    """At the protocol's sizes (64 x 512 calibration, 16 x 1024 validation; WikiText-2 valid is ~300k tokens),
    no validation token is a calibration token, whatever the seed draws."""
    calib = calibration_window_starts(num_tokens, samples, splits.CALIBRATION_SEQ_LEN, seed)
    valid = splits.validation_starts(
        num_tokens, calib, splits.CALIBRATION_SEQ_LEN, splits.EVAL_SEQ_LEN, splits.VALIDATION_WINDOWS
    )
    calib_tokens = {t for s in calib for t in range(s, s + splits.CALIBRATION_SEQ_LEN)}
    valid_tokens = {t for s in valid for t in range(s, s + splits.EVAL_SEQ_LEN)}
    assert len(valid_tokens) == splits.VALIDATION_WINDOWS * splits.EVAL_SEQ_LEN
    assert not calib_tokens & valid_tokens


def test_validation_windows_refuse_overlap_and_shortage():
    with pytest.raises(splits.ProtocolError, match="overlaps calibration"):
        splits.check_disjoint([1000], 512, [600], 1024)
    splits.check_disjoint([1000], 512, [1512], 1024)  # touching is not overlapping
    with pytest.raises(splits.ProtocolError, match="free of the calibration"):
        splits.validation_starts(4096, [1000, 3000], 512, 1024, 3)


def test_tuning_never_sees_test_texts():
    assert set(tune_oneshot.EVAL_TEXTS) == set(splits.VALIDATION_TEXTS)
    assert not set(tune_oneshot.EVAL_TEXTS) & set(splits.TEST_TEXTS)
    for name in splits.TEST_TEXTS:
        with pytest.raises(splits.ProtocolError, match="tuning may only look at the validation texts"):
            splits.check_texts([*tune_oneshot.EVAL_TEXTS, name], tuning=True)
    splits.check_texts(list(splits.TEST_TEXTS))  # reporting on test texts is fine
    with pytest.raises(splits.ProtocolError, match="unknown texts"):
        splits.check_texts(["wiki.test.raw"])
    spec = {"name": "x", "kind": "ours", "pattern": "unstructured", "target": 0.5, "eval": ["test-wikitext"]}
    with pytest.raises(splits.ProtocolError, match="tuning may only"):  # a child refuses before loading a model
        RowSpec.from_dict({**spec, "purpose": "tune"})
    RowSpec.from_dict(spec)


def test_tune_specs_use_validation_texts_only():
    args = tune_oneshot.argument_parser().parse_args(
        ["--patterns", "unstructured@0.5,2:4", "--eval-windows", "1", "--calibration-samples", "4"]
        + ["--probe-samples", "2", "--grid", '{"admm": {"reconstruction": "admm"}}']
    )
    specs = tune_oneshot.build_specs(args)
    assert [(s.pattern, s.target) for s in specs] == [("unstructured", 0.5), ("2:4", 0.5)]
    for spec in specs:
        assert spec.purpose == "tune" and spec.eval == tune_oneshot.EVAL_TEXTS
        assert spec.overrides == {"strategy": "wanda", "probe": True, "reconstruction": "admm"}
        assert spec.name == "admm" and spec.grid_overrides == {"reconstruction": "admm"}
    with pytest.raises(ValueError, match="row of ours"):
        tune_oneshot.build_specs(tune_oneshot.argument_parser().parse_args(["--base", "llmcompressor-wanda"]))


def test_oneshot_specs_model_device_named_rows():
    args = oneshot.argument_parser().parse_args(
        ["--rows", "dense,wanda-admm,llmcompressor-sparsegpt", "--patterns", "2:4,unstructured@0.6"]
        + ["--model", "some/model", "--device", "cuda", "--validation-windows", "8"]
        + ["--named-rows", '{"kl": {"row": "gradprobe-wanda-admm", "probe_loss": "kl"}}']
        + ["--rows-per-pattern", '{"unstructured@0.6": ["kl"]}']
    )
    specs = oneshot.build_specs(args)
    assert [spec.label for spec in specs] == [
        "dense dense@0",
        "wanda-admm 2:4@0.5",
        "llmcompressor-sparsegpt 2:4@0.5",
        "kl unstructured@0.6",
    ]
    assert {(spec.model, spec.device) for spec in specs} == {("some/model", "cuda")}
    assert [spec.validation_windows for spec in specs] == [None, 8, None, 8]  # ours only
    assert specs[2].method == "sparsegpt" and specs[2].overrides == {}
    assert specs[3].overrides == {"strategy": "wanda", "probe": True, "reconstruction": "admm", "probe_loss": "kl"}
    rows.validate(specs)
    defaults = oneshot.build_specs(oneshot.argument_parser().parse_args(["--rows", "wanda"]))
    assert {(spec.model, spec.device) for spec in defaults} == {(DEFAULT_MODEL, "cpu")}


def test_texts_are_exact_windows(monkeypatch):
    for path in (splits.CALIBRATION_TEXT, *splits.VALIDATION_TEXTS.values(), *splits.TEST_TEXTS.values()):
        monkeypatch.setitem(splits._TOKENS, str(path), IDS)
    out = splits.texts(None, [*splits.VALIDATION_TEXTS, "test-shakespeare"], 3, calibration_samples=8)
    assert all(ids.shape == (3 * splits.EVAL_SEQ_LEN,) for ids in out.values())
    assert torch.equal(out["test-shakespeare"], IDS[: 3 * splits.EVAL_SEQ_LEN])
    windows, calib = splits.calibration(None, 8)
    assert calib == calibration_window_starts(IDS.numel(), 8, splits.CALIBRATION_SEQ_LEN, splits.CALIBRATION_SEED)
    assert torch.equal(windows, calibration_windows(IDS, 8, splits.CALIBRATION_SEQ_LEN, splits.CALIBRATION_SEED))
    valid = out["valid-wikitext"].reshape(3, -1)[:, 0].tolist()
    splits.check_disjoint(calib, splits.CALIBRATION_SEQ_LEN, valid, splits.EVAL_SEQ_LEN)
    with pytest.raises(splits.ProtocolError, match="unknown texts"):
        splits.texts(None, ["wiki.test.raw"], 1)


def test_saved_rowsand_patterns():
    assert Pattern.parse("unstructured@0.6") == Pattern("unstructured", 0.6)
    assert Pattern.parse("2:4") == Pattern("2:4", 0.5) and Pattern.parse("2:4").is_nm
    assert Pattern.parse("unstructured") == Pattern("unstructured", 0.5)
    with pytest.raises(ValueError):
        Pattern.parse("2:4@0.6")
    with pytest.raises(ValueError):
        Pattern.parse("blocks@0.5")
    assert rows.our_overrides("wanda-admm") == {"strategy": "wanda", "probe": False, "reconstruction": "admm"}
    assert rows.our_overrides("gradprobe-wanda")["reconstruction"] == "none"
    with pytest.raises(ValueError, match="unknown row"):
        rows.our_overrides("wanda-foo")
    options = RunOptions(probe_samples=16, layerwise_probe_samples=2)
    layerwise = rows.row_spec("gradprobe-wanda-layerwise", Pattern("2:4", 0.5), splits.TEST_TEXTS, options)
    assert layerwise.probe_samples == 2  # the layerwise probe's windows
    with pytest.raises(ValueError, match="kind"):
        RowSpec(name="x", kind="theirs", pattern="2:4", target=0.5, eval=())
    with pytest.raises(ValueError, match="method"):
        RowSpec(name="x", kind="llmcompressor", pattern="2:4", target=0.5, eval=())


@pytest.mark.parametrize("name", ["oneshot", "tune_order", "tune_reconstruction"])
def test_specs_of_saved_results_round_trip(name):
    """Every row spec in a committed results file reads back as a RowSpec whose JSON holds the same values (but
    the stubs of two rows merged by hand from early launches, without their texts)."""
    saved_rows = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
    saved = [row["spec"] for row in saved_rows if "eval" in row.get("spec", {})]
    assert len(saved) >= len(saved_rows) - 2
    for values in saved:
        spec = RowSpec.from_dict(values)
        again = spec.to_dict()
        assert {key: again[key] for key in values} == values
        assert RowSpec.from_dict(again) == spec
        assert again["model"] == DEFAULT_MODEL and again["device"] == "cpu"  # launches before --model/--device
    with pytest.raises(ValueError, match="unknown row spec fields"):
        RowSpec.from_dict({**saved[0], "colour": "red"})


def test_runner_commands(tmp_path):
    options = RunOptions(eval_windows=2, calibration_samples=4, model="some/model", device="cuda")
    peer = rows.row_spec("llmcompressor-wanda", Pattern("2:4", 0.5), splits.TEST_TEXTS, options)
    command = runner.row_command(peer, "ignored.py", "out.json")
    assert command[:2] == [str(runner.LLMC_PYTHON), str(runner.LLMC_SCRIPT)]
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    assert flags == {
        "--method": "wanda",
        "--pattern": "2:4",
        "--sparsity": "0.5",
        "--calibration-samples": "4",
        "--eval": "test-wikitext,test-shakespeare",
        "--eval-windows": "2",
        "--model": "some/model",
        "--device": "cuda",
        "--json-out": "out.json",
    }
    ours = rows.row_spec("wanda", Pattern("unstructured", 0.5), splits.TEST_TEXTS, options)
    command = runner.row_command(ours, "benchmarks/oneshot.py", "out.json")
    assert command[1:3] == ["benchmarks/oneshot.py", "--row-json"] and command[-2:] == ["--out", "out.json"]
    assert RowSpec.from_dict(json.loads(command[3])) == ours

    # A row's process: the spec in, the row out as JSON (here a stand-in for run_row).
    out = tmp_path / "row.json"
    assert child.child_main([*command[2:4], "--out", str(out)], run=lambda spec: {"name": spec.name}) == 0
    assert json.loads(out.read_text()) == {"name": "wanda"}

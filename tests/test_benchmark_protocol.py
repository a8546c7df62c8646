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
        assert spec.overrides == {**rows.PINNED, "strategy": "wanda", "probe": True, "reconstruction": "admm"}
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
    assert specs[3].overrides == {
        **rows.PINNED,
        "strategy": "wanda",
        "probe": True,
        "reconstruction": "admm",
        "probe_loss": "kl",
    }
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
    assert rows.our_overrides("wanda-admm") == {**rows.PINNED, "strategy": "wanda", "reconstruction": "admm"}
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
        "--calibration-seed": "0",
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


def test_full_test_text_is_the_whole_text_in_2048_windows(monkeypatch):
    """The full WikiText-2 test column: the whole token stream, cut by compute_perplexity into non-overlapping
    2048-token windows, every predicted token scored, the trailing partial window dropped."""
    from hf_gradprobe.evaluation.data import evaluation_windows

    name = "test-wikitext-full"
    assert splits.FULL_TEST_TEXTS[name] == splits.TEST_TEXTS["test-wikitext"]  # wiki.test.raw
    assert name not in splits.TEST_TEXTS  # only the rows that ask for it
    assert splits.eval_seq_len(name) == splits.FULL_TEST_SEQ_LEN == 2048
    assert {splits.eval_seq_len(n) for n in (*splits.TEST_TEXTS, *splits.VALIDATION_TEXTS)} == {splits.EVAL_SEQ_LEN}
    monkeypatch.setitem(splits._TOKENS, str(splits.FULL_TEST_TEXTS[name]), IDS)
    ids = splits.texts(None, [name], num_windows=3)[name]
    assert torch.equal(ids, IDS)  # not 3 windows: the whole text
    windows, labels = evaluation_windows(ids, splits.FULL_TEST_SEQ_LEN)
    count = IDS.numel() // 2048
    assert windows.shape == (count, 2048)
    assert torch.equal(windows.reshape(-1), IDS[: count * 2048])
    assert int((labels[:, 1:] != -100).sum()) == count * 2047  # every predicted token of every window
    capped = splits.texts(None, [name], num_windows=3, full_test_windows=2)[name]
    assert torch.equal(capped, IDS[: 2 * 2048])
    with pytest.raises(splits.ProtocolError, match="tuning may only"):
        splits.check_texts([name], tuning=True)


def test_child_scores_the_full_test_at_2048(monkeypatch):
    """run_row on a tiny Llama: the full test text runs at seq_len 2048 (the model's positions allow it), the
    others at 1024, and the row records what was scored."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=8192,  # SmolLM2-135M's
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.arange(5 * 2048 + 100) % 64
    for path in (splits.CALIBRATION_TEXT, *splits.TEST_TEXTS.values(), *splits.VALIDATION_TEXTS.values()):
        monkeypatch.setitem(splits._TOKENS, str(path), ids)
    monkeypatch.setattr(child, "load_row_model", lambda spec: (model, None))
    eval_names = (*splits.TEST_TEXTS, "test-wikitext-full")
    spec = RowSpec(
        name="dense", kind="dense", pattern="dense", target=0.0, eval=eval_names, eval_windows=2, calibration_samples=2
    )
    row = child.run_row(spec)
    full = row["scored"]["test-wikitext-full"]
    assert full == {**full, "windows": 5, "seq_len": 2048, "tokens": 5 * 2047, "text_tokens": ids.numel()}
    assert row["scored"]["test-wikitext"] | {"seconds": 0} == {
        "windows": 2,
        "seq_len": 1024,
        "tokens": 2 * 1023,
        "text_tokens": 2 * 1024,
        "seconds": 0,
    }
    assert set(row["perplexity"]) == set(eval_names) and row["calibration_seed"] == 0
    model.config.max_position_embeddings = 1024  # a model whose positions stop short is refused, not truncated
    with pytest.raises(ValueError, match="max_position_embeddings"):
        child.run_row(spec)


@pytest.mark.parametrize("num_tokens,samples", [(273_868, 64), (300_000, 64), (120_000, 64), (40_000, 4)])
def test_validation_avoids_every_calibration_seed(num_tokens, samples):
    """The validation windows overlap no calibration window of seed 0 NOR of seed 1 (WikiText-2 valid is 273,868
    SmolLM2 tokens), and every seed's windows are the package's own draw."""
    assert splits.CALIBRATION_SEEDS == (0, 1)
    union = splits.validation_calibration_starts(num_tokens, samples)
    valid = splits.validation_starts(
        num_tokens, union, splits.CALIBRATION_SEQ_LEN, splits.EVAL_SEQ_LEN, splits.VALIDATION_WINDOWS
    )
    valid_tokens = {t for s in valid for t in range(s, s + splits.EVAL_SEQ_LEN)}
    assert len(valid_tokens) == splits.VALIDATION_WINDOWS * splits.EVAL_SEQ_LEN
    for seed in splits.CALIBRATION_SEEDS:
        calib = calibration_window_starts(num_tokens, samples, splits.CALIBRATION_SEQ_LEN, seed)
        assert set(calib) <= set(union)
        splits.check_disjoint(calib, splits.CALIBRATION_SEQ_LEN, valid, splits.EVAL_SEQ_LEN)
        calib_tokens = {t for s in calib for t in range(s, s + splits.CALIBRATION_SEQ_LEN)}
        assert not calib_tokens & valid_tokens


def test_texts_validation_windows_avoid_seed_1(monkeypatch):
    for path in (splits.CALIBRATION_TEXT, *splits.VALIDATION_TEXTS.values()):
        monkeypatch.setitem(splits._TOKENS, str(path), IDS)
    valid = splits.texts(None, ["valid-wikitext"], 8, calibration_samples=8)["valid-wikitext"].reshape(8, -1)
    for seed in splits.CALIBRATION_SEEDS:
        windows, starts = splits.calibration(None, 8, seed)
        assert torch.equal(windows, calibration_windows(IDS, 8, splits.CALIBRATION_SEQ_LEN, seed=seed))
        splits.check_disjoint(starts, splits.CALIBRATION_SEQ_LEN, valid[:, 0].tolist(), splits.EVAL_SEQ_LEN)
        assert not set(windows.reshape(-1).tolist()) & set(valid.reshape(-1).tolist())  # IDS are distinct tokens
    # A seed the validation windows do not avoid is refused, in the splits and in a row's spec.
    with pytest.raises(splits.ProtocolError, match="CALIBRATION_SEEDS"):
        splits.calibration(None, 8, seed=2)
    spec = {"name": "x", "kind": "ours", "pattern": "unstructured", "target": 0.5, "eval": ["test-wikitext"]}
    with pytest.raises(splits.ProtocolError, match="calibration seed 2"):
        RowSpec.from_dict({**spec, "calibration_seed": 2})
    assert RowSpec.from_dict({**spec, "calibration_seed": 1}).label == "x unstructured@0.5 seed 1"


def test_pinned_rows_state_every_setting():
    """Every GradProbeConfig field is either pinned by the catalogue or set by a row's spec (a new field fails
    here until it is placed); the plain rows pin no reconstruction, no refinement, uniform allocation."""
    import dataclasses

    from hf_gradprobe import GradProbeConfig

    fields = {f.name for f in dataclasses.fields(GradProbeConfig)}
    assert set(rows.PINNED) | set(rows.SPEC_FIELDS) == fields
    assert not set(rows.PINNED) & set(rows.SPEC_FIELDS)
    plain = rows.our_overrides("wanda")
    assert plain["reconstruction"] == "none" and plain["allocation"] == "uniform"
    assert plain["refine_steps"] == 0 and plain["loss_weighting"] == 0.0
    assert rows.our_overrides("wanda-admm")["reconstruction"] == "admm"
    assert rows.our_overrides("default") == {}  # the package's defaults, whatever they are at launch


@pytest.mark.parametrize(
    "row", [*rows.OUR_ROWS, *(f"{base}-{suffix}" for base in rows.OUR_ROWS for suffix in rows.RECONSTRUCTION_SUFFIXES)]
)
def test_pinned_rows_differ_from_the_defaults_only_where_they_say(row):
    """A row's config differs from GradProbeConfig() only in what the row says (its catalogue entry and its
    reconstruction) or where the package's defaults have moved since the rows were pinned (then the row keeps its
    pinned value: it means what it meant)."""
    import dataclasses

    from hf_gradprobe import GradProbeConfig

    base, _, suffix = row.rpartition("-")
    said = {**rows.OUR_ROWS[row], "reconstruction": "none"} if row in rows.OUR_ROWS else None
    if said is None:
        said = {**rows.OUR_ROWS[base], "reconstruction": suffix}
    defaults = GradProbeConfig()
    moved = {key for key, value in rows.PINNED.items() if getattr(defaults, key) != value}
    config = GradProbeConfig(target_sparsity=0.6, **rows.our_overrides(row))
    differing = {
        f.name
        for f in dataclasses.fields(GradProbeConfig)
        if f.name not in rows.SPEC_FIELDS and getattr(config, f.name) != getattr(defaults, f.name)
    }
    assert differing <= set(said) | moved
    for key in rows.PINNED:
        assert getattr(config, key) == said.get(key, rows.PINNED[key]), key
    spec = rows.row_spec(row, Pattern("unstructured", 0.6), splits.TEST_TEXTS, RunOptions())
    rows.validate([spec])


def test_default_and_named_rows_over_pinned_ones():
    from hf_gradprobe import GradProbeConfig

    quality = {"row": "wanda-admm", "reconstruction": "alps", "refine_steps": 16, "refine_target": "model"}
    named = json.dumps({"quality": {**quality, "allocation": "owl"}})
    args = oneshot.argument_parser().parse_args(
        ["--rows", "default,quality", "--patterns", "unstructured@0.7", "--named-rows", named]
    )
    default, quality = oneshot.build_specs(args)
    assert default.overrides == {} and default.name == "default"
    config = GradProbeConfig(target_sparsity=0.7, **default.overrides)
    assert config.to_dict() == GradProbeConfig(target_sparsity=0.7).to_dict()
    assert quality.overrides == {
        **rows.our_overrides("wanda-admm"),
        "reconstruction": "alps",
        "refine_steps": 16,
        "refine_target": "model",
        "allocation": "owl",
    }
    rows.validate([default, quality])
    with pytest.raises(ValueError, match="launch's options"):
        rows.row_spec("wanda", Pattern("2:4", 0.5), splits.TEST_TEXTS, RunOptions(), extra={"calibration_seed": 1})


def test_full_test_and_seed_rows():
    args_list = (
        ["--rows", "dense,wanda,default,llmcompressor-sparsegpt", "--patterns", "unstructured@0.5,2:4"]
        + ["--full-test-rows", "dense,wanda,default,llmcompressor-sparsegpt", "--validation-windows", "8"]
        + ["--seed-rows", "default,llmcompressor-sparsegpt", "--eval-windows", "1", "--full-test-windows", "2"]
    )
    specs = oneshot.build_specs(oneshot.argument_parser().parse_args(args_list))
    assert [spec.label for spec in specs] == [
        "dense dense@0",
        "wanda unstructured@0.5",
        "default unstructured@0.5",
        "default unstructured@0.5 seed 1",
        "llmcompressor-sparsegpt unstructured@0.5",
        "llmcompressor-sparsegpt unstructured@0.5 seed 1",
        "wanda 2:4@0.5",
        "default 2:4@0.5",
        "default 2:4@0.5 seed 1",
        "llmcompressor-sparsegpt 2:4@0.5",
        "llmcompressor-sparsegpt 2:4@0.5 seed 1",
    ]
    full = (*splits.TEST_TEXTS, "test-wikitext-full")
    assert [spec.eval == full for spec in specs] == [spec.calibration_seed == 0 for spec in specs]
    assert all(spec.eval == tuple(splits.TEST_TEXTS) for spec in specs if spec.calibration_seed == 1)
    assert {spec.full_test_windows for spec in specs} == {2}
    with_seeds = oneshot.build_specs(oneshot.argument_parser().parse_args([*args_list, "--full-test-seeds"]))
    assert all(spec.eval == full for spec in with_seeds)
    assert [s.validation_windows for s in specs if s.name == "default"] == [8, 8, 8, 8]
    peer = runner.row_command(specs[5], "ignored.py", "out.json")
    flags = dict(zip(peer[2::2], peer[3::2], strict=True))
    assert flags["--calibration-seed"] == "1" and flags["--full-test-windows"] == "2"
    assert flags["--eval"] == "test-wikitext,test-shakespeare"
    peer = runner.row_command(specs[4], "ignored.py", "out.json")
    flags = dict(zip(peer[2::2], peer[3::2], strict=True))
    assert flags["--eval"] == "test-wikitext,test-shakespeare,test-wikitext-full"
    assert flags["--calibration-seed"] == "0" and flags["--full-test-windows"] == "2"
    ours = json.loads(runner.row_command(specs[3], "benchmarks/oneshot.py", "out.json")[3])
    assert ours["calibration_seed"] == 1 and RowSpec.from_dict(ours) == specs[3]
    for option, value in (("--full-test-rows", "wanda,sparsegpt"), ("--seed-rows", "wanda-admm")):
        with pytest.raises(ValueError, match="does not run"):
            oneshot.build_specs(oneshot.argument_parser().parse_args(["--rows", "wanda", option, value]))
    with pytest.raises(ValueError, match="dense calibrates nothing"):
        oneshot.build_specs(oneshot.argument_parser().parse_args(["--rows", "dense", "--seed-rows", "dense"]))

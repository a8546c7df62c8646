# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning never returns a silently wrong result: absurd settings are refused up front, a run that misses
its target says so (report and warning), and windows longer than the model's positions are refused."""

import json
import logging
import re
import warnings

import pytest
import torch
from testing_utils import make_tiny_gpt2, make_tiny_llama, sample_text, save_tiny_model, tiny_gradprobe_config
from testing_utils import token_windows as _windows

from hf_gradprobe import GradProbeConfig, prune_pretrained
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.oneshot.reconstruction import reconstruct_admm, reconstruct_sparsegpt
from hf_gradprobe.oneshot.strategies import STRATEGIES


_config = tiny_gradprobe_config

FLOAT_FIELDS = (
    "target_sparsity",
    "reduction_factor",
    "gradient_threshold",
    "gradient_weight",
    "candidate_ratio",
    "reconstruction_damping",
    "reconstruction_ridge",
)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("hf_gradprobe")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _unchanged(model, before) -> bool:
    return all(torch.equal(before[name], p.detach()) for name, p in model.named_parameters())


# -- item 7: non-finite and absurd floats ----------------------------------------------------------------------


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), 1e40, 10**400], ids=["inf", "-inf", "nan", "1e40", "10**400"]
)
def test_nonfinite_and_absurd_floats_are_refused(field, value):
    with pytest.raises(ValueError, match=f"`{field}`") as err:
        GradProbeConfig(**{field: value})
    assert "\n" not in str(err.value)


def test_each_unbounded_float_has_a_documented_upper_bound():
    from hf_gradprobe.oneshot.config import FLOAT_BOUNDS

    for field in FLOAT_FIELDS:
        low, high = FLOAT_BOUNDS[field]
        assert low == 0.0 or field == "candidate_ratio"
        if high <= 1.0:  # a fraction: [0, 1)
            GradProbeConfig(**{field: 0.9})
            continue
        GradProbeConfig(**{field: high})
        with pytest.raises(ValueError, match=f"`{field}` must be .*{re.escape(f'{high:g}')}.*got"):
            GradProbeConfig(**{field: high * 10})


@pytest.mark.parametrize("reconstruction", ["none", "admm"])
@pytest.mark.parametrize("value", [float("inf"), 1e40])
def test_gradient_weight_inf_is_refused_before_any_work(reconstruction, value):
    model = make_tiny_llama()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="`gradient_weight`"):
        prune_pretrained(
            model,
            _config(reconstruction=reconstruction),
            calibration=_windows(),
            gradient_weight=value,
            progress=False,
        )
    assert _unchanged(model, before)


def test_a_config_changed_after_construction_is_checked_again():
    config = _config()
    config.gradient_weight = float("inf")  # a dataclass field assigned later skips __post_init__
    with pytest.raises(ValueError, match="`gradient_weight`"):
        prune_pretrained(make_tiny_llama(), config, calibration=_windows(), progress=False)


def test_cli_gradient_weight_inf_exits_2(tmp_path, tiny_tokenizer, capsys):
    from hf_gradprobe.cli import main

    model_dir = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "tiny")
    data = tmp_path / "corpus.txt"
    data.write_text(sample_text(600, seed=1) + "\n", encoding="utf-8")
    for extra in ([], ["--reconstruction", "none"]):
        args = ["prune", model_dir, "--calibration", str(data), "--calibration_seq_len", "32"]
        code = main([*args, "--num_calibration_samples", "4", "--gradient_weight", "inf", *extra])
        assert code == 2
        assert "gradient_weight" in capsys.readouterr().err


# -- items 7 and 8: a run that misses its target says so ----------------------------------------------------------


def _poison_scores(monkeypatch, layer_name):
    """Every score of ``layer_name`` NaN: nothing there may be pruned (non-finite never prunes)."""
    for strategy in STRATEGIES.names():
        part = STRATEGIES.get(strategy)
        original = type(part).scores

        def scores(self, layer, statistics, original=original):
            result = original(self, layer, statistics)
            return torch.full_like(result, float("nan")) if layer.name == layer_name else result

        monkeypatch.setattr(type(part), "scores", scores)


@pytest.mark.parametrize(
    "settings",
    [
        {"probe": False, "reconstruction": "none"},
        {"probe": True, "reconstruction": "none"},
        {"probe": False, "reconstruction": "admm"},
        {"probe": False, "reconstruction": "none", "comparison_group": "per_layer"},
        {"probe": False, "reconstruction": "none", "pattern": "2:4"},
        {"probe": False, "reconstruction": "none", "comparison_group": "global"},
    ],
    ids=["wanda", "probe", "admm", "per_layer", "2:4", "global"],
)
def test_a_shortfall_is_reported_and_warned(monkeypatch, logs, settings):
    model = make_tiny_llama()
    target = find_prunable_layers(model)[2].name
    _poison_scores(monkeypatch, target)
    _, report = prune_pretrained(
        model, _config(**settings), calibration=_windows(), return_report=True, progress=False
    )
    if settings.get("comparison_group") == "global":
        # One pool: the other layers' weights fill its quota, so the pool as a whole meets the target.
        assert "shortfall" not in report.extra and report.sparsity == pytest.approx(0.5, abs=1e-4)
        return
    shortfall = report.extra["shortfall"]
    assert [entry["name"] for entry in shortfall] == [target]
    entry = shortfall[0]
    assert entry["zeros"] == 0 and entry["expected_zeros"] > 0 and entry["groups_short"] > 0
    assert report.to_dict()["shortfall"] == shortfall
    assert target in logs.text and "shortfall" in logs.text


def test_no_shortfall_entry_when_the_target_is_met(logs):
    for settings in ({}, {"reconstruction": "admm"}, {"pattern": "2:4"}, {"comparison_group": "per_layer"}):
        _, report = prune_pretrained(
            make_tiny_llama(), _config(**settings), calibration=_windows(), return_report=True, progress=False
        )
        assert "shortfall" not in report.extra, settings
    assert "shortfall" not in logs.text


def test_data_free_pruning_of_a_nan_row_warns_the_shortfall(logs):
    model = make_tiny_llama()
    layer = find_prunable_layers(model)[0]
    with torch.no_grad():
        layer.weight[0] = float("nan")  # a whole row that cannot be pruned
    _, report = prune_pretrained(model, _config(strategy="magnitude", probe=False), return_report=True, progress=False)
    assert [entry["name"] for entry in report.extra["shortfall"]] == [layer.name]
    assert report.extra["shortfall"][0]["groups_short"] == 1
    assert layer.name in logs.text


@pytest.mark.parametrize("settings", [{}, {"reconstruction": "admm"}, {"probe": False}])
def test_nan_weights_are_refused_before_a_calibrated_run(settings):
    model = make_tiny_llama()
    layer = find_prunable_layers(model)[1]
    with torch.no_grad():
        layer.weight[3, 5] = float("nan")
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"{layer.name}\.weight.*NaN") as err:
        prune_pretrained(model, _config(**settings), calibration=_windows(), progress=False)
    assert "\n" not in str(err.value)
    assert _unchanged_with_nan(model, before)


def _unchanged_with_nan(model, before) -> bool:
    return all(torch.equal(before[n].nan_to_num(7.0), p.detach().nan_to_num(7.0)) for n, p in model.named_parameters())


# -- item 9: windows longer than the model's positions ------------------------------------------------------------


@pytest.mark.parametrize("make,limit", [(make_tiny_llama, "max_position_embeddings"), (make_tiny_gpt2, "n_positions")])
def test_calibration_longer_than_the_positions_is_refused(make, limit):
    model = make()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"`calibration_seq_len`=1024.*{limit}=256") as err:
        prune_pretrained(model, _config(calibration_seq_len=1024), calibration=[sample_text(3000)], progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=rf"300 tokens.*{limit}=256"):
        prune_pretrained(model, _config(), calibration=_windows(length=300), progress=False)
    assert _unchanged(model, before)
    # At the limit itself: fine.
    config = _config(num_calibration_samples=2, num_probe_samples=1)
    prune_pretrained(model, config, calibration=_windows(2, 256), progress=False)


def test_cli_prune_calibration_seq_len_above_the_positions_exits_2(tmp_path, tiny_tokenizer, capsys):
    from hf_gradprobe.cli import main

    model_dir = save_tiny_model(make_tiny_gpt2(), tiny_tokenizer, tmp_path / "tiny")
    data = tmp_path / "corpus.txt"
    data.write_text(sample_text(3000) + "\n", encoding="utf-8")
    code = main(["prune", model_dir, "--calibration", str(data), "--calibration_seq_len", "1024"])
    assert code == 2
    assert "`calibration_seq_len`=1024" in capsys.readouterr().err


def test_models_without_a_position_limit_are_not_checked():
    model = make_tiny_llama()
    del model.config.max_position_embeddings
    prune_pretrained(model, _config(probe=False), calibration=_windows(), progress=False)


# -- items 12 and 13: calibration tensors and argument types ------------------------------------------------------


def test_calibration_tensors_must_hold_integer_ids():
    for windows in (_windows().float(), _windows() > 100, _windows() - 500):
        with pytest.raises(ValueError, match="`calibration`"):
            prune_pretrained(make_tiny_llama(), _config(), calibration=windows, progress=False)


@pytest.mark.parametrize(
    "field,value",
    [
        ("calibration_seed", 2**70),
        ("calibration_seed", -1),
        ("calibration_seed", 1.0),
        ("targets", 5),
        ("targets", [5]),
        ("targets", ["("]),
        ("targets", [""]),
        ("targets", []),
        ("ignore", 5),
        ("ignore", ["q_proj", None]),
        ("pattern", 24),
        ("pattern", None),
        ("pattern", ["2:4"]),
        ("num_calibration_samples", 4.0),
        ("calibration_seq_len", "512"),
        ("reconstruction_iterations", True),
        ("probe", "yes"),
        ("layerwise", 1),
        ("gradient_dtype", ["float16"]),
        ("strategy", ["wanda"]),
    ],
)
def test_wrong_types_give_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`") as err:
        GradProbeConfig(**{field: value})
    assert "\n" not in str(err.value)


def test_patterns_and_regex_lists_are_normalised():
    assert GradProbeConfig(pattern=" 2:4 ").pattern == "2:4"
    assert GradProbeConfig(pattern="02:04").pattern == "2:4"
    assert GradProbeConfig(targets="q_proj").targets == ["q_proj"]
    assert GradProbeConfig(ignore=("k_proj", "v_proj")).ignore == ["k_proj", "v_proj"]


def test_a_huge_seed_is_refused_by_prune_pretrained():
    with pytest.raises(
        ValueError, match=r"`calibration_seed`.*\[0, 9223372036854775807\].*got 1180591620717411303424"
    ):
        prune_pretrained(make_tiny_llama(), _config(), calibration=_windows(), calibration_seed=2**70)


# -- item 16: misleading texts ------------------------------------------------------------------------------------


def test_a_config_entry_that_is_not_a_mapping_is_named(tmp_path):
    (tmp_path / "pruning_config.json").write_text(json.dumps({"config": [1]}), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "saved by a newer hf_gradprobe?" warning
        with pytest.raises(ValueError, match=r"pruning_config\.json.*\"config\".*not a mapping") as err:
            GradProbeConfig.from_pretrained(tmp_path)
    assert "newer" not in str(err.value)


def test_absurd_damping_is_refused_up_front_and_never_told_to_increase():
    with pytest.raises(ValueError, match="`reconstruction_damping`"):
        GradProbeConfig(reconstruction_damping=1e300)
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    weight = torch.randn(4, 8)
    mask = torch.rand(4, 8) < 0.5
    for solver in (reconstruct_admm, reconstruct_sparsegpt):
        with pytest.raises(ValueError) as err:
            solver(weight, mask, x.T @ x, damping=1e300)
        assert "increase `damping`" not in str(err.value) and "`damping`" in str(err.value)


def test_the_whole_row_warning_is_about_final_masks_only(logs):
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("hf_gradprobe").warning_once.cache_clear()
    # Twice the target proposes every weight of a row as a candidate; the final masks prune half of each row.
    _, report = prune_pretrained(
        make_tiny_llama(), _config(candidate_ratio=2.0), calibration=_windows(), return_report=True, progress=False
    )
    assert report.sparsity == pytest.approx(0.5)
    assert "rounds to pruning" not in logs.text

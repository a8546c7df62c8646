# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe prune` through `hf_gradprobe.cli.main`, and GradProbeConfig as a dataclass config."""

import json
from pathlib import Path

import pytest
import torch
from testing_utils import make_tiny_llama, sample_text, save_tiny_model
from transformers import AutoModelForCausalLM, HfArgumentParser

from hf_gradprobe import GradProbeConfig
from hf_gradprobe.cli import main
from hf_gradprobe.core.layers import find_prunable_layers


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli_prune")
    model_dir = save_tiny_model(make_tiny_llama(), tiny_tokenizer, root / "tiny")
    data = root / "corpus.txt"
    data.write_text(sample_text(600, seed=1) + "\n", encoding="utf-8")
    return model_dir, str(data), root


def _args(model_dir, data, *extra):
    return [
        "prune",
        model_dir,
        "--calibration",
        data,
        "--num_calibration_samples",
        "4",
        "--calibration-seq-len",
        "32",
        "--num_probe_samples",
        "2",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--layerwise", "--pattern", "2:4"],
        ["--probe", "false", "--strategy", "magnitude", "--reconstruction", "none"],
    ],
)
def test_prune_json_and_loadable_output(saved, capsys, extra):
    model_dir, data, root = saved
    out = root / ("out" + "".join(extra).replace(":", "").replace("-", "_"))
    assert main(_args(model_dir, data, "--target_sparsity", "0.5", "--output_dir", str(out), "--json", *extra)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"sparsity", "target_sparsity", "seconds", "peak_memory_bytes", "output_dir"} <= set(result)
    assert result["sparsity"] == pytest.approx(0.5, abs=1e-3) and result["seconds"] > 0
    assert result["target_sparsity"] == 0.5 and result["output_dir"] == str(out)
    assert result["peak_memory_bytes"] > 0
    # stock Transformers loads the folder, zeros intact
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    zeros = sum(int((layer.weight == 0).sum()) for layer in find_prunable_layers(reloaded))
    total = sum(layer.weight.numel() for layer in find_prunable_layers(reloaded))
    assert zeros / total == pytest.approx(0.5, abs=1e-3)
    saved_config = json.loads((out / "pruning_config.json").read_text())
    assert saved_config["config"]["num_calibration_samples"] == 4


def test_config_flags_reach_the_config(saved, capsys, monkeypatch):
    import hf_gradprobe.oneshot.prune as pruning

    seen = {}
    real = pruning.prune_pretrained

    def spy(model, config, **kw):
        seen["config"] = config
        return real(model, config, **kw)

    monkeypatch.setattr(pruning, "prune_pretrained", spy)
    model_dir, data, _ = saved
    assert (
        main(
            _args(
                model_dir,
                data,
                "--reduction-factor",
                "0.25",
                "--gradient-threshold",
                "0.5",
                "--comparison-group",
                "per_layer",
                "--ignore",
                "mlp",
                "--json",
            )
        )
        == 0
    )
    config = seen["config"]
    assert (config.reduction_factor, config.gradient_threshold, config.comparison_group, config.ignore) == (
        0.25,
        0.5,
        "per_layer",
        ["mlp"],
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--target_sparsity", "1.5"], "`target_sparsity` must be in [0, 1)"),
        (["--pattern", "4:2"], "`pattern`"),
        (["--probe", "true", "--num-probe-samples", "9"], "num_probe_samples"),
    ],
)
def test_bad_values_exit_2_with_the_argument_named(saved, capsys, extra, message):
    model_dir, data, _ = saved
    assert main(_args(model_dir, data, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-gradprobe prune: error: ") and len(err.strip().splitlines()) == 1 and message in err


@pytest.fixture
def parsed(monkeypatch):
    """``parsed(argv)``: what `hf-gradprobe prune` would run with, without pruning (argv after ``prune``)."""
    import hf_gradprobe.cli.prune as command

    seen = {}

    def run(args, config, prune_args, model_args):
        seen.update(args=args, config=config, prune=prune_args, model=model_args)
        return 0

    def parse(*argv):
        monkeypatch.setattr(command, "run", run)  # from the first call on: `main` before it really prunes
        assert main(["prune", *argv]) == 0
        return seen["args"], seen["config"], seen["prune"], seen["model"]

    return parse


def test_readme_main_job_parses(parsed):
    args, config, prune_args, _ = parsed(
        *["smollm2-135m", "--target_sparsity", "0.5"],
        *["--calibration", "../shared/data/wikitext-2/valid.txt"],
        *["--eval_data", "../shared/data/wikitext-2-raw/wiki.test.raw", "--eval_max_windows", "32"],
        *["--output_dir", "pruned-smollm2", "--overwrite"],
    )
    assert args.model == "smollm2-135m" and (config.target_sparsity, config.strategy) == (0.5, "wanda")
    assert not config.probe and not config.layerwise and config.reconstruction == "admm"  # the best configuration
    assert (prune_args.calibration, prune_args.eval_data) == (
        "../shared/data/wikitext-2/valid.txt",
        "../shared/data/wikitext-2-raw/wiki.test.raw",
    )
    assert (prune_args.eval_max_windows, prune_args.eval_seq_len) == (32, 1024)
    assert (prune_args.output_dir, prune_args.overwrite, prune_args.json) == ("pruned-smollm2", True, False)


@pytest.mark.parametrize("dash", [False, True])
def test_underscore_and_dash_spellings(parsed, dash):
    def flag(name):
        return "--" + (name.replace("_", "-") if dash else name)

    _, config, prune_args, model_args = parsed(
        "m",
        *(flag("target_sparsity"), "0.25", flag("comparison_group"), "per_layer", flag("probe"), "false"),
        *(flag("num_calibration_samples"), "8", flag("calibration_seed"), "3"),
        *(flag("probe_gradient_checkpointing"), flag("output_dir"), "out", flag("eval_max_windows"), "4"),
        *(
            flag("eval_seq_len"),
            "64",
            flag("push_to_hub"),
            "me/m",
            flag("trust_remote_code"),
            flag("device_map"),
            "cpu",
        ),
    )
    assert (config.target_sparsity, config.comparison_group, config.probe) == (0.25, "per_layer", False)
    assert (config.num_calibration_samples, config.calibration_seed, config.probe_gradient_checkpointing) == (
        8,
        3,
        True,
    )
    assert (prune_args.output_dir, prune_args.eval_max_windows, prune_args.eval_seq_len) == ("out", 4, 64)
    assert prune_args.push_to_hub == "me/m" and model_args.trust_remote_code and model_args.device_map == "cpu"


def test_boolean_flags(parsed):
    assert not parsed("m", "--probe", "false")[1].probe
    assert parsed("m", "--layerwise")[1].layerwise and not parsed("m", "--layerwise", "no")[1].layerwise
    _, config, prune_args, _ = parsed("m")  # the fields' defaults
    assert config == GradProbeConfig() and not prune_args.overwrite and not prune_args.private


def test_config_yaml_and_typed_flags_override_it(parsed, tmp_path):
    path = tmp_path / "wanda.yaml"
    path.write_text("target_sparsity: 0.3\nstrategy: magnitude\nlayerwise: true\ntargets: [q_proj, v_proj]\n")
    _, config, *_ = parsed("m", "--config", str(path))
    assert (config.target_sparsity, config.strategy, config.layerwise, config.targets) == (
        0.3,
        "magnitude",
        True,
        ["q_proj", "v_proj"],
    )
    assert config.gradient_weight == GradProbeConfig().gradient_weight  # not in the file: the default
    # A typed flag wins, before or after --config, even when it types the field's default.
    _, config, *_ = parsed("m", "--target-sparsity", "0.4", "--config", str(path), "--layerwise", "false")
    assert (config.target_sparsity, config.strategy, config.layerwise) == (0.4, "magnitude", False)


def test_config_from_a_pruned_model_takes_its_target(saved, parsed, capsys):
    model_dir, data, root = saved
    out = root / "out_nm_target"
    # 2:4 prunes half of the weights whatever the target: the config records the sparsity it gets (0.5), not 0.3.
    assert main(_args(model_dir, data, "--pattern", "2:4", "--target_sparsity", "0.3", "--output_dir", str(out))) == 0
    saved_config = json.loads((out / "pruning_config.json").read_text())
    assert saved_config["sparsity"] == pytest.approx(0.5) and saved_config["config"]["target_sparsity"] == 0.5
    for path in (out, out / "pruning_config.json"):
        _, config, *_ = parsed(model_dir, "--config", str(path))
        assert (config.target_sparsity, config.pattern, config.num_calibration_samples) == (0.5, "2:4", 4)
    _, config, *_ = parsed(model_dir, "--config", str(out), "--pattern", "unstructured", "--target_sparsity", "0.3")
    assert (config.target_sparsity, config.pattern) == (0.3, "unstructured")


def test_bad_config_file_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("target_sparsity: [\n")
    (tmp_path / "wrong.yaml").write_text("target_sparsity: 2\n")
    for name, message in [("missing.yaml", "missing.yaml"), ("broken.yaml", "broken.yaml"), ("wrong.yaml", "[0, 1)")]:
        assert main(["prune", "m", "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hf-gradprobe prune: error: --config ") and len(err.strip().splitlines()) == 1
        assert message in err


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("probe.json", '{"probe": "false"}', "`probe` must be true or false, got 'false'"),
        ("probe.yaml", 'probe: "false"\n', "`probe` must be true or false, got 'false'"),
        ("layerwise.yaml", "layerwise: 1\n", "`layerwise` must be true or false, got 1"),
        ("sparsity.json", '{"target_sparsity": "0.5"}', "`target_sparsity` must be a number"),
        ("sparsity.yaml", 'target_sparsity: "0.5"\n', "`target_sparsity` must be a number"),
        ("samples.yaml", 'num_calibration_samples: "4"\n', "`num_calibration_samples` must be a positive integer"),
    ],
)
def test_config_file_refuses_strings_for_booleans_and_numbers(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    assert main(["prune", "m", "--config", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-gradprobe prune: error: --config ") and len(err.strip().splitlines()) == 1
    assert message in err
    with pytest.raises(ValueError, match=message.split(" must")[0]):
        GradProbeConfig.from_pretrained(tmp_path / name)


def test_hf_argument_parser_and_json_round_trip(tmp_path):
    (config,) = HfArgumentParser(GradProbeConfig).parse_args_into_dataclasses(
        ["--target_sparsity", "0.6", "--strategy", "magnitude", "--layerwise", "True", "--targets", "q_proj", "v_proj"]
    )
    assert config.target_sparsity == 0.6 and config.strategy == "magnitude" and config.layerwise
    assert config.targets == ["q_proj", "v_proj"]
    path = config.save_pretrained(tmp_path)
    assert GradProbeConfig.from_pretrained(tmp_path) == config
    assert json.loads(Path(path).read_text())["config"]["target_sparsity"] == 0.6


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("target_sparsity", 1.0, "`target_sparsity`"),
        ("strategy", "sparsegpt", "`strategy`"),
        ("reduction_factor", 1.5, "`reduction_factor`"),
        ("candidate_ratio", 0.5, "`candidate_ratio`"),
        ("pattern", "2:2", "`pattern`"),
        ("comparison_group", "per_col", "`comparison_group`"),
        ("gradient_dtype", "int8", "`gradient_dtype`"),
        ("gradient_weight", -1, "`gradient_weight`"),
        ("num_probe_samples", 0, "`num_probe_samples`"),
    ],
)
def test_bad_config_values(field, value, message):
    with pytest.raises(ValueError, match=message.replace("`", "`").replace("(", r"\(")):
        GradProbeConfig(**{field: value})


def test_unknown_keys_warn_on_load(tmp_path):
    (tmp_path / "pruning_config.json").write_text(json.dumps({"config": {"target_sparsity": 0.3, "future_option": 1}}))
    with pytest.warns(UserWarning, match="future_option"):
        assert GradProbeConfig.from_pretrained(tmp_path).target_sparsity == 0.3


def test_method_name():
    assert GradProbeConfig().method == "wanda-admm-owl"
    assert GradProbeConfig(allocation="uniform").method == "wanda-admm"
    assert GradProbeConfig(pattern="2:4").method == "wanda-admm"  # N:M fixes the counts: nothing to allocate
    assert GradProbeConfig(probe=True, reconstruction="none").method == "gradprobe-wanda-owl"
    assert GradProbeConfig(strategy="magnitude", reconstruction="none").method == "magnitude"
    assert torch.float16 == GradProbeConfig().storage_dtype


def test_cheap_checks_run_before_loading_and_name_the_flag(saved, capsys, tmp_path, monkeypatch):
    from hf_gradprobe import models

    model_dir, data, _ = saved

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(models, "load_model", no_loading)
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "config.json").write_text("{}")
    (project / "data.csv").write_text("a,b")
    (tmp_path / "file").write_text("x")
    cases = [
        (["--output_dir", str(project)], "--overwrite"),
        (["--output_dir", str(project), "--overwrite"], "(.git/, data.csv)"),
        (["--output_dir", str(tmp_path / "file" / "out")], "which is a file"),
        (["--eval_data", str(tmp_path / "missing.txt")], "`--eval_data`="),
        (["--calibration", str(tmp_path / "missing.jsonl")], "`--calibration`="),
    ]
    for extra, message in cases:
        argv = _args(model_dir, data, *extra)
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("hf-gradprobe prune: error: ") and len(err.strip().splitlines()) == 1
        assert message in err and "overwrite=True" not in err and "Traceback" not in err
    monkeypatch.chdir(project)
    (project / ".git").rmdir()
    (project / "data.csv").unlink()
    (project / "model.safetensors").write_bytes(b"")
    assert main(_args(model_dir, data, "--output_dir", ".", "--overwrite")) == 2
    assert "current folder" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["config.json", "model.safetensors"]


def test_failed_evaluation_still_saves_the_pruned_model(saved, capsys, tmp_path, monkeypatch):
    from hf_gradprobe.evaluation import perplexity

    model_dir, data, _ = saved

    def broken(*args, **kwargs):
        raise ValueError("the evaluation corpus is too short")

    monkeypatch.setattr(perplexity, "compute_perplexity", broken)
    out = tmp_path / "out"
    argv = _args(model_dir, data, "--output_dir", str(out), "--eval_data", data, "--eval_seq_len", "32")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--eval_data" in err and "too short" in err and f"saved to {out}" in err
    assert (out / "model.safetensors").is_file() and (out / "pruning_config.json").is_file()


def test_errors_exit_2_for_bad_input_and_1_with_debug_for_internal_ones(saved, capsys, monkeypatch):
    import hf_gradprobe.oneshot.prune as oneshot

    model_dir, data, _ = saved
    assert main(["prune", "./no/such/model", "--calibration", data]) == 2
    err = capsys.readouterr().err
    assert "no such local folder" in err and "Repo id" not in err and "Traceback" not in err

    def bug(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(oneshot, "prune_pretrained", bug)
    assert main(_args(model_dir, data)) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    assert main(["--debug", *_args(model_dir, data)]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*_args(model_dir, data), "--debug", "--log_level", "error"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_eval_dense_reports_the_dense_perplexity_beside_the_pruned_one(saved, capsys, tmp_path):
    from huggingface_hub import ModelCard

    from hf_gradprobe.evaluation.perplexity import compute_perplexity
    from hf_gradprobe.models import load_model

    model_dir, data, _ = saved
    out = tmp_path / "out"
    evaluation = ["--eval_data", data, "--eval_seq_len", "32", "--eval_max_windows", "3"]
    args = _args(model_dir, data, "--target_sparsity", "0.5", "--output_dir", str(out), *evaluation)
    assert main([*args, "--eval_dense", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    dense = compute_perplexity(*load_model(model_dir), data, seq_len=32, max_windows=3, progress=False).perplexity
    assert result["perplexity_before"] == pytest.approx(dense, rel=1e-6)
    assert result["perplexity"] > 0 and result["perplexity"] != result["perplexity_before"]
    saved_meta = json.loads((out / "pruning_config.json").read_text())
    assert saved_meta["perplexity_before"] == pytest.approx(dense, rel=1e-6)
    assert saved_meta["perplexity_after"] == pytest.approx(result["perplexity"])
    card = ModelCard.load(out / "README.md").text
    assert f"| perplexity | {dense:.2f} before, **{result['perplexity']:.2f}** after (" in card
    # Without --eval_dense the card says the dense figure was not measured; text output names it when it was.
    assert main([*args, "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity_before"] is None
    assert "| perplexity | not measured before, **" in ModelCard.load(out / "README.md").text
    assert main([*args, "--overwrite", "--eval_dense"]) == 0
    assert f"(dense {dense:.3f})" in capsys.readouterr().out
    # --eval_dense alone has nothing to evaluate on: refused before any work.
    assert main(["prune", model_dir, "--eval_dense", "--output_dir", str(tmp_path / "never")]) == 2
    assert "--eval_data" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_log_level_flag_and_transformers_verbosity(monkeypatch):
    import logging

    from transformers.utils import logging as hf_logging

    from hf_gradprobe.cli import _set_log_level, build_parser

    before = hf_logging.get_verbosity()
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    restore = _set_log_level(None)  # no flag: the environment variable Transformers reads
    try:
        assert hf_logging.get_verbosity() == logging.ERROR == logging.getLogger("hf_gradprobe").level
    finally:
        restore()
    assert hf_logging.get_verbosity() == before
    restore = _set_log_level("debug")  # the flag beats the environment
    try:
        assert hf_logging.get_verbosity() == logging.DEBUG
    finally:
        restore()
    parser = build_parser()
    assert parser.parse_args(["--log_level", "info", "prune"]).log_level == "info"
    assert parser.parse_args(["prune", "--log-level", "info"]).log_level == "info"

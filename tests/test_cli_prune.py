"""`hf-gradprobe prune` through `hf_gradprobe.cli.main`, and GradProbeConfig as a dataclass config."""

import json

import pytest
import torch
from testing_utils import make_tiny_llama, sample_text, save_tiny_model
from transformers import AutoModelForCausalLM, HfArgumentParser

from hf_gradprobe import GradProbeConfig
from hf_gradprobe.cli import main
from hf_gradprobe.layers import find_prunable_layers


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli_prune")
    model_dir = save_tiny_model(make_tiny_llama(), tiny_tokenizer, root / "tiny")
    data = root / "corpus.txt"
    data.write_text(sample_text(600, seed=1) + "\n", encoding="utf-8")
    return model_dir, str(data), root


def _args(model_dir, data, *extra):
    return ["prune", model_dir, "--calibration", data, "--num-calibration-samples", "4", "--calibration-seq-len",
            "32", "--num-probe-samples", "2", *extra]


@pytest.mark.parametrize("extra", [[], ["--layerwise", "--pattern", "2:4"], ["--no-probe", "--strategy", "magnitude"]])
def test_prune_json_and_loadable_output(saved, capsys, extra):
    model_dir, data, root = saved
    out = root / ("out" + "".join(extra).replace(":", "").replace("-", "_"))
    assert main(_args(model_dir, data, "--sparsity", "0.5", "--output", str(out), "--json", *extra)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"sparsity", "seconds", "peak_memory_bytes"} <= set(result)
    assert result["sparsity"] == pytest.approx(0.5, abs=1e-3) and result["seconds"] > 0
    assert result["peak_memory_bytes"] > 0
    # stock Transformers loads the folder, zeros intact
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    zeros = sum(int((layer.weight == 0).sum()) for layer in find_prunable_layers(reloaded))
    total = sum(layer.weight.numel() for layer in find_prunable_layers(reloaded))
    assert zeros / total == pytest.approx(0.5, abs=1e-3)
    saved_config = json.loads((out / "pruning_config.json").read_text())
    assert saved_config["config"]["num_calibration_samples"] == 4


def test_config_flags_reach_the_config(saved, capsys, monkeypatch):
    import hf_gradprobe.pruning as pruning

    seen = {}
    real = pruning.prune_pretrained

    def spy(model, config, **kw):
        seen["config"] = config
        return real(model, config, **kw)

    monkeypatch.setattr(pruning, "prune_pretrained", spy)
    model_dir, data, _ = saved
    assert main(_args(model_dir, data, "--reduction-factor", "0.25", "--gradient-threshold", "0.5",
                      "--comparison-group", "per_layer", "--ignore", "mlp", "--json")) == 0
    config = seen["config"]
    assert (config.reduction_factor, config.gradient_threshold, config.comparison_group, config.ignore) == (
        0.25, 0.5, "per_layer", ["mlp"])


@pytest.mark.parametrize(
    "extra,message",
    [(["--sparsity", "1.5"], "`sparsity` must be in [0, 1)"), (["--pattern", "4:2"], "`pattern`"),
     (["--num-probe-samples", "9"], "num_probe_samples")],
)
def test_bad_values_exit_2_with_the_argument_named(saved, capsys, extra, message):
    model_dir, data, _ = saved
    assert main(_args(model_dir, data, *extra)) == 2
    assert message in capsys.readouterr().err


def test_hf_argument_parser_and_json_round_trip(tmp_path):
    (config,) = HfArgumentParser(GradProbeConfig).parse_args_into_dataclasses(
        ["--sparsity", "0.6", "--strategy", "magnitude", "--layerwise", "True", "--targets", "q_proj", "v_proj"]
    )
    assert config.sparsity == 0.6 and config.strategy == "magnitude" and config.layerwise
    assert config.targets == ["q_proj", "v_proj"]
    path = config.save_pretrained(tmp_path)
    assert GradProbeConfig.from_pretrained(tmp_path) == config
    assert json.loads(open(path).read())["sparsity"] == 0.6


@pytest.mark.parametrize(
    "field,value,message",
    [("sparsity", 1.0, "`sparsity`"), ("strategy", "sparsegpt", "`strategy`"), ("reduction_factor", 1.5,
     "`reduction_factor`"), ("candidate_ratio", 0.5, "`candidate_ratio`"), ("pattern", "2:2", "`pattern`"),
     ("comparison_group", "per_col", "`comparison_group`"), ("gradient_dtype", "int8", "`gradient_dtype`"),
     ("gradient_weight", -1, "`gradient_weight`"), ("num_probe_samples", 0, "`num_probe_samples`")],
)
def test_bad_config_values(field, value, message):
    with pytest.raises(ValueError, match=message.replace("`", "`").replace("(", r"\(")):
        GradProbeConfig(**{field: value})


def test_unknown_keys_warn_on_load(tmp_path):
    (tmp_path / "gradprobe_config.json").write_text(json.dumps({"sparsity": 0.3, "future_option": 1}))
    with pytest.warns(UserWarning, match="future_option"):
        assert GradProbeConfig.from_pretrained(tmp_path).sparsity == 0.3


def test_method_name():
    assert GradProbeConfig().method == "gradprobe-wanda"
    assert GradProbeConfig(probe=False, strategy="magnitude").method == "magnitude"
    assert torch.float16 == GradProbeConfig().storage_dtype

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""sparsity_report on models in memory, saved folders (streamed) and bad paths; the `inspect` command."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_gradprobe import __version__
from hf_gradprobe.cli import main
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import apply_mask_, lowest_k_mask, nm_mask
from hf_gradprobe.sharing.inspection import sparsity_report
from hf_gradprobe.sharing.save import save_pruned


def prune_2of4_(model, break_layer=None):
    """2:4 on every prunable layer; with ``break_layer``, one weight of its row 1, group 2 is revived."""
    for layer in find_prunable_layers(model):
        matrix = layer.out_in(layer.weight)
        apply_mask_(layer.weight, layer.from_out_in(nm_mask(matrix.abs(), 2, 4)))
        if layer.name == break_layer:
            with torch.no_grad():
                group = layer.out_in(layer.weight)[1, 8:12]
                group[group == 0] = 0.5  # 4 non-zeros in a group of 4
    return model


def zeros_by_layer(report):
    return [(row.name, row.zeros, row.numel) for row in report.layers]


@pytest.mark.parametrize("factory", ["tiny_llama", "tiny_gpt2"])
def test_folder_report_matches_the_model_in_memory(factory, request, tmp_path):
    model = request.getfixturevalue(factory)  # GPT-2 stores Conv1D weights transposed
    for layer in find_prunable_layers(model):
        apply_mask_(layer.weight, lowest_k_mask(layer.weight.abs(), 0.3))
    model.save_pretrained(tmp_path / "plain")  # not saved by hf_gradprobe
    in_memory = sparsity_report(model, pattern="2:4")
    on_disk = sparsity_report(tmp_path / "plain", pattern="2:4")
    loaded = sparsity_report(AutoModelForCausalLM.from_pretrained(tmp_path / "plain"), pattern="2:4")
    for report in (on_disk, loaded):
        assert zeros_by_layer(report) == zeros_by_layer(in_memory)
        assert [r.nm_violating_groups for r in report.layers] == [r.nm_violating_groups for r in in_memory.layers]
        assert (report.total_parameters, report.total_zeros) == (in_memory.total_parameters, in_memory.total_zeros)
    assert in_memory.sparsity == pytest.approx(0.3, abs=0.01)
    assert on_disk.extra == {"model": str(tmp_path / "plain")}


def test_nm_compliance_names_the_breaking_layer_and_where(tiny_llama, tmp_path):
    bad = "model.layers.1.mlp.up_proj"
    model = prune_2of4_(tiny_llama, break_layer=bad)
    metadata = {"method": "magnitude", "config": {"target_sparsity": 0.5, "pattern": "2:4"}}
    folder = save_pruned(model, tmp_path / "m", metadata=metadata)
    for report in (sparsity_report(model, pattern="2:4"), sparsity_report(folder)):  # folder: pattern from metadata
        assert report.pattern == "2:4" and report.nm_compliant is False
        broken = {
            row.name: (row.nm_violating_groups, row.nm_first_violation)
            for row in report.layers
            if row.nm_violating_groups
        }
        assert broken == {bad: (1, [1, 2])}
    assert sparsity_report(folder, pattern="unstructured").pattern is None
    assert sparsity_report(folder).extra["pruning"] == {
        "method": "magnitude",
        "target_sparsity": 0.5,
        "pattern": "2:4",
        "hf_gradprobe_version": __version__,
    }
    # Metadata without a config (e.g. written by training code) names its settings at the top level.
    flat = save_pruned(model, tmp_path / "flat", metadata={"method": "magnitude", "pattern": "2:4"})
    assert sparsity_report(flat).pattern == "2:4" and sparsity_report(flat).extra["pruning"]["pattern"] == "2:4"


def test_unpruned_sharded_and_base_model_checkpoints(tiny_llama, tmp_path):
    assert sparsity_report(tiny_llama).sparsity == 0.0
    tiny_llama.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert zeros_by_layer(sparsity_report(tmp_path / "sharded")) == zeros_by_layer(sparsity_report(tiny_llama))
    # A bare LlamaModel checkpoint has no "model." prefix in its keys.
    tiny_llama.model.save_pretrained(tmp_path / "base")
    base = sparsity_report(tmp_path / "base")
    assert base.layers[0].name.endswith("layers.0.self_attn.q_proj") and len(base.layers) == 14


def test_bad_inputs(tmp_path, tiny_llama):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a saved model"):
        sparsity_report(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a file"):
        sparsity_report(tmp_path / "file.txt")
    with pytest.raises(FileNotFoundError, match="neither an existing local folder nor a valid Hub repo id"):
        sparsity_report(str(tmp_path / "nope"))
    with pytest.raises(OSError, match="downloading it from the Hub failed"):
        sparsity_report("nobody-here/no-such-model")  # conftest makes the Hub offline
    with pytest.raises(ValueError, match="pattern"):
        sparsity_report(tiny_llama, pattern="4:2")
    with pytest.raises(TypeError, match="model_or_id"):
        sparsity_report(42)


def test_inspect_command_json_and_table(tiny_llama, tmp_path, capsys):
    folder = save_pruned(
        prune_2of4_(tiny_llama, break_layer="model.layers.0.self_attn.o_proj"),
        tmp_path / "m",
        metadata={"method": "magnitude", "pattern": "2:4"},
    )
    assert main(["inspect", str(folder), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["sparsity"] == pytest.approx(0.5, abs=0.01) and len(payload["layers"]) == 14
    assert payload["pattern"] == "2:4" and payload["nm_compliant"] is False and payload["model"] == str(folder)

    assert main(["inspect", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "prunable total" in table and "all parameters" in table and "(1, 2)" in table
    assert "2:4: 1 of 14 layers break the pattern: model.layers.0.self_attn.o_proj" in table

    assert main(["inspect", str(folder), "--pattern", "unstructured", "--ignore", "mlp"]) == 0
    table = capsys.readouterr().out
    assert "mlp" not in table and "break the pattern" not in table


def test_inspect_command_bad_path_is_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-gradprobe inspect: error:") and "not a saved model" in err and "Traceback" not in err
    assert main(["inspect", str(tmp_path), "--pattern", "2-4"]) == 2
    assert "`pattern` must be" in capsys.readouterr().err


def test_inspect_flags_are_spelled_as_the_other_commands_flags(tiny_llama, tmp_path, capsys):
    folder = save_pruned(prune_2of4_(tiny_llama), tmp_path / "m", metadata={"method": "magnitude", "pattern": "2:4"})
    outputs = []
    for flags in (["--trust_remote_code", "--json"], ["--trust-remote-code", "--json", "true"]):
        assert main(["inspect", str(folder), *flags]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0]["pattern"] == "2:4"
    with pytest.raises(SystemExit) as exit_:
        main(["inspect"])  # the model is required: no default model is inspected by accident
    assert exit_.value.code == 2 and "model" in capsys.readouterr().err

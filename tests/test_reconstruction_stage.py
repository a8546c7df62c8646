# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Reconstruction as a stage of prune_pretrained: exact zeros, lower output error, dtypes, Conv1D, hooks, failure."""

import pytest
import torch
from testing_utils import make_tiny_gpt2, make_tiny_llama, tiny_gradprobe_config, token_windows

from hf_gradprobe import prune_pretrained
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import nm_violations
from hf_gradprobe.oneshot import pruner as pruner_module


_windows = token_windows


def _config(**overrides):
    return tiny_gradprobe_config(**{"reconstruction": "admm", **overrides})


def _zero_counts(model):
    return [(layer.out_in(layer.weight) == 0).sum(dim=1) for layer in find_prunable_layers(model)]


@pytest.mark.parametrize("reconstruction", ["admm", "sparsegpt"])
@pytest.mark.parametrize("order", ["sequential", "parallel"])
@pytest.mark.parametrize("probe", ["off", "dense-model", "per-block"])
def test_kept_weights_change_zeros_stay_exact_and_output_error_drops(reconstruction, order, probe):
    model = make_tiny_llama()
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    config = _config(
        reconstruction=reconstruction, reconstruction_order=order, probe=probe != "off", layerwise=probe == "per-block"
    )
    report = prune_pretrained(model, config, calibration=_windows(), return_report=True, progress=False)[1]
    for zeros, layer in zip(_zero_counts(model), find_prunable_layers(model), strict=True):
        assert (zeros == layer.out_in(layer.weight).shape[1] // 2).all(), "exactly half of every row is zero"
    changed = sum(int((layer.weight != before[layer.name]).sum()) for layer in find_prunable_layers(model))
    assert changed > report.layers[0]["numel"], "the kept weights were updated, not only zeroed"
    for entry in report.layers:
        assert entry["output_error"] < entry["output_error_pruned"], entry["name"]
    assert report.method.endswith(reconstruction)


def test_nm_pattern_compliance_survives_reconstruction():
    model = make_tiny_llama()
    prune_pretrained(model, _config(pattern="2:4"), calibration=_windows(), progress=False)
    for layer in find_prunable_layers(model):
        assert not nm_violations(layer.out_in(layer.weight), 2, 4).any()
        assert (layer.out_in(layer.weight) == 0).sum() == layer.weight.numel() // 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_keep_their_dtype(dtype):
    model = make_tiny_llama().to(dtype)
    report = prune_pretrained(model, _config(), calibration=_windows(), return_report=True, progress=False)[1]
    for layer in find_prunable_layers(model):
        assert layer.weight.dtype == dtype and torch.isfinite(layer.weight).all()
    assert abs(report.sparsity - 0.5) < 1e-6
    assert all(entry["output_error"] < entry["output_error_pruned"] for entry in report.layers)


def test_conv1d_orientation():
    model = make_tiny_gpt2()
    report = prune_pretrained(model, _config(), calibration=_windows(), return_report=True, progress=False)[1]
    for zeros, layer in zip(_zero_counts(model), find_prunable_layers(model), strict=True):
        assert layer.transposed and (zeros == layer.out_in(layer.weight).shape[1] // 2).all()
    assert all(entry["output_error"] < entry["output_error_pruned"] for entry in report.layers)


def test_accelerate_hooks_on_cpu():
    from accelerate import dispatch_model

    model = make_tiny_llama()
    names = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"]
    model = dispatch_model(model, device_map=dict.fromkeys(names, "cpu"), force_hooks=True)
    report = prune_pretrained(model, _config(), calibration=_windows(), return_report=True, progress=False)[1]
    assert abs(report.sparsity - 0.5) < 1e-6
    assert hasattr(model.model.layers[0], "_hf_hook")


def test_failure_midway_leaves_blocks_done_or_untouched(monkeypatch):
    model = make_tiny_llama()
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    original = pruner_module.OneShotPruner._reconstruct

    def flaky(self, layer, mask, hessian, dense):
        if layer.block_index == 1 and "o_proj" in layer.name:  # block 1, after its q/k/v were reconstructed
            raise RuntimeError("simulated failure")
        return original(self, layer, mask, hessian, dense)

    monkeypatch.setattr(pruner_module.OneShotPruner, "_reconstruct", flaky)
    with pytest.raises(RuntimeError, match="simulated failure"):
        prune_pretrained(model, _config(probe=False), calibration=_windows(), progress=False)
    for layer in find_prunable_layers(model):
        unchanged = torch.equal(layer.weight, before[layer.name])
        assert unchanged == (layer.block_index == 1), layer.name


def test_global_group_is_refused_block_by_block():
    with pytest.raises(ValueError, match="global"):
        _config(comparison_group="global")


def test_stages_follow_the_inputs_each_layer_reads():
    from hf_gradprobe.core.layers import group_by_block
    from hf_gradprobe.oneshot.pipeline import BlockPipeline, input_groups
    from hf_gradprobe.oneshot.pruner import OneShotPruner

    model = make_tiny_llama()
    pruner = OneShotPruner(model, _config(), _windows(), None, progress=False)
    pipeline = BlockPipeline(model, _windows(), 2, pruner.device)
    hidden = pipeline.first_inputs()
    _, layers = group_by_block(pruner.layers)[0]
    for _ in range(3):  # freed inputs' ids get reused from one call to the next: stages must not depend on them
        stages = input_groups(pipeline, 0, layers, hidden)
        names = [[layer.name.rsplit(".", 1)[-1] for layer in stage] for stage in stages]
        assert names == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def test_layers_sharing_an_input_share_one_hessian_equal_to_their_own():
    from hf_gradprobe.core.layers import group_by_block
    from hf_gradprobe.oneshot.pipeline import BlockPipeline, input_groups
    from hf_gradprobe.oneshot.pruner import OneShotPruner
    from hf_gradprobe.oneshot.statistics import InputStatistics

    model = make_tiny_llama()
    pruner = OneShotPruner(model, _config(), _windows(), None, progress=False)
    pipeline = BlockPipeline(model, _windows(), 2, pruner.device)
    hidden = pipeline.first_inputs()
    _, layers = group_by_block(pruner.layers)[0]
    stages = input_groups(pipeline, 0, layers, hidden)
    seen = {layer.name: [] for layer in layers}
    handles = [
        layer.module.register_forward_pre_hook(lambda m, args, name=layer.name: seen[name].append(args[0].clone()))
        for layer in layers
    ]
    collector = InputStatistics(stages, second_moments=True)
    try:
        pipeline.run_block(0, hidden, hooks=collector)
    finally:
        for handle in handles:
            handle.remove()
    assert len(collector.groups) == len(stages) < len(layers)
    for layer in layers:
        x = torch.cat(seen[layer.name]).reshape(-1, layer.out_in(layer.weight).shape[1]).double()
        torch.testing.assert_close(collector.hessian(layer.name).double(), x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(collector.sq_norms(layer.name).double(), (x * x).sum(0), rtol=1e-4, atol=1e-5)


def _tokens_computed(model, config):
    """Per prunable layer, the tokens it computed while still dense and after it was pruned, over a whole
    prune_pretrained run: ``{name: {"dense": n, "pruned": n}}``."""
    layers = find_prunable_layers(model)
    tokens = {layer.name: {"dense": 0, "pruned": 0} for layer in layers}

    def count(module, args, output, name):
        state = "pruned" if bool((module.weight == 0).any()) else "dense"
        tokens[name][state] += args[0].shape[:-1].numel()

    handles = [
        layer.module.register_forward_hook(lambda m, a, o, name=layer.name: count(m, a, o, name)) for layer in layers
    ]
    try:
        prune_pretrained(model, config, calibration=_windows(), progress=False)
    finally:
        for handle in handles:
            handle.remove()
    return tokens


@pytest.mark.parametrize("order", ["sequential", "parallel"])
def test_statistics_passes_stop_before_the_layers_they_collect_for(order):
    """A statistics pass needs its last layers' input only, so it stops before they run. Apart from the one-window
    passes that discover the model's structure, a layer computes with its dense weights only where a later layer's
    input needs it: never in sequential order (each stage is pruned before the next pass), and in parallel order
    (one pass from the dense block) for every stage but the last."""
    tokens = _tokens_computed(make_tiny_llama(), _config(probe=False, reconstruction_order=order))
    windows = _windows()
    # Block 0 runs once on one window to learn whether blocks return tuples, and each block once on one window to
    # group its layers by input.
    structure = 2 * windows.shape[1]
    for name, computed in tokens.items():
        if order == "sequential" or name.endswith("down_proj"):
            assert computed["dense"] <= structure, (name, computed)
        else:
            assert computed["dense"] >= windows.numel(), (name, computed)  # the one dense pass ran it on every window


def _pruned_tokens_of_block_1(model, config):
    """Tokens each layer of block 1 computed after it was pruned, by short name (q_proj, ...)."""
    return {
        name.rsplit(".", 1)[-1]: computed["pruned"]
        for name, computed in _tokens_computed(model, config).items()
        if ".layers.1." in name
    }


def test_sequential_passes_replay_the_finished_attention_and_give_identical_results(monkeypatch):
    """After its layers are final, the attention is computed once more (recorded) and replayed in the block's
    later passes (the MLP input statistics and the pass writing the block's outputs), with unchanged results."""
    import contextlib

    from hf_gradprobe.oneshot.pipeline import FinishedChildReplay

    config = _config(probe=False, reconstruction_order="sequential")
    model = make_tiny_llama()
    tokens = _pruned_tokens_of_block_1(model, config)
    n = _windows().numel()
    # q/k/v: the o_proj pass and the recording gate/up pass; o_proj: the recording pass; the MLP as without replay
    # (gate/up in the down_proj pass and the last pass, down_proj in the last pass).
    assert tokens == {"q_proj": 2 * n, "k_proj": 2 * n, "v_proj": 2 * n, "o_proj": n} | {
        "gate_proj": 2 * n,
        "up_proj": 2 * n,
        "down_proj": n,
    }
    monkeypatch.setattr(FinishedChildReplay, "active", lambda self, record=True: contextlib.nullcontext(self))
    recomputed = make_tiny_llama()
    assert _pruned_tokens_of_block_1(recomputed, config)["q_proj"] == 4 * n  # without replay
    for layer, other in zip(find_prunable_layers(model), find_prunable_layers(recomputed), strict=True):
        assert torch.equal(layer.weight, other.weight), layer.name

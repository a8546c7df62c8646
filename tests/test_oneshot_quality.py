# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot quality parts: masks chosen by the solver, the conjugate-gradient finish, loss-aware objectives,
block refinement and non-uniform allocation, each against the invariant it promises."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from testing_utils import make_tiny_gpt2, make_tiny_llama, token_windows

from hf_gradprobe import GradProbeConfig, prune_pretrained
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import nm_mask, num_to_prune, per_row_mask, select_masks
from hf_gradprobe.oneshot import pruner as pruner_module
from hf_gradprobe.oneshot.allocation import exact_counts, owl_sparsities, row_counts
from hf_gradprobe.oneshot.mask_solver import quota_selector, solve_masks_and_weights
from hf_gradprobe.oneshot.reconstruction import output_error, reconstruct_admm, reconstruct_exact, reconstruct_pcg
from hf_gradprobe.oneshot.reconstructors import RECONSTRUCTORS
from hf_gradprobe.oneshot.sensitivity import blend_weights
from hf_gradprobe.oneshot.statistics import InputStatistics


def _layer_problem(seed: int, out_features: int = 12, in_features: int = 16, tokens: int = 64):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(in_features, in_features, generator=generator)
    x = torch.randn(tokens, in_features, generator=generator) @ mixing  # correlated inputs, as in real layers
    return torch.randn(out_features, in_features, generator=generator), x.T @ x / tokens


def _config(**overrides):
    base = {"num_calibration_samples": 6, "calibration_seq_len": 24, "calibration_batch_size": 2}
    return GradProbeConfig(**{**base, **overrides})


def _quotas_hold(mask: torch.Tensor, reference: torch.Tensor, pattern: str, group: str) -> bool:
    if pattern != "unstructured":
        n, m = (int(v) for v in pattern.split(":"))
        return bool((mask.reshape(-1, m).sum(dim=1) == m - n).all())
    if group == "per_row":
        return bool((mask.sum(dim=1) == reference.sum(dim=1)).all())
    return int(mask.sum()) == int(reference.sum())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    sparsity=st.sampled_from([0.25, 0.5, 0.7]),
    pattern=st.sampled_from(["unstructured", "2:4", "1:4"]),
    group=st.sampled_from(["per_row", "per_layer"]),
)
def test_solver_masks_meet_exact_quotas_and_never_lose_to_the_fixed_mask_fit(seed, sparsity, pattern, group):
    weight, hessian = _layer_problem(seed)
    scores = weight.abs() * hessian.diagonal().sqrt()
    start = select_masks([scores], sparsity, group, pattern)[0]
    config = _config(reconstruction="alps", pattern=pattern, target_sparsity=sparsity, comparison_group=group)
    updated, mask = RECONSTRUCTORS.get("alps").solve(weight, start, hessian, config)
    assert _quotas_hold(mask, start, pattern, group)
    assert bool((updated[mask] == 0).all())
    fixed = reconstruct_admm(weight, start, hessian)
    assert output_error(weight, updated, hessian) <= output_error(weight, fixed, hessian) + 1e-9


def test_solver_masks_beat_the_wanda_mask_on_correlated_layers():
    """What the solver is for: on most layers its support search finds a lower error than Wanda's mask."""
    wins = 0
    for seed in range(8):
        weight, hessian = _layer_problem(seed, 24, 32, 128)
        start = per_row_mask(weight.abs() * hessian.diagonal().sqrt(), 0.5)
        chosen, _ = solve_masks_and_weights(weight, hessian, quota_selector(start, "unstructured", "per_row"))
        wins += output_error(weight, chosen, hessian) < output_error(
            weight, reconstruct_admm(weight, start, hessian), hessian
        )
    assert wins >= 6


def test_solver_keeps_the_models_own_zeros():
    weight, hessian = _layer_problem(3)
    weight[0, :3] = 0.0
    start = per_row_mask(weight.abs(), 0.5)
    forced = weight == 0
    updated, mask = solve_masks_and_weights(weight, hessian, quota_selector(start, "unstructured", "per_row", forced))
    assert bool(mask[forced].all()) and bool((updated[forced] == 0).all())
    assert bool((mask.sum(dim=1) == start.sum(dim=1)).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conjugate_gradient_finish_matches_the_exact_solve(seed):
    weight, hessian = _layer_problem(seed)
    mask = per_row_mask(weight.abs(), 0.5)
    exact = reconstruct_exact(weight, mask, hessian)
    torch.testing.assert_close(reconstruct_pcg(weight, mask, hessian, iterations=60), exact, rtol=1e-3, atol=1e-4)
    # A warm start near the solution needs few steps; the mask is exact whatever the start.
    warm = reconstruct_pcg(weight, mask, hessian, iterations=20, start=reconstruct_admm(weight, mask, hessian))
    assert bool((warm[mask] == 0).all())
    assert output_error(weight, warm, hessian) <= output_error(
        weight, reconstruct_admm(weight, mask, hessian), hessian
    )


def test_loss_aware_objective_reduces_to_the_plain_one_with_uniform_weights():
    assert torch.equal(blend_weights(torch.rand(3, 5), 0.0), torch.ones(3, 5))
    assert torch.allclose(blend_weights(torch.full((3, 5), 7.0), 1.0), torch.ones(3, 5))
    assert torch.equal(blend_weights(torch.zeros(2, 4), 1.0), torch.ones(2, 4))  # no signal: uniform
    model = make_tiny_llama()
    layers = [layer for layer in find_prunable_layers(model) if layer.block_index == 0]
    windows = token_windows(4, 16)
    groups = [[layer] for layer in layers]
    plain = InputStatistics(groups, second_moments=True)
    ones = [torch.ones(4, 16) for _ in groups]
    weighted = InputStatistics(groups, second_moments=True, token_weights=ones, window_range=lambda: (0, 4))
    doubled = [torch.full((4, 16), 2.0) for _ in groups]
    scaled = InputStatistics(groups, second_moments=True, token_weights=doubled, window_range=lambda: (0, 4))
    with plain, weighted, scaled, torch.no_grad():
        model(input_ids=windows)
    for layer in layers:
        torch.testing.assert_close(weighted.hessian(layer.name), plain.hessian(layer.name))
        torch.testing.assert_close(scaled.hessian(layer.name), 2 * plain.hessian(layer.name))
    # Reconstruction is scale-free: doubled weights give the same solution as uniform ones.
    layer = layers[0]
    weight = layer.out_in(layer.weight.detach())
    mask = per_row_mask(weight.abs(), 0.5)
    torch.testing.assert_close(
        reconstruct_admm(weight, mask, scaled.hessian(layer.name)),
        reconstruct_admm(weight, mask, plain.hessian(layer.name)),
    )


def test_loss_aware_weights_follow_the_loss_and_change_the_fit():
    from hf_gradprobe.oneshot.losses import causal_lm_loss
    from hf_gradprobe.oneshot.probing import probing_mode

    model = make_tiny_llama()
    config = _config(loss_weighting=1.0)
    pruner = pruner_module.OneShotPruner(model, config, token_windows(), causal_lm_loss)
    with probing_mode(model, False):
        weights = pruner._measure_token_weights()
    assert set(weights) == {layer.name for layer in pruner.layers}
    for value in weights.values():
        assert value.shape == (6, 24) and bool(torch.isfinite(value).all()) and float(value.sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # nothing stored on the model
    # Tokens differ in how much the loss leans on them, and the layers' fits follow.
    assert float(weights[pruner.layers[0].name].std()) > 0
    plain = prune_pretrained(make_tiny_llama(), _config(), calibration=token_windows(), progress=False)
    aware = prune_pretrained(make_tiny_llama(), config, calibration=token_windows(), progress=False)
    assert any(
        not torch.equal(a.weight, b.weight)
        for a, b in zip(find_prunable_layers(plain), find_prunable_layers(aware), strict=True)
    )


@settings(max_examples=60, deadline=None)
@given(
    numels=st.lists(st.integers(1, 5000), min_size=1, max_size=12),
    target=st.floats(0.0, 0.95),
    data=st.data(),
)
def test_non_uniform_allocation_keeps_the_total_exact(numels, target, data):
    sparsities = data.draw(st.lists(st.floats(0.0, 0.99), min_size=len(numels), max_size=len(numels)))
    counts = exact_counts(numels, sparsities, target)
    assert sum(counts) == num_to_prune(sum(numels), target)
    assert all(0 <= c <= n for c, n in zip(counts, numels, strict=True))


def test_owl_sparsities_centre_on_the_target_and_spare_the_outlier_rich_blocks():
    ratios = [0.01, 0.05, 0.02, 0.09]
    sparsities = owl_sparsities(ratios, 0.7, 0.08)
    assert math.isclose(sum(sparsities) / len(sparsities), 0.7, abs_tol=1e-12)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    assert sparsities.index(min(sparsities)) == ratios.index(max(ratios))
    assert owl_sparsities([0.03, 0.03], 0.5, 0.1) == [0.5, 0.5]
    assert row_counts(10, 4, 5).tolist() == [3, 3, 2, 2]


@pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_gpt2])
@pytest.mark.parametrize("target", [0.5, 0.7])
def test_owl_allocation_prunes_exactly_the_target_in_total(make, target):
    model = make()
    config = _config(allocation="owl", target_sparsity=target, allocation_strength=0.1)
    model, report = prune_pretrained(model, config, calibration=token_windows(), return_report=True, progress=False)
    layers = find_prunable_layers(model)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    assert zeros == num_to_prune(sum(layer.weight.numel() for layer in layers), target)
    shares = {round(entry["allocated_sparsity"], 2) for entry in report.layers}
    assert len(shares) > 1 and "shortfall" not in report.extra  # non-uniform, and no layer short of its own share


@pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_gpt2])
@pytest.mark.parametrize("target", ["block", "model"])
def test_block_refinement_lowers_the_block_error_and_keeps_the_zeros(make, target, monkeypatch):
    original = pruner_module.refine_block
    checked = []

    def refine(pipeline, index, layers, *args, **kwargs):
        before = [layer.weight.detach() == 0 for layer in layers]
        values = [layer.weight.detach().clone() for layer in layers]
        stats = original(pipeline, index, layers, *args, **kwargs)
        # The same masks: refinement moves kept weights only.
        assert all(torch.equal(layer.weight == 0, mask) for layer, mask in zip(layers, before, strict=True))
        assert any(not torch.equal(layer.weight, value) for layer, value in zip(layers, values, strict=True))
        checked.append(index)
        return stats

    monkeypatch.setattr(pruner_module, "refine_block", refine)
    config = _config(refine_steps=12, refine_lr=1e-3, refine_target=target)
    report = prune_pretrained(make(), config, calibration=token_windows(), return_report=True, progress=False)[1]
    blocks = report.extra["blocks"]
    assert checked == [0, 1] and len(blocks) == 2 and blocks[0]["loss_last"] < blocks[0]["loss_first"]
    assert abs(report.sparsity - 0.5) < 1e-9


def test_a_failed_refinement_leaves_the_block_untouched(monkeypatch):
    model = make_tiny_llama()
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    calls = []

    def failing(pipeline, index, *args, **kwargs):
        calls.append(index)
        if index == 1:
            raise RuntimeError("simulated failure")
        return {}

    monkeypatch.setattr(pruner_module, "refine_block", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        prune_pretrained(model, _config(refine_steps=2), calibration=token_windows(), progress=False)
    for layer in find_prunable_layers(model):
        assert torch.equal(layer.weight, before[layer.name]) == (layer.block_index == 1), layer.name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quality_parts_in_half_precision_keep_exact_sparsity(dtype):
    model = make_tiny_llama().to(dtype)
    config = _config(reconstruction="alps", refine_steps=3, loss_weighting=0.5, allocation="owl")
    model = prune_pretrained(model, config, calibration=token_windows(), progress=False)
    layers = find_prunable_layers(model)
    assert all(layer.weight.dtype == dtype and bool(torch.isfinite(layer.weight).all()) for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    assert zeros == num_to_prune(sum(layer.weight.numel() for layer in layers), 0.5)


def test_quality_parts_under_an_accelerate_device_map():
    from accelerate import dispatch_model

    model = make_tiny_llama()
    names = [name for name, _ in model.named_children()]
    model = dispatch_model(model, device_map=dict.fromkeys(names, "cpu"), force_hooks=True)
    config = _config(reconstruction="alps", refine_steps=2, loss_weighting=0.5)
    model, report = prune_pretrained(model, config, calibration=token_windows(), return_report=True, progress=False)
    assert abs(report.sparsity - 0.5) < 1e-9 and hasattr(model.model.layers[0], "_hf_hook")


def test_quality_options_that_cannot_apply_are_refused_or_recorded_as_what_happens():
    with pytest.raises(ValueError, match="loss_weighting"):
        GradProbeConfig(reconstruction="none", loss_weighting=0.5)
    # N:M and one global threshold fix the counts themselves: the allocation recorded is the one that happens.
    assert GradProbeConfig(allocation="owl", pattern="2:4").allocation == "uniform"
    assert GradProbeConfig(allocation="owl", comparison_group="global", reconstruction="none").allocation == "uniform"
    assert GradProbeConfig(allocation="owl").allocation == "owl"


def test_default_allocation_is_owl_where_calibration_is_read_and_data_free_pruning_stays_data_free(tmp_path):
    assert GradProbeConfig().allocation == "owl"
    assert GradProbeConfig(allocation="uniform").allocation == "uniform"  # an explicit choice is kept
    assert GradProbeConfig(strategy="magnitude", reconstruction="none").allocation == "uniform"
    assert GradProbeConfig(strategy="magnitude", reconstruction="admm").allocation == "owl"
    assert GradProbeConfig(pattern="4:8").allocation == "uniform"
    # Data-free magnitude pruning through keyword arguments needs no calibration, as before OWL was the default.
    model = prune_pretrained(
        make_tiny_llama(), strategy="magnitude", reconstruction="none", target_sparsity=0.5, progress=False
    )
    assert model.pruning_report.config["allocation"] == "uniform"
    # The resolved value is what is saved and read back.
    GradProbeConfig().save_pretrained(tmp_path)
    assert GradProbeConfig.from_pretrained(tmp_path).allocation == "owl"


def test_nm_solver_keeps_n_in_every_group():
    weight, hessian = _layer_problem(5, 8, 16)
    start = nm_mask(weight.abs(), 2, 4)
    updated, _ = solve_masks_and_weights(weight, hessian, quota_selector(start, "2:4", "per_row"))
    assert bool(((updated != 0).reshape(-1, 4).sum(dim=1) <= 2).all())

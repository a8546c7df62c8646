"""GradientProbe: gradients equal autograd's, at shrunk weights, fp16 storage without underflow."""

import copy

import pytest
import torch
import torch.nn.functional as F
from testing_utils import make_tiny_gpt2, make_tiny_llama

from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.oneshot.decision import gradient_growth
from hf_gradprobe.oneshot.losses import causal_lm_loss
from hf_gradprobe.oneshot.probing import GradientProbe, _LayerStatistic, run_probe_batches


def _reference_grads(model, batches, shrink=None, factor=0.1, statistic="max_abs"):
    """Autograd on a deep copy whose candidates are really multiplied by ``factor``."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(True)
    layers = find_prunable_layers(ref)
    with torch.no_grad():
        for layer in layers:
            if shrink and layer.name in shrink:
                layer.weight.mul_(layer.from_out_in(torch.where(shrink[layer.name], factor, 1.0)))
    out = {}
    for batch in batches:
        ref.zero_grad()
        causal_lm_loss(ref, batch).backward()
        for layer in layers:
            g = layer.out_in(layer.weight.grad).abs()
            out[layer.name] = g if layer.name not in out else torch.maximum(out[layer.name], g)
    return out


@pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_gpt2], ids=["llama", "gpt2-conv1d"])
def test_probe_matches_autograd_with_and_without_shrink(make):
    model = make()
    layers = find_prunable_layers(model)
    batches = [torch.randint(0, 200, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    gen = torch.Generator().manual_seed(0)
    shrink = {layer.name: torch.rand(layer.out_in(layer.weight).shape, generator=gen) < 0.5 for layer in layers}
    for masks in (None, shrink):
        expected = _reference_grads(model, batches, masks)
        for p in model.parameters():
            p.requires_grad_(False)
        with GradientProbe(layers, masks, 0.1, "max_abs", torch.float32) as probe:
            run_probe_batches(probe, batches, lambda b: causal_lm_loss(model, b))
        got = probe.results()
        for layer in layers:
            torch.testing.assert_close(got[layer.name], expected[layer.name], rtol=1e-4, atol=1e-7)
        # no parameter gradient was ever allocated, and the weights were never written
        assert all(p.grad is None for p in model.parameters())
        assert all("forward" not in layer.module.__dict__ for layer in layers)


def test_probe_leaves_weights_and_forward_untouched_on_error():
    model = make_tiny_llama()
    layers = find_prunable_layers(model)
    before = {layer.name: layer.weight.detach().clone() for layer in layers}
    shrink = {layer.name: torch.ones(layer.out_in(layer.weight).shape, dtype=torch.bool) for layer in layers}

    def failing_loss(batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), GradientProbe(layers, shrink, 0.1) as probe:
        run_probe_batches(probe, [torch.zeros(1, 8, dtype=torch.long)], failing_loss)
    for layer in layers:
        assert torch.equal(layer.weight, before[layer.name])
        assert "forward" not in layer.module.__dict__


def test_fp16_storage_keeps_tiny_gradients():
    # 1e-9 is far below fp16's smallest subnormal (6e-8): unscaled storage would flush it to zero.
    stat = _LayerStatistic("max_abs", torch.float16)
    grad = torch.full((4, 4), 1e-9)
    grad[0, 0] = 3e-9
    stat.add(grad)
    stat.add(grad * 0.5)
    result = stat.result()
    assert (result > 0).all()
    torch.testing.assert_close(result, grad, rtol=1e-3, atol=0)
    assert stat.buffer.dtype == torch.float16


@pytest.mark.parametrize("statistic", ["max_abs", "mean_abs", "abs_sum"])
def test_statistics_aggregate_as_documented(statistic):
    stat = _LayerStatistic(statistic, torch.float32)
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[-3.0, 1.0]])
    stat.add(a)
    stat.add(b)
    expected = {
        "max_abs": torch.tensor([[3.0, 2.0]]),
        "mean_abs": torch.tensor([[2.0, 1.5]]),
        "abs_sum": torch.tensor([[2.0, 1.0]]),
    }[statistic]
    torch.testing.assert_close(stat.result(), expected)


def test_gradient_growth_edge_cases():
    g0 = torch.tensor([1.0, 0.0, 0.0, 2.0])
    g1 = torch.tensor([1.5, 0.0, 1.0, 1.0])
    growth = gradient_growth(g0, g1)
    assert growth.tolist() == [0.5, 0.0, float("inf"), -0.5]


def test_half_precision_model_gradients_are_fp32_and_finite():
    model = make_tiny_llama().to(torch.float16)
    layers = find_prunable_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    batch = torch.randint(0, 200, (1, 16))
    with GradientProbe(layers, None, 0.1, "max_abs", torch.float16) as probe:
        kept = run_probe_batches(probe, [batch], lambda b: causal_lm_loss(model, b), half_precision_fp16=True)
    assert kept == 1
    for name, g in probe.results().items():
        assert g.dtype == torch.float32 and torch.isfinite(g).all() and (g > 0).any(), name
    # the fp32 reference on an fp32 copy of the same weights agrees to fp16 accuracy
    ref = _reference_grads(model.float(), [batch])
    for layer in layers:
        err = (probe.results()[layer.name] - ref[layer.name]).abs().max() / ref[layer.name].abs().max()
        assert err < 0.05, layer.name


def test_unknown_statistic_rejected():
    with pytest.raises(ValueError, match="gradient_statistic"):
        GradientProbe([], statistic="median")


def test_loss_helper_matches_manual_cross_entropy():
    model = make_tiny_llama()
    ids = torch.randint(0, 200, (2, 10))
    logits = model(input_ids=ids).logits
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(causal_lm_loss(model, ids), manual)


def test_probe_keeps_and_restores_an_accelerate_hook_on_a_linear():
    from accelerate.hooks import ModelHook, add_hook_to_module

    class CountingHook(ModelHook):
        calls = 0

        def pre_forward(self, module, *args, **kwargs):
            CountingHook.calls += 1
            return args, kwargs

    model = make_tiny_llama()
    layers = find_prunable_layers(model)
    target = layers[0].module
    add_hook_to_module(target, CountingHook())
    wrapper = target.forward
    ids = torch.randint(4, 200, (1, 12))
    with GradientProbe(layers) as probe:
        causal_lm_loss(model, ids).backward()
        probe.commit_batch()
    assert CountingHook.calls == 1, "the hook ran while probing (weights it moves in are the ones probed)"
    assert target.forward is wrapper and hasattr(target, "_hf_hook"), "the hook's wrapper is put back"
    model(input_ids=ids)
    assert CountingHook.calls == 2
    assert all("forward" not in layer.module.__dict__ for layer in layers[1:]), "no stray instance attribute"


def test_kl_probe_loss_changes_the_decision_and_refuses_a_gradient_threshold():
    import hf_gradprobe as hg

    windows = torch.randint(4, 200, (6, 24), generator=torch.Generator().manual_seed(0))
    base = {
        "num_calibration_samples": 6,
        "calibration_seq_len": 24,
        "num_probe_samples": 3,
        "calibration_batch_size": 2,
    }
    reports = {}
    for probe_loss in ("lm", "kl"):
        model = make_tiny_llama()
        config = hg.GradProbeConfig(probe=True, reconstruction="none", probe_loss=probe_loss, **base)
        reports[probe_loss] = hg.prune_pretrained(
            model, config, calibration=windows, return_report=True, progress=False
        )
    masks = {k: [layer.weight == 0 for layer in find_prunable_layers(m)] for k, (m, _) in reports.items()}
    assert any(not torch.equal(a, b) for a, b in zip(masks["lm"], masks["kl"], strict=True))
    assert abs(reports["kl"][1].sparsity - 0.5) < 1e-6
    with pytest.raises(ValueError, match="probe_loss.*gradient_threshold"):
        hg.GradProbeConfig(probe_loss="kl", gradient_threshold=0.5, **base)

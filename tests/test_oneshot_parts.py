# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The registered parts of one-shot pruning: strategies, reconstructors, the statistics collector, and the
config values they decide (what needs calibration, what runs block by block)."""

import pytest
import torch
from testing_utils import make_tiny_llama, make_tiny_tokenizer, tiny_gradprobe_config, token_windows

from hf_gradprobe import GradProbeConfig, prune_pretrained
from hf_gradprobe.core.hooks import HookSet, replaced_forward
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.registry import Registry
from hf_gradprobe.oneshot.config import QUALITY_PRESET
from hf_gradprobe.oneshot.reconstructors import RECONSTRUCTORS, Reconstructor
from hf_gradprobe.oneshot.statistics import InputStatistics
from hf_gradprobe.oneshot.strategies import STRATEGIES, MagnitudeStrategy


def test_registry_refuses_duplicates_and_names_the_choices():
    registry = Registry("strategy", "strategy")
    registry.register(MagnitudeStrategy())
    with pytest.raises(KeyError, match="registered already"):
        registry.register(MagnitudeStrategy())
    with pytest.raises(ValueError, match=r"`strategy` must be one of \['magnitude'\], got 'wandaa'"):
        registry.get("wandaa")

    class Nameless:
        name = "Upper"

    with pytest.raises(ValueError, match="lower-case"):
        registry.register(Nameless())
    assert "magnitude" in registry and "wanda" not in registry and list(registry) == ["magnitude"]


def test_config_choices_come_from_the_registries():
    assert STRATEGIES.names() == ["magnitude", "wanda"]
    assert RECONSTRUCTORS.names()[:3] == ["none", "admm", "sparsegpt"]
    with pytest.raises(ValueError, match="`reconstruction` must be one of"):
        GradProbeConfig(reconstruction="exact")


@pytest.mark.parametrize(
    ("settings", "needs_calibration", "blockwise"),
    [
        ({"strategy": "magnitude", "reconstruction": "none"}, False, False),
        ({"strategy": "magnitude", "reconstruction": "none", "layerwise": True}, False, False),
        ({"strategy": "wanda", "reconstruction": "none"}, True, False),
        ({"strategy": "wanda", "reconstruction": "none", "layerwise": True}, True, True),
        ({"strategy": "magnitude", "reconstruction": "admm"}, True, True),
        ({"strategy": "magnitude", "reconstruction": "none", "probe": True}, True, False),
    ],
)
def test_what_a_config_needs_is_decided_once(settings, needs_calibration, blockwise):
    config = GradProbeConfig(**settings)
    assert (config.needs_calibration, config.blockwise) == (needs_calibration, blockwise)


@pytest.mark.parametrize(("pattern", "sparsity"), [("2:4", 0.5), ("1:4", 0.75), ("4:8", 0.5), ("1:2", 0.5)])
def test_nm_config_records_the_sparsity_it_gets(pattern, sparsity):
    config = GradProbeConfig(pattern=pattern, target_sparsity=0.3)
    assert config.target_sparsity == sparsity and config.to_dict()["target_sparsity"] == sparsity


def test_kl_probe_loss_with_a_custom_loss_is_refused_before_any_work():
    model = make_tiny_llama()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = tiny_gradprobe_config(probe=True, probe_loss="kl")
    with pytest.raises(ValueError, match="probe_loss`='kl'.*custom `loss_fn`"):
        prune_pretrained(model, config, calibration=token_windows(), loss_fn=lambda m, ids: m(ids).logits.mean())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_input_statistics_sum_of_squares_matches_the_second_moments():
    model = make_tiny_llama()
    layers = [layer for layer in find_prunable_layers(model) if layer.block_index == 0]
    windows = token_windows(4, 16)
    sums = InputStatistics([[layer] for layer in layers], second_moments=False)
    moments = InputStatistics([[layer] for layer in layers], second_moments=True)
    with sums, moments, torch.no_grad():
        model(input_ids=windows)
    assert not sums._handles and not moments._handles  # removed on exit
    for layer in layers:
        torch.testing.assert_close(sums.sq_norms(layer.name), moments.sq_norms(layer.name), rtol=1e-5, atol=1e-5)
        hessian = moments.hessian(layer.name)
        torch.testing.assert_close(hessian.diagonal() * 4 * 16, sums.sq_norms(layer.name), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="second moments"):
        sums.hessian(layers[0].name)
    with pytest.raises(RuntimeError, match="not among the hooked layers"):
        sums.sq_norms("model.norm")


def test_hooks_are_removed_when_attaching_fails():
    model = make_tiny_llama()

    class Broken(HookSet):
        def attach(self):
            self.pre_hook(model.model.layers[0], lambda *args: None)
            raise RuntimeError("boom")

    broken = Broken()
    with pytest.raises(RuntimeError, match="boom"), broken:
        pass
    assert not broken._handles and not model.model.layers[0]._forward_pre_hooks


def test_replaced_forward_puts_back_exactly_what_was_there():
    module = torch.nn.Linear(2, 2)
    with replaced_forward(module, lambda x: x * 0):
        assert torch.equal(module(torch.ones(1, 2)), torch.zeros(1, 2))
    assert "forward" not in module.__dict__
    wrapper = module.forward
    module.forward = wrapper  # an instance attribute, as a hook library sets one
    with replaced_forward(module, lambda x: x):
        pass
    assert module.__dict__["forward"] is wrapper


def test_a_registered_reconstructor_plugs_in_without_touching_the_pruner(monkeypatch):
    """A new method is one registered class: the pruner calls it with the decided masks."""
    seen = []

    class Halve(Reconstructor):
        name = "halve"

        def solve(self, dense, mask, hessian, config):
            seen.append((tuple(dense.shape), bool(mask.any()), tuple(hessian.shape)))
            return dense.float().masked_fill(mask, 0.0) * 0.5, mask

    monkeypatch.setitem(RECONSTRUCTORS._parts, "halve", Halve())
    model = make_tiny_llama()
    dense = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    config = tiny_gradprobe_config(reconstruction="halve")
    prune_pretrained(model, config, calibration=token_windows(), tokenizer=make_tiny_tokenizer(), progress=False)
    assert len(seen) == len(dense)
    for layer in find_prunable_layers(model):
        kept = layer.weight != 0
        torch.testing.assert_close(layer.weight[kept], dense[layer.name][kept] * 0.5)


def test_quality_preset_is_a_config_with_overrides():
    config = GradProbeConfig.quality(target_sparsity=0.7)
    assert config.target_sparsity == 0.7 and config.method == "wanda-alps-refined-owl"
    assert GradProbeConfig.quality(pattern="2:4").allocation == "uniform"  # N:M fixes the counts
    assert GradProbeConfig.quality().to_dict() == GradProbeConfig(**QUALITY_PRESET).to_dict()
    assert QUALITY_PRESET.keys() <= {f for f in GradProbeConfig.__dataclass_fields__}

"""prune_pretrained on CUDA and on models dispatched by Accelerate (device maps)."""

import pytest
import torch
from testing_utils import make_tiny_llama, require_cuda

from hf_gradprobe import GradProbeConfig, compute_perplexity, prune_pretrained
from hf_gradprobe.core.layers import find_prunable_layers


def _windows(n=6, length=24):
    return torch.randint(4, 200, (n, length), generator=torch.Generator().manual_seed(0))


def _config(**kw):
    return GradProbeConfig(
        num_calibration_samples=6,
        calibration_seq_len=24,
        num_probe_samples=3,
        **{"reconstruction": "none", "probe": True, "allocation": "uniform", **kw},
    )


def _assert_exact_rows(model, sparsity=0.5):
    for layer in find_prunable_layers(model):
        zeros = (layer.out_in(layer.weight) == 0).sum(dim=1)
        assert (zeros == round(sparsity * layer.out_in(layer.weight).shape[1])).all(), layer.name


@pytest.mark.parametrize("layerwise", [False, True])
def test_accelerate_dispatched_model(layerwise, tmp_path):
    from accelerate import dispatch_model

    model = make_tiny_llama()
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    # Accelerate's hooks on every block, as a multi-device map installs them (all on CPU here).
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = dispatch_model(model, device_map=device_map, force_hooks=True)
    assert hasattr(model.model.layers[0], "_hf_hook")
    prune_pretrained(model, _config(layerwise=layerwise), calibration=_windows(), progress=False)
    _assert_exact_rows(model)
    for layer in find_prunable_layers(model):
        kept = layer.weight != 0
        assert torch.equal(layer.weight[kept], before[layer.name][kept])


@require_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layerwise", [False, True])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_cuda_dtypes(dtype, layerwise, pattern):
    model = make_tiny_llama().to("cuda", dtype)
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}
    report = prune_pretrained(
        model,
        _config(layerwise=layerwise, pattern=pattern),
        calibration=_windows(),
        return_report=True,
        progress=False,
    )[1]
    assert report.device.startswith("cuda") and report.peak_memory_bytes > 0
    for layer in find_prunable_layers(model):
        assert layer.weight.device.type == "cuda" and layer.weight.dtype == dtype
        kept = layer.weight != 0
        assert torch.equal(layer.weight[kept], before[layer.name][kept])
    assert abs(report.sparsity - 0.5) < 1e-3
    assert torch.isfinite(
        torch.tensor(compute_perplexity(model, None, _windows().reshape(-1), seq_len=24, progress=False).perplexity)
    )


@require_cuda
def test_cuda_device_map_auto(tmp_path):
    make_tiny_llama().save_pretrained(tmp_path)
    model = prune_pretrained(
        str(tmp_path), _config(), calibration=_windows(), device_map="auto", dtype="bfloat16", progress=False
    )
    assert next(model.parameters()).device.type == "cuda"
    _assert_exact_rows(model)

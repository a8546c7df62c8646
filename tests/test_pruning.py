"""prune_pretrained end to end on tiny models: exact sparsity, exact restoration, modes, dtypes, failures."""

import copy

import pytest
import torch
from testing_utils import (
    make_tiny_bert,
    make_tiny_gpt2,
    make_tiny_llama,
    make_tiny_mistral,
    tiny_gradprobe_config,
    token_windows,
)

from hf_gradprobe import prune_pretrained
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import parse_nm_pattern
from hf_gradprobe.oneshot.statistics import InputStatistics
from hf_gradprobe.oneshot.strategies import wanda_scores


_windows = token_windows
_config = tiny_gradprobe_config


def _snapshot(model):
    return {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}


def _check_exact(model, config):
    nm = parse_nm_pattern(config.pattern)
    layers = find_prunable_layers(model)
    zeros = [layer.out_in(layer.weight) == 0 for layer in layers]
    if nm:
        for z in zeros:
            assert (z.reshape(-1, nm[1]).sum(dim=1) == nm[1] - nm[0]).all()
    elif config.comparison_group == "per_row":
        for z in zeros:
            assert (z.sum(dim=1) == round(config.target_sparsity * z.shape[1])).all()
    elif config.comparison_group == "per_layer":
        for z in zeros:
            assert z.sum() == round(config.target_sparsity * z.numel())
    else:
        total = sum(z.numel() for z in zeros)
        assert abs(sum(int(z.sum()) for z in zeros) - config.target_sparsity * total) <= 1


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole-model", "layerwise"])
@pytest.mark.parametrize(
    "group,pattern",
    [
        ("per_row", "unstructured"),
        ("per_layer", "unstructured"),
        ("global", "unstructured"),
        ("per_row", "2:4"),
        ("per_row", "4:8"),
    ],
)
@pytest.mark.parametrize("strategy", ["magnitude", "wanda"])
def test_exact_sparsity_and_exact_restoration(layerwise, group, pattern, strategy):
    model = make_tiny_llama()
    before = _snapshot(model)
    if layerwise and group == "global" and pattern == "unstructured":
        with pytest.raises(ValueError, match="global.*layerwise"):
            _config(strategy=strategy, comparison_group=group, pattern=pattern, layerwise=layerwise)
        return
    config = _config(strategy=strategy, comparison_group=group, pattern=pattern, layerwise=layerwise)
    pruned, report = prune_pretrained(model, config, calibration=_windows(), return_report=True, progress=False)
    assert pruned is model and model.pruning_report is report
    _check_exact(model, config)
    for layer in find_prunable_layers(model):
        w, w0 = layer.weight.detach(), before[layer.name]
        kept = w != 0
        assert torch.equal(w[kept], w0[kept]), "every weight not pruned keeps its exact original value"
    assert report.restored > 0 and report.candidates > report.restored
    assert abs(report.sparsity - 0.5) < 0.01


def test_probe_changes_the_choice_and_keeps_candidates_only():
    model = make_tiny_llama()
    plain = copy.deepcopy(model)
    prune_pretrained(plain, _config(probe=False), calibration=_windows(), progress=False)
    prune_pretrained(model, _config(candidate_ratio=1.5), calibration=_windows(), progress=False)
    diff = sum(
        int(((a.weight == 0) != (b.weight == 0)).sum())
        for a, b in zip(find_prunable_layers(model), find_prunable_layers(plain), strict=True)
    )
    assert diff > 0, "the probe must move some of the strategy's choices"


def test_layerwise_scores_block_one_on_pruned_block_zero():
    """Layerwise Wanda: block 1's activation norms come from a model whose block 0 is already pruned."""
    windows = _windows()
    cfg = _config(strategy="wanda", probe=False, layerwise=True, num_probe_samples=1)
    layerwise = prune_pretrained(make_tiny_llama(), cfg, calibration=windows, progress=False)
    whole = prune_pretrained(
        make_tiny_llama(), _config(strategy="wanda", probe=False), calibration=windows, progress=False
    )
    # Reference: prune block 0 as whole-model Wanda would, then score block 1 on that model.
    reference = make_tiny_llama()
    ref_layers = find_prunable_layers(reference)
    block0 = [layer for layer in ref_layers if layer.block_index == 0]
    block1 = [layer for layer in ref_layers if layer.block_index == 1]
    whole_layers = {layer.name: layer for layer in find_prunable_layers(whole)}
    with torch.no_grad():
        for layer in block0:
            layer.weight.copy_(whole_layers[layer.name].weight)
        with InputStatistics([[layer] for layer in block1], second_moments=False) as collector:
            for w in windows:
                reference(input_ids=w[None])
    lw_layers = {layer.name: layer for layer in find_prunable_layers(layerwise)}
    differs = False
    for layer in block1:
        scores = wanda_scores(layer, collector.sq_norms(layer.name))
        expected = scores <= scores.kthvalue(round(0.5 * scores.shape[1]), dim=1, keepdim=True).values
        got = layer.out_in(lw_layers[layer.name].weight) == 0
        assert torch.equal(got, expected), layer.name
        differs |= not torch.equal(got, layer.out_in(whole_layers[layer.name].weight) == 0)
    assert differs, "seeing block 0's pruning must change some of block 1's choices"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layerwise", [False, True])
def test_half_precision_models(dtype, layerwise):
    model = make_tiny_llama().to(dtype)
    before = _snapshot(model)
    config = _config(layerwise=layerwise)
    prune_pretrained(model, config, calibration=_windows(), progress=False)
    _check_exact(model, config)
    for layer in find_prunable_layers(model):
        assert layer.weight.dtype == dtype
        kept = layer.weight != 0
        assert torch.equal(layer.weight[kept], before[layer.name][kept])


@pytest.mark.parametrize("make", [make_tiny_gpt2, make_tiny_mistral], ids=["gpt2-conv1d", "mistral"])
@pytest.mark.parametrize("layerwise", [False, True])
def test_other_architectures(make, layerwise):
    model = make()
    config = _config(layerwise=layerwise, pattern="2:4")
    report = prune_pretrained(model, config, calibration=_windows(), return_report=True, progress=False)[1]
    _check_exact(model, config)
    assert len(report.layers) == len(find_prunable_layers(model))


def test_bert_needs_and_uses_a_user_loss():
    from transformers import BertModel

    bert = BertModel(make_tiny_bert().config)
    with pytest.raises(ValueError, match="loss_fn"):
        prune_pretrained(bert, _config(), calibration=_windows(), progress=False)

    def loss_fn(model, input_ids):
        return model(input_ids=input_ids).last_hidden_state.pow(2).mean()

    config = _config(layerwise=True)
    prune_pretrained(bert, config, calibration=_windows(), loss_fn=loss_fn, progress=False)
    _check_exact(bert, config)


@pytest.mark.parametrize("layerwise", [False, True])
def test_failure_midway_leaves_no_block_half_pruned(layerwise):
    model = make_tiny_llama()
    before = _snapshot(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    calls = {"n": 0}

    def flaky_loss(m, input_ids):
        calls["n"] += 1
        # layerwise: inside block 1 (block 0 takes 3 probe windows); whole model: inside the probe pass
        if calls["n"] > (4 if layerwise else 1):
            raise RuntimeError("simulated failure")
        return m(input_ids=input_ids).logits.float().logsumexp(-1).mean()

    with pytest.raises(RuntimeError, match="simulated failure"):
        prune_pretrained(
            model, _config(layerwise=layerwise), calibration=_windows(), loss_fn=flaky_loss, progress=False
        )
    blocks = {}
    for layer in find_prunable_layers(model):
        unchanged = torch.equal(layer.weight, before[layer.name])
        blocks.setdefault(layer.block_index, set()).add(unchanged)
        assert "forward" not in layer.module.__dict__
    assert all(len(states) == 1 for states in blocks.values()), "a block is either fully decided or untouched"
    assert blocks[1] == {True}
    if layerwise:
        assert blocks[0] == {False}, "block 0 was decided before the failure"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert type(model.model.layers[0]).__name__ == "LlamaDecoderLayer"  # pass-throughs removed


def test_caller_state_restored():
    model = make_tiny_llama()
    model.train()
    model.lm_head.weight.requires_grad_(False)
    prune_pretrained(model, _config(probe_gradient_checkpointing=True), calibration=_windows(), progress=False)
    assert model.training
    assert not model.lm_head.weight.requires_grad and model.model.embed_tokens.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not model.is_activation_checkpointing


def test_magnitude_without_probe_needs_no_data():
    model = make_tiny_llama()
    prune_pretrained(model, _config(strategy="magnitude", probe=False), progress=False)
    _check_exact(model, _config())


def test_missing_calibration_and_unknown_override():
    with pytest.raises(ValueError, match="calibration"):
        prune_pretrained(make_tiny_llama(), _config(), progress=False)
    with pytest.raises(TypeError, match="spars"):
        prune_pretrained(make_tiny_llama(), _config(), calibration=_windows(), sparsty=0.5)


def test_overrides_and_text_calibration(tiny_tokenizer):
    from testing_utils import sample_text

    model = make_tiny_llama()
    report = prune_pretrained(
        model,
        calibration=[sample_text(400, seed=s) for s in range(3)],
        tokenizer=tiny_tokenizer,
        num_calibration_samples=4,
        calibration_seq_len=32,
        num_probe_samples=2,
        target_sparsity=0.25,
        return_report=True,
        progress=False,
    )[1]
    assert abs(report.sparsity - 0.25) < 0.01
    assert report.calibration["num_samples"] == 4 and report.config["target_sparsity"] == 0.25
    d = report.to_dict()
    assert d["method"] == "wanda-admm-owl" and d["config"]["target_sparsity"] == 0.25 and d["layers"]


@pytest.mark.parametrize("layerwise", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradient_threshold_path_uses_dense_gradients(layerwise, dtype):
    model = make_tiny_llama().to(dtype)
    before = _snapshot(model)
    config = _config(layerwise=layerwise, gradient_threshold=0.0, gradient_statistic="mean_abs")
    report = prune_pretrained(model, config, calibration=_windows(), return_report=True, progress=False)[1]
    _check_exact(model, config)
    assert all(layer["grown"] is not None and 0 <= layer["grown"] <= layer["candidates"] for layer in report.layers)
    assert any(layer["grown"] > 0 for layer in report.layers)
    for layer in find_prunable_layers(model):
        kept = layer.weight != 0
        assert torch.equal(layer.weight[kept], before[layer.name][kept])


@pytest.fixture
def logs(caplog):
    """hf_gradprobe's log records (its loggers do not propagate to the root logger)."""
    import logging

    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("hf_gradprobe")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_are_never_pruned_one_shot(bad):
    model = make_tiny_llama()
    layer = find_prunable_layers(model)[0]
    with torch.no_grad():
        layer.weight[0, :3] = bad
    for group in ("per_row", "per_layer", "global"):
        prune_pretrained(
            model, _config(strategy="magnitude", probe=False, comparison_group=group, target_sparsity=0.5)
        )
        assert not (layer.weight[0, :3] == 0).any(), group  # NaN used to rank as the most prunable


def test_one_token_windows_and_a_nonfinite_probe_loss_are_refused():
    from hf_gradprobe.oneshot.losses import causal_lm_loss

    with pytest.raises(ValueError, match="seq_len >= 2"):
        prune_pretrained(make_tiny_llama(), _config(), calibration=_windows(length=1), progress=False)
    with pytest.raises(ValueError, match="calibration_seq_len"):
        prune_pretrained(
            make_tiny_llama(), _config(calibration_seq_len=1), calibration=["some text " * 20], progress=False
        )

    def nan_loss(model, input_ids):
        return causal_lm_loss(model, input_ids) * float("nan")

    model = make_tiny_llama()
    before = _snapshot(model)
    with pytest.raises(FloatingPointError, match="probe loss on calibration window batch 0"):
        prune_pretrained(model, _config(), calibration=_windows(), loss_fn=nan_loss, progress=False)
    assert all(torch.equal(before[name], weight) for name, weight in _snapshot(model).items())


def test_token_ids_beyond_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"calibration.*token ids in \[\d+, 9999\].*vocabulary has 260"):
        windows = _windows()
        windows[0, 0] = 9999
        prune_pretrained(make_tiny_llama(), _config(), calibration=windows, progress=False)


def test_rows_pruned_entirely_are_warned_and_counted(logs):
    config = _config(strategy="magnitude", probe=False, comparison_group="per_row", target_sparsity=0.999)
    report = prune_pretrained(make_tiny_llama(), config, return_report=True, progress=False)[1]
    assert report.extra["fully_pruned_rows"] > 0
    assert sum(layer.get("fully_pruned_rows", 0) for layer in report.layers) == report.extra["fully_pruned_rows"]
    assert "rounds to pruning every output row" in logs.text and "fully_pruned_rows" in logs.text
    report = prune_pretrained(make_tiny_llama(), _config(probe=False, strategy="magnitude"), return_report=True)[1]
    assert "fully_pruned_rows" not in report.to_dict()


def test_a_tied_lm_head_reports_the_embedding_it_shares(logs):
    model = make_tiny_llama(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    config = _config(strategy="magnitude", probe=False, targets=["lm_head"], target_sparsity=0.5)
    report = prune_pretrained(model, config, return_report=True, progress=False)[1]
    (entry,) = report.layers
    assert entry["name"] == "lm_head" and entry["tied_with"] == ["model.embed_tokens.weight"]
    assert report.to_dict()["tied_parameters_pruned"] == ["model.embed_tokens.weight"]
    assert 0.5 <= (model.model.embed_tokens.weight == 0).float().mean() < 0.51  # the input embedding lost them too
    assert "tied to model.embed_tokens.weight" in logs.text


def test_a_model_on_the_meta_device_is_refused():
    model = make_tiny_llama().to("meta")
    with pytest.raises(ValueError, match="`model_or_id` has .* parameters on the meta device"):
        prune_pretrained(model, _config(strategy="magnitude", probe=False))

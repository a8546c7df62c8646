# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`compute_perplexity` against an independent exp(mean NLL) on tiny models."""

import math

import pytest
import torch
from testing_utils import make_tiny_gpt2, make_tiny_llama, require_cuda, sample_text

from hf_gradprobe.core.runtime import model_input_device
from hf_gradprobe.evaluation.perplexity import compute_perplexity, token_nll_sum


# A wide init makes the tiny models' predictions far from uniform, so scoring the wrong token shows.
SHARP = {"initializer_range": 0.5}


def reference_nll(model, windows, labels=None):
    """Summed NLL and token count, written out: log_softmax, then the log-probability of the next token."""
    labels = windows if labels is None else labels
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=windows).logits.double(), dim=-1)
    targets = labels[:, 1:]
    scored = targets != -100
    picked = log_probs[:, :-1].gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked[scored].sum().item(), int(scored.sum())


@pytest.fixture
def corpus_ids(tiny_tokenizer):
    return torch.tensor(tiny_tokenizer(sample_text(200, seed=1), add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_gpt2])
def test_matches_independent_perplexity(make, corpus_ids):
    model = make(**SHARP)
    result = compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False)
    windows = corpus_ids[: 12 * 16].reshape(12, 16)
    nll, tokens = reference_nll(model, windows)
    assert result.windows == 12 and result.tokens == tokens == 12 * 15 and result.seq_len == 16
    assert result.nll == pytest.approx(nll / tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert abs(math.log(result.perplexity / 260)) > 0.5  # far from uniform (vocabulary 260)
    assert result.seconds >= 0 and set(result.to_dict()) >= {"perplexity", "tokens", "seconds"}


def test_shifted_labels_would_differ(corpus_ids):
    # Guard for the test above: with this init, scoring each token against the wrong position moves the value.
    model = make_tiny_llama(**SHARP)
    windows = corpus_ids[:64].reshape(4, 16)
    right, _ = reference_nll(model, windows)
    shifted, _ = reference_nll(model, windows, labels=torch.roll(windows, 1, dims=1))
    assert abs(right - shifted) / right > 0.01


def test_max_windows_and_stride(corpus_ids):
    model = make_tiny_llama(**SHARP)
    result = compute_perplexity(model, data=corpus_ids, seq_len=16, max_windows=3, progress=False)
    nll, tokens = reference_nll(model, corpus_ids[:48].reshape(3, 16))
    assert result.tokens == tokens == 45 and result.perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-5)

    strided = compute_perplexity(model, data=corpus_ids, seq_len=16, stride=8, progress=False)
    starts = range(0, corpus_ids.numel() - 16 + 1, 8)
    total_nll = total_tokens = 0
    for index, start in enumerate(starts):
        window = corpus_ids[start : start + 16].unsqueeze(0)
        labels = window.clone()
        labels[0, : 8 if index else 1] = -100  # later windows score only their last 8 (new) tokens
        nll, tokens = reference_nll(model, window, labels)
        total_nll, total_tokens = total_nll + nll, total_tokens + tokens
    assert strided.tokens == total_tokens == starts[-1] + 16 - 1
    assert strided.perplexity == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)


def test_batch_size_does_not_change_result(corpus_ids):
    model = make_tiny_gpt2(**SHARP)
    one = compute_perplexity(model, data=corpus_ids, seq_len=16, batch_size=1, progress=False)
    three = compute_perplexity(model, data=corpus_ids, seq_len=16, batch_size=3, progress=False)
    assert one.tokens == three.tokens and one.windows == three.windows == 12
    assert three.perplexity == pytest.approx(one.perplexity, rel=1e-6)


def test_train_eval_mode_restored(corpus_ids):
    model = make_tiny_gpt2(**SHARP)  # dropout 0.1: train mode would make the value random
    expected = compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False).perplexity
    assert not model.training
    model.train()
    got = compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False).perplexity
    assert model.training and all(m.training for m in model.modules())
    assert got == pytest.approx(expected, rel=1e-6)


def test_text_file_and_list_match_ids(tiny_tokenizer, tmp_path):
    model = make_tiny_llama()
    text = sample_text(100, seed=2)
    ids = torch.tensor(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    from_ids = compute_perplexity(model, data=ids, seq_len=16, progress=False)
    from_file = compute_perplexity(model, tiny_tokenizer, str(path), seq_len=16, progress=False)
    from_list = compute_perplexity(model, tiny_tokenizer, [text], seq_len=16, progress=False)
    assert from_file.perplexity == from_ids.perplexity == from_list.perplexity
    assert from_file.tokens == 6 * 15


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model(dtype, corpus_ids):
    model = make_tiny_llama(**SHARP)
    reference = compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False).perplexity
    half = compute_perplexity(model.to(dtype), data=corpus_ids, seq_len=16, progress=False).perplexity
    assert math.isfinite(half) and half == pytest.approx(reference, rel=0.05)
    assert next(model.parameters()).dtype == dtype  # the model is left as it is


@require_cuda
def test_cuda_model(corpus_ids):
    model = make_tiny_llama(**SHARP)
    reference = compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False).perplexity
    model.cuda()
    assert model_input_device(model).type == "cuda"
    assert compute_perplexity(model, data=corpus_ids, seq_len=16, progress=False).perplexity == pytest.approx(
        reference, rel=1e-4
    )


def test_token_nll_sum_skips_ignored_labels():
    logits = torch.zeros(1, 4, 5)  # uniform: every scored token costs log(5)
    labels = torch.tensor([[0, 1, -100, 3]])
    nll, count = token_nll_sum(logits, labels)
    assert count == 2 and nll.item() == pytest.approx(2 * math.log(5))
    assert nll.dtype == torch.float32
    assert token_nll_sum(logits.half(), labels)[0].dtype == torch.float32


class TestErrors:
    def test_data_required(self):
        with pytest.raises(ValueError, match="`data` is required"):
            compute_perplexity(make_tiny_llama(), data=None)

    def test_batch_size(self, corpus_ids):
        with pytest.raises(ValueError, match="`batch_size`.*got 0"):
            compute_perplexity(make_tiny_llama(), data=corpus_ids, batch_size=0)

    def test_too_short(self, tiny_tokenizer):
        with pytest.raises(ValueError, match=r"holds 5 tokens, fewer than one window of `seq_len`=16"):
            compute_perplexity(make_tiny_llama(), tiny_tokenizer, ["short"], seq_len=16, progress=False)

    def test_tokenizer_needed_for_text(self):
        with pytest.raises(ValueError, match="`tokenizer=`"):
            compute_perplexity(make_tiny_llama(), None, ["some text"], seq_len=4)


def test_progress_bar_honours_the_transformers_and_hub_switches(corpus_ids, capsys, monkeypatch):
    import sys

    import huggingface_hub.utils
    from transformers.utils import logging as hf_logging

    model = make_tiny_llama()

    def bar_shown(**kwargs) -> bool:
        capsys.readouterr()
        compute_perplexity(model, data=corpus_ids, seq_len=16, **kwargs)
        return "Perplexity" in capsys.readouterr().err

    assert bar_shown() and not bar_shown(progress=False)
    hf_logging.disable_progress_bar()
    try:
        assert not bar_shown()
    finally:
        hf_logging.enable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    try:
        assert not bar_shown()
    finally:
        huggingface_hub.utils.enable_progress_bars()
    # HF_HUB_DISABLE_PROGRESS_BARS=1, as huggingface_hub reads it at import.
    hub_tqdm = sys.modules[huggingface_hub.utils.are_progress_bars_disabled.__module__]
    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    assert not bar_shown()
    monkeypatch.undo()
    assert bar_shown()

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The `evaluate` perplexity module shipped in the package, in-memory and from a saved folder."""

import math
import os

import evaluate
import pytest
import torch
from testing_utils import BOS_ID, make_tiny_gpt2, make_tiny_llama, sample_text, save_tiny_model

from hf_gradprobe.evaluation import PERPLEXITY_METRIC_PATH, compute_perplexity


SHARP = {"initializer_range": 0.5}  # predictions far from uniform, so a wrong token or window shows


@pytest.fixture(scope="module")
def perplexity():
    return evaluate.load(PERPLEXITY_METRIC_PATH, keep_in_memory=True)


@pytest.fixture(scope="module")
def texts():
    return [sample_text(40, 1), sample_text(7, 2), sample_text(90, 3), "x"]


def text_nll(model, tokenizer, text, max_length=None, bos=True):
    """Summed NLL and scored tokens of one text, windowed by hand: log_softmax + gather per window."""
    ids = ([BOS_ID] if bos else []) + tokenizer(text, add_special_tokens=False)["input_ids"]
    step = max_length or len(ids)
    nll, count = 0.0, 0
    for start in range(0, len(ids), step):
        window = torch.tensor(ids[start : start + step]).unsqueeze(0)
        if window.shape[1] < 2:
            continue
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=window).logits.double(), dim=-1)
        nll -= log_probs[0, :-1].gather(-1, window[0, 1:].unsqueeze(-1)).sum().item()
        count += window.shape[1] - 1
    return nll, count


def test_loads_offline_from_folder_and_file():
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    assert os.path.isabs(PERPLEXITY_METRIC_PATH) and os.path.isdir(PERPLEXITY_METRIC_PATH)
    folder = evaluate.load(PERPLEXITY_METRIC_PATH, keep_in_memory=True)
    file = evaluate.load(os.path.join(PERPLEXITY_METRIC_PATH, "perplexity.py"), keep_in_memory=True)
    assert type(folder).__name__ == type(file).__name__ == "Perplexity"
    assert "in-memory" in folder.description and "max_length" in folder.inputs_description
    assert os.path.isfile(os.path.join(PERPLEXITY_METRIC_PATH, "README.md"))


def test_in_memory_matches_independent_computation(perplexity, texts, tiny_tokenizer):
    model = make_tiny_llama(**SHARP)
    result = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer, batch_size=3)
    assert set(result) == {"perplexity", "perplexities", "mean_perplexity", "tokens"}
    per_text = [text_nll(model, tiny_tokenizer, text) for text in texts]
    assert result["tokens"] == sum(count for _, count in per_text) == 40 + 7 + 90 + 1  # BOS makes every byte scored
    expected = [math.exp(nll / count) for nll, count in per_text]
    assert result["perplexities"] == pytest.approx(expected, rel=1e-5)
    assert result["mean_perplexity"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    corpus = math.exp(sum(nll for nll, _ in per_text) / result["tokens"])
    assert result["perplexity"] == pytest.approx(corpus, rel=1e-5)
    assert result["perplexity"] != pytest.approx(result["mean_perplexity"], rel=1e-3)  # token- vs text-weighted


def test_batch_size_does_not_change_result(perplexity, texts, tiny_tokenizer):
    model = make_tiny_gpt2(**SHARP)
    one = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer, batch_size=1)
    padded = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer, batch_size=4)
    assert one["tokens"] == padded["tokens"]
    assert padded["perplexities"] == pytest.approx(one["perplexities"], rel=1e-5)
    assert padded["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)


def test_long_texts_scored_in_windows(perplexity, tiny_tokenizer):
    model = make_tiny_llama(**SHARP)
    long_texts = [sample_text(70, 4), sample_text(33, 5)]
    result = perplexity.compute(predictions=long_texts, model=model, tokenizer=tiny_tokenizer, max_length=16)
    per_text = [text_nll(model, tiny_tokenizer, text, max_length=16) for text in long_texts]
    # 71 tokens with BOS -> windows 16,16,16,16,7 -> 15*4 + 6; 34 -> 16,16,2 -> 15+15+1
    assert result["tokens"] == 66 + 31 == sum(count for _, count in per_text)
    assert result["perplexities"] == pytest.approx([math.exp(n / c) for n, c in per_text], rel=1e-5)


def test_default_max_length_is_the_models(perplexity, tiny_tokenizer):
    model = make_tiny_gpt2()  # n_positions=256: an unwindowed 600-token text would not even run
    result = perplexity.compute(predictions=[sample_text(599, 6)], model=model, tokenizer=tiny_tokenizer)
    assert result["tokens"] == 255 + 255 + 87  # 600 tokens with BOS, windows of 256


def test_consistent_with_compute_perplexity(perplexity, tiny_tokenizer):
    # Texts of exactly one window each and no BOS: the metric scores what compute_perplexity scores.
    model = make_tiny_llama(**SHARP)
    chunks = [sample_text(16, seed) for seed in range(6)]
    result = perplexity.compute(
        predictions=chunks, model=model, tokenizer=tiny_tokenizer, max_length=16, add_start_token=False, batch_size=4
    )
    ids = torch.tensor(tiny_tokenizer("".join(chunks), add_special_tokens=False)["input_ids"])
    reference = compute_perplexity(model, data=ids, seq_len=16, batch_size=4, progress=False)
    assert result["tokens"] == reference.tokens == 6 * 15
    assert result["perplexity"] == pytest.approx(reference.perplexity, rel=1e-6)  # fp32 sums per row vs per batch
    # One long text cut into the same windows gives the same figure.
    whole = perplexity.compute(
        predictions=["".join(chunks)], model=model, tokenizer=tiny_tokenizer, max_length=16, add_start_token=False
    )
    assert whole["tokens"] == reference.tokens and whole["perplexity"] == pytest.approx(reference.perplexity, rel=1e-6)


def test_model_id_folder(perplexity, texts, tiny_tokenizer, tmp_path):
    model = make_tiny_llama(**SHARP)
    path = save_tiny_model(model, tiny_tokenizer, tmp_path / "tiny")
    in_memory = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer)
    from_folder = perplexity.compute(predictions=texts, model_id=path)
    assert from_folder["tokens"] == in_memory["tokens"]
    assert from_folder["perplexities"] == pytest.approx(in_memory["perplexities"], rel=1e-6)
    assert from_folder["perplexity"] == pytest.approx(in_memory["perplexity"], rel=1e-6)
    bf16 = perplexity.compute(predictions=texts, model_id=path, dtype="bfloat16", device="cpu")
    assert bf16["perplexity"] == pytest.approx(in_memory["perplexity"], rel=0.05)


def test_add_start_token(perplexity, texts, tiny_tokenizer):
    model = make_tiny_llama()
    with_bos = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer)
    without = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer, add_start_token=False)
    assert with_bos["tokens"] - without["tokens"] == len(texts)
    assert math.isnan(without["perplexities"][3])  # "x" alone has nothing to predict without BOS


def test_texts_without_a_scored_token(perplexity, tiny_tokenizer):
    model = make_tiny_llama()
    result = perplexity.compute(predictions=["", "ab", ""], model=model, tokenizer=tiny_tokenizer)
    assert math.isnan(result["perplexities"][0]) and math.isnan(result["perplexities"][2])
    assert result["tokens"] == 2  # only "ab" is scored: it alone makes the corpus value
    assert result["perplexity"] == pytest.approx(result["perplexities"][1])
    assert result["mean_perplexity"] == pytest.approx(result["perplexities"][1])
    with pytest.raises(ValueError, match="`predictions`: none of the 2 texts has a token to score"):
        perplexity.compute(predictions=["", "a"], model=model, tokenizer=tiny_tokenizer, add_start_token=False)


def test_train_mode_restored(perplexity, texts, tiny_tokenizer):
    model = make_tiny_gpt2(**SHARP)
    expected = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer)["perplexity"]
    model.train()
    got = perplexity.compute(predictions=texts, model=model, tokenizer=tiny_tokenizer)["perplexity"]
    assert model.training and got == pytest.approx(expected, rel=1e-6)  # scored in eval mode (no dropout)


class TestErrors:
    @pytest.fixture
    def model(self):
        return make_tiny_llama()

    def test_model_and_model_id(self, perplexity, model, tiny_tokenizer):
        with pytest.raises(ValueError, match="exactly one of `model`.*`model_id`"):
            perplexity.compute(predictions=["abc"], model=model, model_id="x", tokenizer=tiny_tokenizer)
        with pytest.raises(ValueError, match="exactly one of `model`.*`model_id`"):
            perplexity.compute(predictions=["abc"])

    def test_tokenizer_needed(self, perplexity, model, tmp_path):
        with pytest.raises(ValueError, match="`tokenizer`"):
            perplexity.compute(predictions=["abc"], model=model)
        model.save_pretrained(tmp_path / "no_tok")
        with pytest.raises(ValueError, match="`tokenizer`"):
            perplexity.compute(predictions=["abc"], model_id=str(tmp_path / "no_tok"))

    def test_device_with_in_memory_model(self, perplexity, model, tiny_tokenizer):
        with pytest.raises(ValueError, match="`device`='cpu' only applies to a model loaded from `model_id`"):
            perplexity.compute(predictions=["abc"], model=model, tokenizer=tiny_tokenizer, device="cpu")

    @pytest.mark.parametrize(
        "kwargs,name",
        [({"batch_size": 0}, "batch_size"), ({"max_length": 1}, "max_length"), ({"batch_size": 2.5}, "batch_size")],
    )
    def test_bad_sizes(self, perplexity, model, tiny_tokenizer, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}` must be an integer"):
            perplexity.compute(predictions=["abc"], model=model, tokenizer=tiny_tokenizer, **kwargs)

    def test_model_id_folder_without_config(self, perplexity, tmp_path):
        with pytest.raises(ValueError, match="without config.json"):
            perplexity.compute(predictions=["abc"], model_id=str(tmp_path))


def test_empty_predictions_are_refused_by_name(perplexity, tiny_tokenizer):
    with pytest.raises(ValueError, match="`predictions` is empty"):
        perplexity.compute(predictions=[], model=make_tiny_llama(), tokenizer=tiny_tokenizer)

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`compute_perplexity` and the `evaluate` metric refuse what would give a wrong number or a raw error: windows
longer than the model's positions, token ids that are not ids of its vocabulary, arguments of the wrong type."""

import pytest
import torch
from testing_utils import TINY_VOCAB_SIZE, make_tiny_gpt2, make_tiny_llama, sample_text, save_tiny_model

from hf_gradprobe.evaluation import compute_perplexity


@pytest.fixture(scope="module")
def ids():
    return torch.randint(4, 200, (600,), generator=torch.Generator().manual_seed(0))


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("make,limit", [(make_tiny_llama, "max_position_embeddings"), (make_tiny_gpt2, "n_positions")])
def test_seq_len_above_the_positions_is_refused(make, limit, tiny_tokenizer):
    model = make()
    with pytest.raises(ValueError, match=rf"`seq_len`=1024.*{limit}=256") as err:
        compute_perplexity(model, tiny_tokenizer, [sample_text(3000)], seq_len=1024, progress=False)
    _one_line(err)
    # At the limit: fine.
    result = compute_perplexity(model, tiny_tokenizer, [sample_text(600)], seq_len=256, progress=False)
    assert result.windows == 2


def test_a_model_without_a_position_limit_is_not_checked(ids):
    model = make_tiny_llama()
    del model.config.max_position_embeddings
    assert compute_perplexity(model, None, ids, seq_len=300, progress=False).windows == 2


@pytest.mark.parametrize(
    "data",
    [
        torch.rand(1000),
        torch.rand(1000).double(),
        torch.ones(1000, dtype=torch.bool),
        torch.randint(0, 5, (1000,)) * (1 + 0j),
    ],
    ids=["float", "double", "bool", "complex"],
)
def test_non_integer_tensors_are_refused(data):
    with pytest.raises(ValueError, match=r"`data`.*integer token ids.*dtype") as err:
        compute_perplexity(make_tiny_llama(), None, data, seq_len=16, progress=False)
    _one_line(err)


def test_ids_outside_the_vocabulary_are_refused(ids):
    for bad in (-1, TINY_VOCAB_SIZE, 10**6):
        data = ids.clone()
        data[17] = bad
        with pytest.raises(ValueError, match=rf"`data`.*token ids in \[.*{bad}.*\].*{TINY_VOCAB_SIZE}") as err:
            compute_perplexity(make_tiny_llama(), None, data, seq_len=16, progress=False)
        _one_line(err)


def test_a_tokenizer_beyond_the_model_vocabulary_is_refused(tiny_tokenizer):
    model = make_tiny_llama()
    model.resize_token_embeddings(100)  # the tiny tokenizer's bytes reach id 259
    with pytest.raises(ValueError, match=r"vocabulary has 100 entries.*tokenizer"):
        compute_perplexity(model, tiny_tokenizer, [sample_text(200)], seq_len=16, progress=False)


@pytest.mark.parametrize(
    "argument,value",
    [
        ("seq_len", 64.0),
        ("seq_len", "64"),
        ("seq_len", True),
        ("seq_len", 1),
        ("batch_size", "2"),
        ("batch_size", 2.0),
        ("batch_size", 0),
        ("max_windows", 2.5),
        ("max_windows", "3"),
        ("max_windows", 0),
        ("stride", "8"),
        ("stride", 8.0),
        ("stride", -1),
    ],
)
def test_wrong_argument_types_name_the_argument(ids, argument, value):
    kwargs = {"seq_len": 16, argument: value}
    with pytest.raises(ValueError, match=rf"`{argument}` must be .*got") as err:
        compute_perplexity(make_tiny_llama(), None, ids, progress=False, **kwargs)
    _one_line(err)


def test_valid_results_are_unchanged(ids):
    model = make_tiny_llama()
    first = compute_perplexity(model, None, ids, seq_len=16, max_windows=3, progress=False)
    again = compute_perplexity(model, None, ids.int(), seq_len=16, max_windows=3, progress=False)
    assert first.perplexity == again.perplexity and first.windows == 3


def test_cli_eval_seq_len_above_the_positions_exits_2(tmp_path, tiny_tokenizer, capsys):
    from hf_gradprobe.cli import main

    model_dir = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "tiny")
    data = tmp_path / "corpus.txt"
    data.write_text(sample_text(3000) + "\n", encoding="utf-8")
    assert main(["eval", model_dir, "--data", str(data), "--seq_len", "1024"]) == 2
    assert "max_position_embeddings=256" in capsys.readouterr().err


def test_metric_refuses_max_length_above_the_positions(tiny_tokenizer):
    import evaluate

    from hf_gradprobe.evaluation import PERPLEXITY_METRIC_PATH

    metric = evaluate.load(PERPLEXITY_METRIC_PATH)
    model = make_tiny_gpt2()
    with pytest.raises(ValueError, match=r"`max_length`=1024.*n_positions=256"):
        metric.compute(predictions=[sample_text(100)], model=model, tokenizer=tiny_tokenizer, max_length=1024)
    small = make_tiny_llama()
    small.resize_token_embeddings(100)
    with pytest.raises(ValueError, match=r"vocabulary has 100 entries"):
        metric.compute(predictions=[sample_text(100)], model=small, tokenizer=tiny_tokenizer)

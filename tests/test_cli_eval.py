# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe eval` through `hf_gradprobe.cli.main`."""

import json

import pytest
from testing_utils import make_tiny_llama, sample_text, save_tiny_model

from hf_gradprobe.cli import main
from hf_gradprobe.evaluation import compute_perplexity
from hf_gradprobe.models import load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli")
    model_dir = save_tiny_model(make_tiny_llama(initializer_range=0.5), tiny_tokenizer, root / "tiny")
    data = root / "corpus.txt"
    data.write_text(sample_text(100, seed=3) + "\n", encoding="utf-8")  # 101 tokens: 6 windows of 16
    return model_dir, str(data)


def test_json_output(saved, capsys):
    model_dir, data = saved
    assert main(["eval", model_dir, "--data", data, "--seq-len", "16", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    result = json.loads(lines[0])
    assert {"perplexity", "tokens", "seconds"} <= set(result)
    assert result["tokens"] == 6 * 15 and result["windows"] == 6 and result["seconds"] >= 0
    model, tokenizer = load_model(model_dir)
    expected = compute_perplexity(model, tokenizer, data, seq_len=16, progress=False)
    assert result["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)


def test_max_windows_stride_batch(saved, capsys):
    model_dir, data = saved
    args = ["eval", model_dir, "--data", data, "--seq-len", "16", "--json"]
    assert main([*args, "--max-windows", "2", "--batch-size", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 2 * 15
    assert main([*args, "--max_windows", "2", "--batch_size", "2"]) == 0  # both spellings
    assert json.loads(capsys.readouterr().out)["tokens"] == 2 * 15
    assert main([*args, "--stride", "8"]) == 0
    # Windows start every 8 tokens, the last at 80: tokens 1..95 each scored once.
    assert json.loads(capsys.readouterr().out)["tokens"] == 95


def test_text_output(saved, capsys):
    model_dir, data = saved
    assert main(["eval", model_dir, "--data", data, "--seq_len", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "over 90 tokens (6 windows x 16)" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--seq-len", "1"], "`seq_len` must be at least 2"),
        (["--seq-len", "200"], "fewer than one window of `seq_len`=200"),
        (["--seq-len", "4096"], "`seq_len`=4096 is longer than LlamaForCausalLM's max_position_embeddings=256"),
        (["--seq_len", "16", "--max_windows", "0"], "`max_windows`"),
        (["--seq-len", "16", "--batch-size", "0"], "`batch_size`"),
    ],
)
def test_bad_values_exit_2_with_message(saved, capsys, extra, message):
    model_dir, data = saved
    assert main(["eval", model_dir, "--data", data, "--json", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "hf-gradprobe eval: error:" in captured.err and message in captured.err


def test_missing_data_and_bad_model(saved, tmp_path, capsys):
    model_dir, data = saved
    assert main(["eval", model_dir, "--data", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--data", data]) == 2
    assert "without config.json" in capsys.readouterr().err


def test_argparse_errors_exit_2(saved, capsys):
    model_dir, data = saved
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", model_dir, "--data", data, "--seq-len", "many"])
    assert exit_info.value.code == 2 and "--seq-len" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", model_dir])  # --data is required
    assert exit_info.value.code == 2 and "--data" in capsys.readouterr().err

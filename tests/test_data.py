# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Text loading through `datasets`, calibration windows and evaluation windows."""

import json

import pytest
import torch

from hf_gradprobe.evaluation.data import calibration_windows, evaluation_windows, load_text, tokenize_corpus


class TestCalibrationWindows:
    def test_shape_and_contiguous_slices(self):
        ids = torch.arange(1000)
        windows = calibration_windows(ids, num_windows=8, seq_len=32, seed=0)
        assert windows.shape == (8, 32) and windows.dtype == torch.long
        # Every window is a contiguous slice of the corpus that lies inside it.
        assert torch.equal(windows - windows[:, :1], torch.arange(32).expand(8, 32))
        assert int(windows.min()) >= 0 and int(windows.max()) <= 999

    def test_seeded(self):
        ids = torch.arange(5000)
        torch.manual_seed(1)
        first = calibration_windows(ids, 16, 64, seed=3)
        torch.rand(100)  # the global RNG plays no part
        assert torch.equal(first, calibration_windows(ids.clone(), 16, 64, seed=3))
        assert not torch.equal(first, calibration_windows(ids, 16, 64, seed=4))

    def test_does_not_touch_global_rng(self):
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        calibration_windows(torch.arange(100), 4, 10, seed=9)
        assert torch.equal(torch.rand(3), expected)

    def test_data_of_exactly_one_window(self):
        windows = calibration_windows(torch.arange(10), 3, 10)
        assert torch.equal(windows, torch.arange(10).expand(3, 10))

    def test_too_short(self):
        with pytest.raises(ValueError, match=r"5 tokens, fewer than one window of `seq_len`=10"):
            calibration_windows(torch.arange(5), 1, 10)

    def test_bad_counts(self):
        with pytest.raises(ValueError, match="`num_windows`.*got 0"):
            calibration_windows(torch.arange(50), 0, 10)
        with pytest.raises(ValueError, match="`seq_len` must be at least 2"):
            calibration_windows(torch.arange(50), 1, 1)


class TestEvaluationWindows:
    def test_non_overlapping(self):
        windows, labels = evaluation_windows(torch.arange(103), 10)
        assert windows.shape == (10, 10)  # the trailing 3 tokens are dropped
        assert torch.equal(windows, torch.arange(100).reshape(10, 10))
        assert torch.equal(labels, windows)

    def test_max_windows(self):
        windows, _ = evaluation_windows(torch.arange(103), 10, max_windows=4)
        assert torch.equal(windows, torch.arange(40).reshape(4, 10))
        assert evaluation_windows(torch.arange(103), 10, max_windows=50)[0].shape == (10, 10)

    def test_stride_at_least_seq_len_is_non_overlapping(self):
        windows, labels = evaluation_windows(torch.arange(55), 10, stride=10)
        assert torch.equal(windows, torch.arange(50).reshape(5, 10)) and torch.equal(labels, windows)

    @pytest.mark.parametrize("length,seq_len,stride", [(50, 10, 4), (64, 16, 5), (33, 8, 1), (40, 10, 9)])
    def test_stride_scores_each_token_once(self, length, seq_len, stride):
        ids = torch.arange(length)
        windows, labels = evaluation_windows(ids, seq_len, stride=stride)
        assert torch.equal(windows[1, 0] - windows[0, 0], torch.tensor(stride))
        # What the loss sees: labels shifted by one, -100 skipped (the first token of a window is never predicted).
        scored = labels[:, 1:]
        positions = scored[scored != -100]
        last_end = int(windows[-1, -1]) + 1
        assert sorted(positions.tolist()) == list(range(1, last_end))  # each token once, none missing
        assert torch.equal(scored[scored != -100], windows[:, 1:][scored != -100])  # labels are the tokens
        assert (labels[:, 0] == -100).all()

    def test_stride_gives_more_context(self):
        _, labels = evaluation_windows(torch.arange(50), 10, stride=4)
        # After the first window only the last `stride` tokens are new, so they are the scored ones.
        assert (labels[1:, -4:] != -100).all() and (labels[1:, :-4] == -100).all()

    def test_stride_max_windows(self):
        windows, _ = evaluation_windows(torch.arange(50), 10, stride=4, max_windows=3)
        assert windows.shape == (3, 10)

    def test_too_short(self):
        with pytest.raises(ValueError, match=r"holds 7 tokens, fewer than one window of `seq_len`=8"):
            evaluation_windows(torch.arange(7), 8)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="`max_windows`.*got 0"):
            evaluation_windows(torch.arange(50), 10, max_windows=0)
        with pytest.raises(ValueError, match="`stride`.*got 0"):
            evaluation_windows(torch.arange(50), 10, stride=0)
        with pytest.raises(ValueError, match="`seq_len` must be at least 2"):
            evaluation_windows(torch.arange(50), 1)


class TestLoadText:
    TEXT = "\n = Title = \n\nFirst line, with ünïcode.\n\n\nSecond  paragraph\nend without newline"

    @pytest.mark.parametrize("suffix", [".txt", ".raw"])
    def test_plain_text_exact(self, tmp_path, suffix):
        path = tmp_path / f"corpus{suffix}"
        path.write_text(self.TEXT, encoding="utf-8")
        assert load_text(str(path)) == self.TEXT
        path.write_text(self.TEXT + "\n", encoding="utf-8")
        assert load_text(path) == self.TEXT + "\n"  # a PathLike works too

    def test_jsonl_and_text_column(self, tmp_path):
        rows = [{"text": "first row", "other": "a"}, {"text": "second\nrow", "other": "b"}]
        path = tmp_path / "data.jsonl"
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
        assert load_text(str(path)) == "first row\n\nsecond\nrow"
        assert load_text(str(path), text_column="other") == "a\n\nb"
        with pytest.raises(ValueError, match=r"`text_column`='body' not in the dataset columns \['text', 'other'\]"):
            load_text(str(path), text_column="body")

    def test_json(self, tmp_path):
        path = tmp_path / "data.json"
        path.write_text(json.dumps([{"text": "one"}, {"text": "two"}]), encoding="utf-8")
        assert load_text(str(path)) == "one\n\ntwo"

    def test_parquet(self, tmp_path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "data.parquet"
        pq.write_table(pa.table({"text": ["alpha", "", "gamma\n"], "id": [1, 2, 3]}), path)
        assert load_text(str(path)) == "alpha\n\n\n\ngamma\n"

    def test_list_of_texts(self):
        assert load_text(["a", "b c"]) == "a\n\nb c"
        with pytest.raises(TypeError, match="strings"):
            load_text(["a", 3])

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="`data`=.*no such file"):
            load_text(str(tmp_path / "missing.txt"))

    def test_empty_file_is_too_short_data(self, tmp_path, tiny_tokenizer):
        path = tmp_path / "empty.txt"
        path.write_text("")
        assert load_text(str(path)) == ""
        with pytest.raises(ValueError, match="holds 0 tokens.*`seq_len`"):
            evaluation_windows(tokenize_corpus(tiny_tokenizer, str(path)), 8)


class TestTokenizeCorpus:
    def test_text_to_ids_without_special_tokens(self, tiny_tokenizer, tmp_path):
        text = "hello wörld\n\nbye"
        ids = tokenize_corpus(tiny_tokenizer, [text])
        assert ids.dtype == torch.long and ids.dim() == 1
        assert ids.numel() == len(text.encode("utf-8"))  # one token per byte, no BOS/EOS added
        assert tiny_tokenizer.decode(ids.tolist()) == text
        path = tmp_path / "c.txt"
        path.write_text(text, encoding="utf-8")
        assert torch.equal(tokenize_corpus(tiny_tokenizer, str(path)), ids)

    def test_tensor_passthrough(self):
        ids = torch.arange(12).reshape(3, 4).int()
        out = tokenize_corpus(None, ids)
        assert out.dtype == torch.long and torch.equal(out, torch.arange(12))

    def test_needs_tokenizer(self):
        with pytest.raises(ValueError, match="`tokenizer=`"):
            tokenize_corpus(None, ["text"])


def test_binary_non_utf8_and_non_string_rows_are_named(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"`calibration`=.*weights.bin' is a binary file"):
        load_text(str(binary), argument="calibration")
    with pytest.raises(ValueError, match=r"`data`=.*latin1.txt' is not UTF-8 text \(byte 3\)"):
        load_text(str(latin1))
    with pytest.raises(ValueError, match=r"`data`=.*rows.jsonl': row 2 of column 'text' is int"):
        load_text(str(rows))


def test_a_long_string_that_is_neither_a_file_nor_a_dataset_is_refused():
    text = "The quick brown fox jumps over the lazy dog. " * 20
    with pytest.raises(
        ValueError, match="`calibration`=.*neither an existing file nor a datasets name.*list of strings"
    ):
        load_text(text, argument="calibration")


def test_one_data_check_serves_load_text_and_the_command_line(tmp_path, monkeypatch):
    from hf_gradprobe.evaluation.data import check_data_source

    (tmp_path / "a.txt").write_text("text\n", encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert check_data_source(str(tmp_path / "a.txt")) == "text"
    assert check_data_source(tmp_path / "rows.jsonl") == "json"
    assert check_data_source(str(tmp_path / "empty.parquet")) == "parquet"
    assert check_data_source("Salesforce/wikitext") == "dataset"  # only the name's shape: nothing is fetched
    # A folder is refused by both, with the argument named.
    with pytest.raises(IsADirectoryError, match="`--data`=.* is a folder"):
        check_data_source(str(tmp_path), "--data")
    with pytest.raises(IsADirectoryError, match="`calibration`=.* is a folder"):
        load_text(str(tmp_path), argument="calibration")
    # `~` is not expanded (as by `open`): refused before loading rather than after.
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_data_source("~/a.txt", "--calibration")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text("~/a.txt")

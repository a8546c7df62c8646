# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The data splits of the benchmarks, enforced in code.

Texts under ``../shared/data`` (relative to the repository root):

* calibration: ``wikitext-2/valid.txt``, 64 random windows x 512 tokens, seed 0: the windows
  ``hf_gradprobe.evaluation.data.calibration_windows`` cuts, starting where ``calibration_window_starts`` says;
* validation (tuning only): ``valid-wikitext``, the first non-overlapping 1024-token windows of ``valid.txt`` that
  overlap no calibration window, and ``valid-pride``, the first windows of Pride and Prejudice;
* test (reporting only): ``test-wikitext``, the first 1024-token windows of WikiText-2 raw test, and
  ``test-shakespeare``, the first windows of Tiny Shakespeare.

``check_disjoint`` refuses a validation window that overlaps a calibration window; ``check_texts`` refuses an
unknown text, and a test text when tuning.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch


__all__ = [
    "BENCHMARKS",
    "CALIBRATION_SAMPLES",
    "CALIBRATION_SEED",
    "CALIBRATION_SEQ_LEN",
    "CALIBRATION_TEXT",
    "DATA",
    "EVAL_SEQ_LEN",
    "LABELS",
    "REPO",
    "TEST_TEXTS",
    "TEST_WINDOWS",
    "VALIDATION_TEXTS",
    "VALIDATION_WINDOWS",
    "ProtocolError",
    "calibration",
    "calibration_starts",
    "check_disjoint",
    "check_texts",
    "texts",
    "token_ids",
    "validation_starts",
    "validation_windows",
]

BENCHMARKS = Path(__file__).resolve().parents[1]
REPO = BENCHMARKS.parent
DATA = REPO.parent / "shared" / "data"
CALIBRATION_TEXT = DATA / "wikitext-2" / "valid.txt"
VALIDATION_TEXTS = {
    "valid-wikitext": CALIBRATION_TEXT,
    "valid-pride": DATA / "pride-and-prejudice" / "pride_and_prejudice.txt",
}
TEST_TEXTS = {
    "test-wikitext": DATA / "wikitext-2-raw" / "wiki.test.raw",
    "test-shakespeare": DATA / "tinyshakespeare" / "input.txt",
}
LABELS = {
    "valid-wikitext": "ppl wiki valid (val)",
    "valid-pride": "ppl pride (val)",
    "test-wikitext": "ppl wiki test",
    "test-shakespeare": "ppl shakespeare",
}
CALIBRATION_SAMPLES = 64
CALIBRATION_SEQ_LEN = 512
CALIBRATION_SEED = 0
EVAL_SEQ_LEN = 1024
TEST_WINDOWS = 32
VALIDATION_WINDOWS = 16


class ProtocolError(RuntimeError):
    """A data split would be broken: validation overlapping calibration, or a test text used for tuning."""


def calibration_starts(
    num_tokens: int, num_windows: int, seq_len: int = CALIBRATION_SEQ_LEN, seed: int = CALIBRATION_SEED
) -> list[int]:
    """The start of every calibration window of a text of ``num_tokens`` tokens (the package's own draw)."""
    from hf_gradprobe.evaluation.data import calibration_window_starts

    return calibration_window_starts(num_tokens, num_windows, seq_len, seed)


def check_disjoint(calib_starts: Iterable[int], calib_seq_len: int, valid_starts: Iterable[int], seq_len: int) -> None:
    """Raise ``ProtocolError`` if a validation window overlaps a calibration window (touching is not overlapping)."""
    calib_starts = list(calib_starts)
    for valid in valid_starts:
        for calib in calib_starts:
            if valid < calib + calib_seq_len and calib < valid + seq_len:
                raise ProtocolError(
                    f"validation window [{valid}, {valid + seq_len}) overlaps calibration window "
                    f"[{calib}, {calib + calib_seq_len})"
                )


def check_texts(eval_names: Iterable[str], tuning: bool = False) -> None:
    """Raise ``ProtocolError`` for an unknown text, or (``tuning``) for a text other than a validation text."""
    eval_names = list(eval_names)
    unknown = [name for name in eval_names if name not in VALIDATION_TEXTS and name not in TEST_TEXTS]
    if unknown:
        raise ProtocolError(f"unknown texts {unknown}; known: {[*VALIDATION_TEXTS, *TEST_TEXTS]}")
    if tuning:
        forbidden = [name for name in eval_names if name not in VALIDATION_TEXTS]
        if forbidden:
            raise ProtocolError(
                f"tuning may only look at the validation texts {list(VALIDATION_TEXTS)}, not {forbidden}: "
                "a number chosen on a test text is not a result"
            )


def validation_starts(
    num_tokens: int, calib_starts: Sequence[int], calib_seq_len: int, seq_len: int, count: int
) -> list[int]:
    """Starts of the first ``count`` non-overlapping ``seq_len`` windows that overlap no calibration window.

    Scans from token 0: a window that would overlap a calibration window moves past its end.
    """
    spans = [(start, start + calib_seq_len) for start in calib_starts]
    starts, position = [], 0
    while len(starts) < count and position + seq_len <= num_tokens:
        blocking = [end for start, end in spans if start < position + seq_len and position < end]
        if blocking:
            position = max(blocking)
            continue
        starts.append(position)
        position += seq_len
    if len(starts) < count:
        raise ProtocolError(
            f"only {len(starts)} windows of {seq_len} tokens are free of the calibration windows, {count} asked"
        )
    check_disjoint(calib_starts, calib_seq_len, starts, seq_len)
    return starts


def validation_windows(
    ids: torch.Tensor, calib_starts: Sequence[int], calib_seq_len: int, seq_len: int, count: int
) -> torch.Tensor:
    """``(count, seq_len)``: the first non-overlapping windows of ``ids`` that overlap no calibration window."""
    ids = ids.reshape(-1)
    starts = validation_starts(ids.numel(), calib_starts, calib_seq_len, seq_len, count)
    return torch.stack([ids[start : start + seq_len] for start in starts])


_TOKENS: dict[str, torch.Tensor] = {}


def token_ids(tokenizer, path: Path) -> torch.Tensor:
    """The 1-D token ids of a text file (cached: one tokenizer per process)."""
    from hf_gradprobe.evaluation.data import tokenize_corpus

    key = os.fspath(path)
    if key not in _TOKENS:
        _TOKENS[key] = tokenize_corpus(tokenizer, key)
    return _TOKENS[key]


def calibration(tokenizer, samples: int = CALIBRATION_SAMPLES) -> tuple[torch.Tensor, list[int]]:
    """The calibration windows ``(samples, 512)`` of ``valid.txt`` and their starts."""
    ids = token_ids(tokenizer, CALIBRATION_TEXT)
    starts = calibration_starts(ids.numel(), samples)
    return torch.stack([ids[start : start + CALIBRATION_SEQ_LEN] for start in starts]), starts


def texts(
    tokenizer, names: Iterable[str], num_windows: int, calibration_samples: int = CALIBRATION_SAMPLES
) -> dict[str, torch.Tensor]:
    """``{name: 1-D ids}``: exactly ``num_windows`` windows of ``EVAL_SEQ_LEN`` tokens of each named text, laid
    end to end (``compute_perplexity`` with ``seq_len=EVAL_SEQ_LEN`` cuts them back into the same windows)."""
    names = list(names)
    check_texts(names)
    out = {}
    for name in names:
        if name == "valid-wikitext":
            ids = token_ids(tokenizer, CALIBRATION_TEXT)
            _, starts = calibration(tokenizer, calibration_samples)
            windows = validation_windows(ids, starts, CALIBRATION_SEQ_LEN, EVAL_SEQ_LEN, num_windows)
            out[name] = windows.reshape(-1)
        else:
            ids = token_ids(tokenizer, {**VALIDATION_TEXTS, **TEST_TEXTS}[name])
            if ids.numel() < num_windows * EVAL_SEQ_LEN:
                raise ProtocolError(f"{name} holds {ids.numel()} tokens, fewer than {num_windows} x {EVAL_SEQ_LEN}")
            out[name] = ids[: num_windows * EVAL_SEQ_LEN]
    return out

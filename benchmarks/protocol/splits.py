# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The data splits of the benchmarks, enforced in code.

Texts under ``../shared/data`` (relative to the repository root):

* calibration: ``wikitext-2/valid.txt``, 64 random windows x 512 tokens, seed 0 (a row may ask for seed 1, the
  second seed of ``CALIBRATION_SEEDS``, to show the spread): the windows
  ``hf_gradprobe.evaluation.data.calibration_windows`` cuts, starting where ``calibration_window_starts`` says;
* validation (tuning only): ``valid-wikitext``, the first non-overlapping 1024-token windows of ``valid.txt`` that
  overlap no calibration window of ANY seed in ``CALIBRATION_SEEDS`` (the same windows for every row, whatever its
  seed), and ``valid-pride``, the first windows of Pride and Prejudice;
* test (reporting only): ``test-wikitext``, the first 1024-token windows of WikiText-2 raw test, and
  ``test-shakespeare``, the first windows of Tiny Shakespeare;
* full test (reporting only, the rows that ask for it): ``test-wikitext-full``, the whole of WikiText-2 raw test
  (``wiki.test.raw`` as one token stream) in non-overlapping 2048-token windows, every predicted token scored and
  the trailing partial window dropped: the SparseGPT/Wanda papers' protocol.

``check_disjoint`` refuses a validation window that overlaps a calibration window; ``check_texts`` refuses an
unknown text, and a test text when tuning; ``check_seed`` refuses a calibration seed the validation windows do not
avoid.
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
    "CALIBRATION_SEEDS",
    "CALIBRATION_SEQ_LEN",
    "CALIBRATION_TEXT",
    "DATA",
    "EVAL_SEQ_LEN",
    "FULL_TEST_SEQ_LEN",
    "FULL_TEST_TEXTS",
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
    "check_seed",
    "check_texts",
    "eval_seq_len",
    "texts",
    "token_ids",
    "validation_calibration_starts",
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
# Scored only by the rows that ask for it (``--full-test-rows``): the whole text, in longer windows.
FULL_TEST_TEXTS = {"test-wikitext-full": TEST_TEXTS["test-wikitext"]}
LABELS = {
    "valid-wikitext": "ppl wiki valid (val)",
    "valid-pride": "ppl pride (val)",
    "test-wikitext": "ppl wiki test",
    "test-shakespeare": "ppl shakespeare",
    "test-wikitext-full": "ppl wiki test (full, 2048)",
}
CALIBRATION_SAMPLES = 64
CALIBRATION_SEQ_LEN = 512
CALIBRATION_SEED = 0
# Every seed a row may calibrate with; the validation windows avoid the calibration windows of all of them, so
# adding a seed here moves the validation windows of every row (earlier validation numbers then do not compare).
CALIBRATION_SEEDS = (0, 1)
EVAL_SEQ_LEN = 1024
FULL_TEST_SEQ_LEN = 2048
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
    known = [*VALIDATION_TEXTS, *TEST_TEXTS, *FULL_TEST_TEXTS]
    unknown = [name for name in eval_names if name not in known]
    if unknown:
        raise ProtocolError(f"unknown texts {unknown}; known: {known}")
    if tuning:
        forbidden = [name for name in eval_names if name not in VALIDATION_TEXTS]
        if forbidden:
            raise ProtocolError(
                f"tuning may only look at the validation texts {list(VALIDATION_TEXTS)}, not {forbidden}: "
                "a number chosen on a test text is not a result"
            )


def check_seed(seed: int) -> None:
    """Raise ``ProtocolError`` for a calibration seed whose windows the validation windows are not kept apart from."""
    if seed not in CALIBRATION_SEEDS:
        raise ProtocolError(
            f"calibration seed {seed!r}: the validation windows avoid the calibration windows of the seeds "
            f"{list(CALIBRATION_SEEDS)} only; add it to protocol.splits.CALIBRATION_SEEDS (which moves the "
            "validation windows of every row) or use one of them"
        )


def eval_seq_len(name: str) -> int:
    """Tokens per window of a text: ``FULL_TEST_SEQ_LEN`` for the full test text, ``EVAL_SEQ_LEN`` otherwise."""
    return FULL_TEST_SEQ_LEN if name in FULL_TEST_TEXTS else EVAL_SEQ_LEN


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


def calibration(
    tokenizer, samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED
) -> tuple[torch.Tensor, list[int]]:
    """The calibration windows ``(samples, 512)`` of ``valid.txt`` drawn with ``seed``, and their starts."""
    check_seed(seed)
    ids = token_ids(tokenizer, CALIBRATION_TEXT)
    starts = calibration_starts(ids.numel(), samples, seed=seed)
    return torch.stack([ids[start : start + CALIBRATION_SEQ_LEN] for start in starts]), starts


def validation_calibration_starts(num_tokens: int, samples: int = CALIBRATION_SAMPLES) -> list[int]:
    """The starts of the calibration windows of every seed in ``CALIBRATION_SEEDS``: what validation avoids."""
    return sorted(
        {start for seed in CALIBRATION_SEEDS for start in calibration_starts(num_tokens, samples, seed=seed)}
    )


def texts(
    tokenizer,
    names: Iterable[str],
    num_windows: int,
    calibration_samples: int = CALIBRATION_SAMPLES,
    full_test_windows: int | None = None,
) -> dict[str, torch.Tensor]:
    """``{name: 1-D ids}``: exactly ``num_windows`` windows of ``EVAL_SEQ_LEN`` tokens of each named text, laid
    end to end (``compute_perplexity`` with ``seq_len=EVAL_SEQ_LEN`` cuts them back into the same windows); the
    full test text whole (``compute_perplexity`` with ``seq_len=FULL_TEST_SEQ_LEN`` cuts it into its windows and
    drops the trailing partial one), or only its first ``full_test_windows`` windows (smoke runs).

    ``valid-wikitext``'s windows overlap no calibration window of any seed in ``CALIBRATION_SEEDS``."""
    names = list(names)
    check_texts(names)
    out = {}
    for name in names:
        if name == "valid-wikitext":
            ids = token_ids(tokenizer, CALIBRATION_TEXT)
            starts = validation_calibration_starts(ids.numel(), calibration_samples)
            windows = validation_windows(ids, starts, CALIBRATION_SEQ_LEN, EVAL_SEQ_LEN, num_windows)
            out[name] = windows.reshape(-1)
        elif name in FULL_TEST_TEXTS:
            ids = token_ids(tokenizer, FULL_TEST_TEXTS[name])
            if ids.numel() < FULL_TEST_SEQ_LEN:
                raise ProtocolError(f"{name} holds {ids.numel()} tokens, fewer than one window of {FULL_TEST_SEQ_LEN}")
            if full_test_windows is not None:
                ids = ids[: full_test_windows * FULL_TEST_SEQ_LEN]
            out[name] = ids
        else:
            ids = token_ids(tokenizer, {**VALIDATION_TEXTS, **TEST_TEXTS}[name])
            if ids.numel() < num_windows * EVAL_SEQ_LEN:
                raise ProtocolError(f"{name} holds {ids.numel()} tokens, fewer than {num_windows} x {EVAL_SEQ_LEN}")
            out[name] = ids[: num_windows * EVAL_SEQ_LEN]
    return out

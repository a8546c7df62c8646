# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Token-weighted perplexity of an in-memory causal LM."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

from ..core.runtime import model_input_device, progress_bars_enabled
from ..core.validation import COUNT_MAX, check_int, check_positions, check_token_ids, input_vocab_size
from .data import evaluation_windows, tokenize_corpus


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # scored tokens
    windows: int
    seq_len: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL (fp32) and the number of scored tokens; ``-100`` labels are skipped."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, int((shift_labels != -100).sum())


def _check_count(name: str, value, minimum: int, unit: str, *, allow_none: bool = False) -> int | None:
    """An int (not a bool, not ``64.0`` or ``'64'``) of at least ``minimum``, at most ``COUNT_MAX``."""
    value = check_int(name, value, allow_none=allow_none, hint=f"at least {minimum} {unit}")
    if value is not None and not minimum <= value <= COUNT_MAX:
        raise ValueError(f"`{name}` must be at least {minimum} {unit} and at most {COUNT_MAX}, got {value}.")
    return value


@torch.no_grad()
def compute_perplexity(
    model,
    tokenizer=None,
    data: str | os.PathLike | list[str] | torch.Tensor = None,
    seq_len: int = 1024,
    max_windows: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
    **load_kwargs,
) -> PerplexityResult:
    """Corpus perplexity ``exp(sum NLL / scored tokens)`` over evaluation windows of ``data``.

    ``data`` is a local text/json/parquet file, a ``datasets`` name, a list of texts or a tensor of
    token ids. Windows are consecutive and non-overlapping by default (SparseGPT/Wanda protocol;
    ``stride`` gives the sliding variant). The model stays where it is (any device, any dtype;
    logits are upcast to fp32 for the loss) and its train/eval mode is restored afterwards. The progress bar
    (``progress``) honours the Transformers and huggingface_hub switches (see :func:`progress_bars_enabled`).

    Refused with a ``ValueError`` before any window runs: counts that are not integers (``64.0``, ``'64'``), a
    tensor ``data`` that is not integer token ids or holds ids outside ``[0, vocab)`` (the model's input embedding
    size; likewise the ids a tokenizer produced), and a ``seq_len`` above the model's ``max_position_embeddings``
    (or ``n_positions``; models that state none are not checked).
    """
    if data is None:
        raise ValueError("`data` is required: a file path, a datasets name, a list of texts or token ids.")
    # Arguments are checked before any text is read, the data before any window is run.
    seq_len = _check_count("seq_len", seq_len, 2, "tokens")
    batch_size = _check_count("batch_size", batch_size, 1, "window")
    max_windows = _check_count("max_windows", max_windows, 1, "window (or None for all)", allow_none=True)
    stride = _check_count("stride", stride, 1, "token (or None for non-overlapping windows)", allow_none=True)
    vocab_size = input_vocab_size(model)
    if isinstance(data, torch.Tensor):
        check_token_ids("data", data, vocab_size, hint="pass the token ids of this model's tokenizer.")
    ids = tokenize_corpus(tokenizer, data, **load_kwargs)
    if not isinstance(data, torch.Tensor):
        check_token_ids(
            "data",
            ids,
            vocab_size,
            hint="the tokenizer does not belong to this model. Pass the model's own tokenizer.",
        )
    windows, labels = evaluation_windows(ids, seq_len, stride=stride, max_windows=max_windows)
    check_positions("seq_len", seq_len, model)
    device = model_input_device(model)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    total_nll, total_tokens = 0.0, 0
    try:
        batches = range(0, len(windows), batch_size)
        bar = hf_logging.tqdm(batches, desc="Perplexity", disable=not progress_bars_enabled(progress), unit="batch")
        for i in bar:
            batch = windows[i : i + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            nll, count = token_nll_sum(logits, labels[i : i + batch_size])
            total_nll += nll.item()
            total_tokens += count
    finally:
        model.train(was_training)
    mean_nll = total_nll / max(total_tokens, 1)
    return PerplexityResult(
        perplexity=math.exp(mean_nll),
        nll=mean_nll,
        tokens=total_tokens,
        windows=len(windows),
        seq_len=seq_len,
        seconds=time.perf_counter() - start,
    )

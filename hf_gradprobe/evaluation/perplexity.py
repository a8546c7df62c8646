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
from ..core.validation import check_count, check_positions, check_token_ids, input_vocab_size
from .data import evaluation_windows, tokenize_corpus


__all__ = ["PerplexityResult", "compute_perplexity", "token_nll_sum"]


@dataclass
class PerplexityResult:
    """The perplexity of a model on a corpus, and what it was measured over.

    Args:
        perplexity (`float`):
            ``exp(nll)``.
        nll (`float`):
            The mean negative log-likelihood per scored token, in nats.
        tokens (`int`):
            The number of scored tokens.
        windows (`int`):
            The number of windows run.
        seq_len (`int`):
            Tokens per window.
        seconds (`float`):
            The time the windows took.
    """

    perplexity: float
    nll: float
    tokens: int
    windows: int
    seq_len: int
    seconds: float

    def to_dict(self) -> dict:
        """The fields as a dict (JSON-ready)."""
        return asdict(self)


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The summed next-token negative log-likelihood of a batch.

    Args:
        logits (`torch.Tensor`):
            The model's logits, ``(batch, seq_len, vocab)``; upcast to fp32.
        labels (`torch.Tensor`):
            The token ids to score, ``(batch, seq_len)``; ``-100`` is skipped.

    Returns:
        `tuple[torch.Tensor, int]`: the summed NLL (a 0-d fp32 tensor) and the number of scored tokens.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, int((shift_labels != -100).sum())


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

    Windows are consecutive and non-overlapping by default (SparseGPT/Wanda protocol; ``stride`` gives the
    sliding variant). The model stays where it is (any device, any dtype; logits are upcast to fp32 for the loss)
    and its train/eval mode is restored afterwards.

    Refused with a ``ValueError`` before any window runs: counts that are not integers (``64.0``, ``'64'``) or
    exceed ``COUNT_MAX``, a tensor ``data`` that is not integer token ids or holds ids outside ``[0, vocab)`` (the
    model's input embedding size; likewise the ids a tokenizer produced), and a ``seq_len`` above the model's
    ``max_position_embeddings`` (or ``n_positions``; models that state none are not checked).

    Args:
        model (`PreTrainedModel`):
            A causal language model.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Needed unless ``data`` is a tensor of token ids.
        data (`str`, `os.PathLike`, `list[str]` or `torch.Tensor`):
            A local text/JSON(L)/parquet file, a ``datasets`` name, a list of texts or a tensor of token ids.
        seq_len (`int`, *optional*, defaults to 1024):
            Tokens per window.
        max_windows (`int`, *optional*):
            Score only the first windows; defaults to all.
        stride (`int`, *optional*):
            Tokens between window starts; defaults to non-overlapping windows.
        batch_size (`int`, *optional*, defaults to 1):
            Windows per forward pass.
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar; it honours the Transformers and huggingface_hub switches (see
            :func:`~hf_gradprobe.core.runtime.progress_bars_enabled`).
        load_kwargs:
            Passed to :func:`~hf_gradprobe.evaluation.data.load_text` (e.g. ``split``, ``text_column``).

    Returns:
        [`PerplexityResult`]: the perplexity and what it was measured over.
    """
    if data is None:
        raise ValueError("`data` is required: a file path, a datasets name, a list of texts or token ids.")
    # Arguments are checked before any text is read, the data before any window is run.
    seq_len = check_count("seq_len", seq_len, minimum=2, unit="tokens")
    batch_size = check_count("batch_size", batch_size, unit="window")
    max_windows = check_count("max_windows", max_windows, unit="window", allow_none=True, hint="None: all")
    stride = check_count(
        "stride", stride, unit="token", allow_none=True, hint="tokens between window starts; None: non-overlapping"
    )
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

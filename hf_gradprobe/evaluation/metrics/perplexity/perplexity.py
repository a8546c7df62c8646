# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Perplexity of a causal language model on a list of texts, as an `evaluate` metric.

evaluate copies this script into its modules cache before importing it, so it imports hf_gradprobe
absolutely (the installed package) and holds no relative imports.
"""

import math
import os

import datasets
import evaluate
import numpy as np
import torch

from hf_gradprobe.core.runtime import model_input_device
from hf_gradprobe.core.validation import (
    COUNT_MAX,
    check_int,
    check_positions,
    check_token_ids,
    input_vocab_size,
    position_limit,
)
from hf_gradprobe.evaluation.perplexity import token_nll_sum
from hf_gradprobe.models import load_model


__all__ = ["Perplexity"]

_CITATION = """\
@misc{hf_gradprobe,
  title = {hf_gradprobe: sparse language models with Hugging Face Transformers},
  year = {2026}
}
"""

_DESCRIPTION = """\
Perplexity (PPL) of a causal language model on texts: the exponential of the mean negative
log-likelihood of each token given the tokens before it. Unlike the Hub's `perplexity` metric, it
scores an in-memory model (pruned, fine-tuned, on any device) as well as a saved one, returns the
token-weighted corpus perplexity next to the per-text values, and scores texts longer than
`max_length` in consecutive windows instead of truncating them.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): the texts to score.
    model (`PreTrainedModel`, optional): an in-memory causal LM, used where it is (device, dtype).
        Give either `model` or `model_id`.
    tokenizer (optional): the tokenizer of `model` (or one to use instead of the one saved with
        `model_id`). Required with `model` unless `model.name_or_path` holds one.
    model_id (`str`, optional): a local folder saved with `save_pretrained`, a Hub id, or
        `"smollm2-135m"`, loaded with `hf_gradprobe.load_model`.
    batch_size (`int`, defaults to 16): windows per forward pass.
    max_length (`int`, optional): tokens per window (BOS included). Longer texts are cut into
        consecutive non-overlapping windows; the first token of each window has no context and is
        not scored, as in `hf_gradprobe.compute_perplexity`. Defaults to the model's
        `max_position_embeddings` (or `n_positions`); a longer one is refused.
    add_start_token (`bool`, defaults to True): prepend the tokenizer's BOS token to every text when
        it has one, so that the first word is scored too.
    device (`str`, optional): where to put a model loaded from `model_id` (an in-memory `model`
        is never moved).
    dtype (optional): dtype of a model loaded from `model_id` (`"float32"`, `torch.bfloat16`, ...).

Returns:
    perplexity (`float`): corpus perplexity, exp(sum of NLL / number of scored tokens) over all texts.
    perplexities (`list[float]`): one perplexity per text; NaN for a text with no token to score
        (fewer than 2 tokens, BOS included). Such texts are left out of every aggregate.
    mean_perplexity (`float`): mean of the per-text perplexities that are not NaN (what the Hub's
        `perplexity` metric calls `mean_perplexity`).
    tokens (`int`): number of scored tokens.

Examples:
    >>> import evaluate
    >>> from hf_gradprobe.evaluation import PERPLEXITY_METRIC_PATH
    >>> perplexity = evaluate.load(PERPLEXITY_METRIC_PATH)
    >>> results = perplexity.compute(predictions=["Hello world."], model=model, tokenizer=tokenizer)
    >>> sorted(results)
    ['mean_perplexity', 'perplexities', 'perplexity', 'tokens']
"""


def _default_max_length(model):
    limit = position_limit(model)
    if limit is not None and limit[1] >= 2:
        return limit[1]
    return None  # no positional limit known: one window per text


def _windows(encoded, bos_id, max_length):
    """(text index, token ids) for every window that predicts at least one token."""
    for index, ids in enumerate(encoded):
        ids = ([bos_id] if bos_id is not None else []) + list(ids)
        step = max_length or max(len(ids), 1)
        for start in range(0, len(ids), step):
            window = ids[start : start + step]
            if len(window) >= 2:  # a lone token has nothing to predict
                yield index, window


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    """Perplexity of a causal language model on a list of texts (see the module's description and inputs)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://huggingface.co/docs/transformers/perplexity"],
        )

    def _compute(
        self,
        predictions,
        model=None,
        tokenizer=None,
        model_id=None,
        batch_size=16,
        max_length=None,
        add_start_token=True,
        device=None,
        dtype=None,
    ):
        predictions = list(predictions) if predictions is not None else []
        if not predictions:
            raise ValueError("`predictions` is empty: pass at least one text to score.")
        if (model is None) == (model_id is None):
            raise ValueError(
                "Give exactly one of `model` (an in-memory PreTrainedModel) and `model_id` (a saved folder or "
                f"Hub id), got model={type(model).__name__ if model is not None else None} and model_id={model_id!r}."
            )
        batch_size = check_int("batch_size", batch_size, minimum=1, maximum=COUNT_MAX)
        if max_length is not None:
            max_length = check_int("max_length", max_length, minimum=2, maximum=COUNT_MAX)
        if model is not None:
            if device is not None:
                raise ValueError(
                    f"`device`={device!r} only applies to a model loaded from `model_id`; move the in-memory "
                    "`model` yourself (it is scored where it is)."
                )
            model, tokenizer = load_model(model, tokenizer=tokenizer)
        else:
            if not isinstance(model_id, (str, os.PathLike)):
                raise ValueError(f"`model_id` must be a folder path or a Hub id, got {type(model_id).__name__}.")
            model, tokenizer = load_model(model_id, tokenizer=tokenizer, dtype=dtype)
            if device is not None:
                model.to(device)
        if tokenizer is None:
            raise ValueError("A `tokenizer` is needed to turn `predictions` into tokens: pass `tokenizer=`.")

        bos_id = tokenizer.bos_token_id if add_start_token else None
        if max_length is None:
            max_length = _default_max_length(model)
        else:
            check_positions("max_length", max_length, model)
        # No special tokens from the tokenizer: BOS is added (once per text) by `add_start_token` only.
        encoded = tokenizer(predictions, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        windows = list(_windows(encoded, bos_id, max_length))
        # Ids beyond the model's embedding are an IndexError on CPU and a device assert on CUDA.
        ids = [token for _, window in windows for token in window]
        if ids:
            check_token_ids(
                "predictions",
                torch.tensor(ids, dtype=torch.long),
                input_vocab_size(model),
                hint="the tokenizer does not belong to this model. Pass the model's own `tokenizer`.",
            )

        nll_sums = [0.0] * len(encoded)
        counts = [0] * len(encoded)
        if windows:
            self._score(model, tokenizer, windows, batch_size, nll_sums, counts)

        total_tokens = sum(counts)
        if total_tokens == 0:
            raise ValueError(
                f"`predictions`: none of the {len(encoded)} texts has a token to score (each needs at least 2 "
                "tokens, BOS included). Pass longer texts, or `add_start_token=True` with a tokenizer that has BOS."
            )
        perplexities = [
            math.exp(nll / count) if count else math.nan for nll, count in zip(nll_sums, counts, strict=True)
        ]
        return {
            "perplexity": math.exp(sum(nll_sums) / total_tokens),
            "perplexities": perplexities,
            "mean_perplexity": float(np.nanmean(perplexities)),
            "tokens": total_tokens,
        }

    @staticmethod
    @torch.no_grad()
    def _score(model, tokenizer, windows, batch_size, nll_sums, counts):
        """Add each window's summed NLL and scored-token count to its text's totals."""
        device = model_input_device(model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                width = max(len(ids) for _, ids in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (_, ids) in enumerate(batch):
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, : len(ids)] = 1
                labels = input_ids.masked_fill(attention_mask == 0, -100)
                kwargs = {"input_ids": input_ids.to(device), "use_cache": False}
                if not bool(attention_mask.all()):
                    # Only padded batches need a mask; unpadded ones then match compute_perplexity exactly.
                    kwargs["attention_mask"] = attention_mask.to(device)
                logits = model(**kwargs).logits
                for row, (text_index, _) in enumerate(batch):
                    nll, count = token_nll_sum(logits[row : row + 1], labels[row : row + 1])
                    nll_sums[text_index] += nll.item()
                    counts[text_index] += count
        finally:
            model.train(was_training)

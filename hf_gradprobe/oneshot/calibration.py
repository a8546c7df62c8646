# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Calibration data for one-shot pruning, and the checks a model and its data pass before any pruning work.

`calibration` may be text (a file, a ``datasets`` name, a list of texts) cut into seeded windows, or a 2-D tensor of
token windows used as given. Windows must hold integer ids of the model's vocabulary and fit its positions.
"""

from __future__ import annotations

import os

import torch

from ..core.validation import check_token_ids, input_vocab_size, position_limit
from ..evaluation.data import calibration_windows, tokenize_corpus
from .config import GradProbeConfig


__all__ = ["calibration_data", "check_prunable_model", "describe_parameters", "nonfinite_parameters"]


def _check_windows(windows: torch.Tensor, model) -> None:
    """Refuse calibration windows that cannot give a finite loss, index the model's embeddings or fit its
    positions."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(
            f"`calibration` windows must have at least 2 tokens each (shape (num_samples, seq_len >= 2)), got "
            f"shape {tuple(windows.shape)}: a 1-token window has no next token to predict, so its loss is NaN."
        )
    if windows.numel() == 0:
        raise ValueError("`calibration` holds no token windows.")
    limit = position_limit(model)
    if limit is not None and windows.shape[1] > limit[1]:
        attribute, value = limit
        raise ValueError(
            f"`calibration` windows have {windows.shape[1]} tokens each, more than {type(model).__name__}'s "
            f"{attribute}={value}: cut them to at most {value} tokens (e.g. `windows[:, :{value}]`)."
        )
    check_token_ids(
        "calibration",
        windows,
        input_vocab_size(model),
        hint="the tokenizer does not belong to this model. Pass the model's own tokenizer (`tokenizer=`).",
    )


def _check_seq_len_fits(config: GradProbeConfig, model) -> None:
    """``calibration_seq_len`` within the model's positions, checked before any text is read."""
    limit = position_limit(model)
    if limit is not None and config.calibration_seq_len > limit[1]:
        attribute, value = limit
        raise ValueError(
            f"`calibration_seq_len`={config.calibration_seq_len} is longer than {type(model).__name__}'s "
            f"{attribute}={value} (the longest input its positions cover). Set calibration_seq_len to {value} or less."
        )


_CHUNK = 2**24  # elements checked at a time: the transient boolean stays at 16 MiB whatever the tensor's size


def nonfinite_parameters(named) -> list[tuple[str, str]]:
    """``(name, "n NaN, m inf")`` for each floating-point tensor of ``named`` (``(name, tensor)`` pairs) that holds
    NaN or inf values."""
    found = []
    for name, param in named:
        tensor = param.detach()
        to_local = getattr(tensor, "to_local", None)  # a DTensor: this process's shard
        tensor = to_local() if callable(to_local) else tensor
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        nans = infs = 0
        for chunk in tensor.reshape(-1).split(_CHUNK):
            if not bool(torch.isfinite(chunk).all()):
                nans += int(chunk.isnan().sum())
                infs += int(chunk.isinf().sum())
        if nans or infs:
            found.append((name, ", ".join(f"{n} {kind}" for n, kind in ((nans, "NaN"), (infs, "inf")) if n)))
    return found


def describe_parameters(found: list[tuple[str, str]], shown: int = 5) -> str:
    text = ", ".join(f"{name} ({counts})" for name, counts in found[:shown])
    return text + (f" and {len(found) - shown} more" if len(found) > shown else "")


def _calibration(calibration, tokenizer, config: GradProbeConfig) -> tuple[torch.Tensor, dict]:
    if isinstance(calibration, torch.Tensor) and calibration.dim() != 2:
        raise ValueError(
            f"`calibration` as a tensor must be 2-D token windows (num_samples, seq_len), got shape "
            f"{tuple(calibration.shape)}."
        )
    if isinstance(calibration, torch.Tensor) and calibration.dim() == 2:
        if calibration.dtype == torch.bool or calibration.is_floating_point() or calibration.is_complex():
            raise ValueError(
                f"`calibration` token windows must be integer ids (dtype torch.long), got dtype {calibration.dtype}."
            )
        if calibration.shape[1] < 2:
            raise ValueError(
                f"`calibration` token windows must have seq_len >= 2, got shape {tuple(calibration.shape)}: a "
                "1-token window has no next token to predict, so its loss is NaN."
            )
        windows = calibration.long()
        return windows, {
            "source": "token windows given in memory",
            "num_samples": len(windows),
            "seq_len": windows.shape[1],
            "seed": None,
        }
    if config.calibration_seq_len < 2:
        raise ValueError(
            f"`calibration_seq_len`={config.calibration_seq_len} must be at least 2: a 1-token window has no next "
            "token to predict."
        )
    ids = tokenize_corpus(tokenizer, calibration, argument="calibration")
    windows = calibration_windows(
        ids, config.num_calibration_samples, config.calibration_seq_len, config.calibration_seed
    )
    source = os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "texts given in memory"
    return windows, {
        "source": source,
        "num_samples": config.num_calibration_samples,
        "seq_len": config.calibration_seq_len,
        "seed": config.calibration_seed,
    }


def calibration_data(calibration, tokenizer, config: GradProbeConfig, model) -> tuple[torch.Tensor, dict]:
    """The calibration windows ``(samples, seq_len)`` and what they are (source, counts, seed), for the report.

    Raises a ``ValueError`` naming the problem for missing data, windows that are not token ids of the model's
    vocabulary, windows longer than its positions (checked before any text is read), or too few windows to probe.
    """
    if calibration is None:
        raise ValueError(
            f"`calibration` is required for strategy={config.strategy!r} with probe={config.probe}, "
            f"reconstruction={config.reconstruction!r} and allocation={config.allocation!r}: give a text file, a "
            "datasets name, a list of texts or a tensor of token windows (data-free pruning: strategy='magnitude', "
            "probe=False, reconstruction='none', allocation='uniform')."
        )
    if not isinstance(calibration, torch.Tensor):
        _check_seq_len_fits(config, model)
    windows, info = _calibration(calibration, tokenizer, config)
    _check_windows(windows, model)
    if config.probe and config.num_probe_samples > len(windows):
        raise ValueError(
            f"`num_probe_samples`={config.num_probe_samples} exceeds the {len(windows)} calibration windows."
        )
    return windows, info


def check_prunable_model(model, config: GradProbeConfig) -> None:
    """Refuse a model whose weights cannot be pruned: quantized, on the meta device, or (when calibration data
    runs through it) holding NaN/inf parameters."""
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(
            f"{type(model).__name__} is quantized ({type(model.hf_quantizer).__name__}); pruning needs float "
            "weights. Load it with `hf_gradprobe.load_model` (which de-quantizes GGUF) or de-quantize it first."
        )
    on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise ValueError(
            f"`model_or_id` has {len(on_meta)} parameters on the meta device (e.g. {on_meta[0]}): they hold no "
            "values to prune (a model built under `init_empty_weights`, or offloaded to disk). Load it with real "
            "weights (`from_pretrained` without disk offload) first."
        )
    if not config.needs_calibration:
        return
    nonfinite = nonfinite_parameters(model.named_parameters())
    if nonfinite:
        # One NaN weight turns every activation after it into NaN: statistics, gradients and reconstruction
        # would all be meaningless, and nothing would be pruned where they are.
        raise ValueError(
            f"`model_or_id` has parameters holding NaN or inf: {describe_parameters(nonfinite)}. The model is "
            "broken (a failed training run, an fp16 overflow, a damaged file): pruning with calibration data "
            "would give meaningless scores. Load an intact copy of the weights."
        )

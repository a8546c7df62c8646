# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Losses the gradient probe differentiates: ``loss_fn(model, input_ids) -> scalar``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["causal_lm_loss", "has_lm_head", "kl_to_reference"]


LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every predicted token, in fp32.

    Through ``labels`` so the model's own loss shifts the labels rather than copying the (large) logits.
    """
    return model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.float()


def kl_to_reference(logits: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``KL(reference || model)`` between next-token distributions, in fp32.

    The reference is the dense model's distribution on the same window: the probe then measures how much the
    shrunk candidates change what the model predicts, not how well it fits the calibration text.
    """
    log_probs = logits.float().log_softmax(dim=-1)
    per_token = F.kl_div(log_probs, reference_log_probs, log_target=True, reduction="none").sum(dim=-1)
    return per_token.mean()


def has_lm_head(model: nn.Module) -> bool:
    return callable(getattr(model, "get_output_embeddings", None)) and model.get_output_embeddings() is not None

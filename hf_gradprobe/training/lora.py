# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Recovering a pruned model with LoRA: merge the adapters without losing the zeros.

A LoRA update ``B @ A`` is dense: `merge_and_unload()` adds it to every entry of the base weight, so a pruned
base layer comes out dense. :func:`merge_lora_and_keep_zeros` records the zeros first and restores them.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

from ..core.layers import find_prunable_layers


__all__ = ["merge_lora_and_keep_zeros"]


logger = logging.get_logger(__name__)


@torch.no_grad()
def merge_lora_and_keep_zeros(peft_model, targets=None, ignore=None):
    """Merge a PEFT (LoRA) model's adapters into its base weights and keep the base weights' zeros.

    Records which entries of every prunable base layer (``<name>.base_layer``, see `find_prunable_layers`) are
    exactly zero, calls ``peft_model.merge_and_unload()``, and zeros those entries again: the merged model has
    exactly the sparsity of the pruned base model. Warns with the fraction of the LoRA update (its squared
    Frobenius norm) that the masks removed: a large fraction means the adapter mostly tried to regrow pruned
    weights.

    Args:
        peft_model (`peft.PeftModel`):
            A PEFT model with LoRA adapters whose base layers hold the zeros to keep.
        targets (`str` or `list[str]`, *optional*):
            Regular expressions of the module names whose zeros are kept (default: every prunable base layer).
        ignore (`str` or `list[str]`, *optional*):
            Regular expressions of the module names left as the merge makes them.

    Returns:
        The merged model (the base `PreTrainedModel`, without PEFT wrappers).

    Example:

    ```python
    >>> model = prune_pretrained("smollm2-135m", target_sparsity=0.5, calibration=texts)
    >>> peft_model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear"))
    >>> SFTTrainer(model=peft_model, ..., callbacks=[PruningCallback('fixed')]).train()
    >>> merged = merge_lora_and_keep_zeros(peft_model)
    ```
    """
    if not hasattr(peft_model, "merge_and_unload"):
        raise TypeError(
            f"merge_lora_and_keep_zeros needs a PEFT model with `merge_and_unload()`, got {type(peft_model).__name__}."
        )
    layers = find_prunable_layers(peft_model, targets=targets, ignore=ignore)
    wrapped = {}
    for module in peft_model.modules():
        if hasattr(module, "get_base_layer") and hasattr(module, "get_delta_weight"):
            wrapped[id(module.get_base_layer())] = module
    removed = total = 0.0
    # merge_and_unload puts each `base_layer` module itself in its wrapper's place: holding the modules is
    # enough to find the merged weights.
    recorded = []
    for layer in layers:
        mask = layer.weight == 0
        if not mask.any():
            continue
        tuner = wrapped.get(id(layer.module))
        if tuner is not None:
            for adapter in tuner.active_adapters:
                if adapter in getattr(tuner, "lora_A", {}) or adapter in getattr(tuner, "lora_embedding_A", {}):
                    delta = tuner.get_delta_weight(adapter).float()
                    removed += float(delta[mask].pow(2).sum())
                    total += float(delta.pow(2).sum())
                    del delta
        recorded.append((layer.module, mask))
    merged = peft_model.merge_and_unload()
    for module, mask in recorded:
        module.weight.masked_fill_(mask.to(module.weight.device), 0)
    if not recorded:
        logger.warning("merge_lora_and_keep_zeros: the base layers hold no zeros; the merge kept nothing.")
    elif total > 0:
        logger.warning(
            f"merge_lora_and_keep_zeros: the pruning masks of {len(recorded)} layers removed {removed / total:.2%} "
            "of the LoRA update (squared norm) to keep the base model's zeros."
        )
    return merged

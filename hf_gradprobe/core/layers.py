# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Which weights of a model are prunable, and where its repeated blocks are."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D
from transformers.utils import logging


__all__ = [
    "PRUNABLE_MODULE_TYPES",
    "PrunableLayer",
    "adapter_modules",
    "find_prunable_layers",
    "find_repeated_blocks",
    "group_by_block",
]


logger = logging.get_logger(__name__)

PRUNABLE_MODULE_TYPES = (nn.Linear, Conv1D)


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight matrix.

    ``block_index`` is the position of the repeated block (decoder layer) that holds it, or ``None``
    when it lives outside the blocks (only possible through ``targets``). ``tied_with`` names the other
    parameters that are this same tensor (a tied LM head's input embedding): pruning it zeros them too.
    """

    name: str
    module: nn.Module
    block_index: int | None
    tied_with: tuple[str, ...] = ()

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def param_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def transposed(self) -> bool:
        # transformers' Conv1D (GPT-2) stores its weight as (in_features, out_features).
        return isinstance(self.module, Conv1D)

    def out_in(self, tensor: torch.Tensor) -> torch.Tensor:
        """View a weight-shaped tensor as (out_features, in_features)."""
        return tensor.t() if self.transposed else tensor

    def from_out_in(self, tensor: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`out_in`."""
        return tensor.t() if self.transposed else tensor


def find_repeated_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of repeated blocks (decoder/encoder layers).

    Preference goes to a ``ModuleList`` whose children are of a class listed in the model's
    ``_no_split_modules`` (what Accelerate never splits across devices); otherwise the longest
    ``ModuleList`` of identical children that hold parameters.
    """
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        classes = {type(child) for child in module}
        if len(classes) != 1 or not any(True for _ in module[0].parameters()):
            continue
        rank = (int(type(module[0]).__name__ in no_split), len(module))
        if best is None or rank > best[:2]:
            best = (*rank, name, module)
    if best is None:
        raise ValueError(
            f"Could not find the repeated blocks of {type(model).__name__} (no nn.ModuleList of identical "
            "layers). Pass `targets` (regular expressions over module names) to choose the prunable layers."
        )
    return best[2], best[3]


def _compile(patterns: str | Sequence[str] | None, name: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"`{name}` entry {pattern!r} is not a valid regular expression: {err}") from None
    return compiled


def adapter_modules(model: nn.Module) -> set[int]:
    """Ids of the modules that belong to PEFT adapters (LoRA's ``lora_A``/``lora_B``, ...): never prunable.

    A PEFT tuner layer (``peft.tuners.lora.LoraLayer`` and the other ``BaseTunerLayer``) wraps the original module
    as ``base_layer`` and adds the adapter weights next to it: the prunable weight is ``<name>.base_layer``'s.
    Empty when peft is not imported (a model with PEFT layers has imported it).
    """
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    base_tuner_layer = getattr(tuners, "BaseTunerLayer", None)
    if base_tuner_layer is None:
        return set()
    adapters: set[int] = set()
    for module in model.modules():
        if not isinstance(module, base_tuner_layer):
            continue
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else getattr(module, "base_layer", None)
        keep = {id(sub) for sub in base.modules()} if isinstance(base, nn.Module) else set()
        adapters |= {id(sub) for sub in module.modules() if id(sub) not in keep and sub is not module}
    return adapters


def find_prunable_layers(
    model: nn.Module,
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
) -> list[PrunableLayer]:
    """Discover prunable weights, in module order.

    By default: every ``nn.Linear`` and ``Conv1D`` inside the repeated blocks, so embeddings, the LM
    head (tied or not), norms and biases are left dense. ``targets`` (regular expressions searched in
    the module name) replaces the default scope with any matching Linear/Conv1D in the model;
    ``ignore`` removes matches from whatever the scope is. On a PEFT model the adapter weights (LoRA's
    ``lora_A``/``lora_B``) are never prunable: the wrapped weight is, named ``<name>.base_layer``.
    """
    target_res, ignore_res = _compile(targets, "targets"), _compile(ignore, "ignore")
    block_of: dict[int, int] = {}
    blocks_prefix = None
    try:
        blocks_prefix, blocks = find_repeated_blocks(model)
        for index, block in enumerate(blocks):
            for module in block.modules():
                block_of[id(module)] = index
    except ValueError:
        if not target_res:
            raise

    owners: dict[int, list[str]] = {}
    for param_name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(param_name)

    adapters = adapter_modules(model)
    layers, seen = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_MODULE_TYPES) or id(module.weight) in seen or id(module) in adapters:
            continue
        in_scope = any(r.search(name) for r in target_res) if target_res else id(module) in block_of
        if not in_scope or any(r.search(name) for r in ignore_res):
            continue
        seen.add(id(module.weight))
        tied = tuple(other for other in owners.get(id(module.weight), []) if other != f"{name}.weight")
        if tied:
            logger.warning(
                f"`{name}.weight` is tied to {', '.join(tied)}: pruning it zeros the same entries there too "
                "(reported as `tied_with`). Untie the weights first (e.g. clone the LM head) to prune it alone."
            )
        layers.append(PrunableLayer(name=name, module=module, block_index=block_of.get(id(module)), tied_with=tied))

    if not layers:
        scope = (
            f"targets={list(targets) if not isinstance(targets, str) else targets!r}"
            if targets
            else (f"the Linear/Conv1D layers inside `{blocks_prefix}`")
        )
        raise ValueError(
            f"Nothing to prune in {type(model).__name__}: no weight matched {scope}"
            + (f" after ignore={ignore!r}" if ignore else "")
            + ". Check the module names with `[n for n, _ in model.named_modules()]` and adjust `targets`/`ignore`."
        )
    return layers


def group_by_block(layers: Iterable[PrunableLayer]) -> list[tuple[int | None, list[PrunableLayer]]]:
    """Layers grouped by block, in order; layers outside any block form their own trailing groups."""
    groups: dict[object, list[PrunableLayer]] = {}
    for layer in layers:
        key = layer.block_index if layer.block_index is not None else f"outside:{layer.name}"
        groups.setdefault(key, []).append(layer)
    ordered = sorted(k for k in groups if isinstance(k, int))
    ordered += [k for k in groups if not isinstance(k, int)]
    return [(k if isinstance(k, int) else None, groups[k]) for k in ordered]

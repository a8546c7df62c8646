# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Strategy scores: which weights a strategy would prune (lowest score first).

* magnitude: ``|W|``
* wanda: ``|W_ij| * ||X_j||_2``, the input-feature norm taken over every calibration token
  (Sun et al. 2023), not the max of per-batch norms as the GradProbe seed did.

Scores are returned in (out, in) orientation and fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import Self

from ..core.layers import PrunableLayer


STRATEGIES = ("magnitude", "wanda")


def magnitude_scores(layer: PrunableLayer) -> torch.Tensor:
    return layer.out_in(layer.weight.detach()).abs().float()


def wanda_scores(layer: PrunableLayer, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``input_sq_norms``: per input feature, the sum over calibration tokens of ``x_j**2``."""
    norms = input_sq_norms.to(device=layer.weight.device, dtype=torch.float32).sqrt()
    return magnitude_scores(layer) * norms.unsqueeze(0)


class ActivationNormCollector:
    """Forward hooks that sum ``x_j**2`` over all tokens seen by each layer's input, in fp32.

    Use as a context manager around forward passes; hooks are removed on exit, also on error.
    """

    def __init__(self, layers: Sequence[PrunableLayer]):
        self.layers = list(layers)
        self.sq_norms: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self._handles = []

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).float()
            total = (x * x).sum(dim=0)
            if name in self.sq_norms:
                self.sq_norms[name] += total
            else:
                self.sq_norms[name] = total
            self.tokens[name] = self.tokens.get(name, 0) + x.shape[0]

        return hook

    def __enter__(self) -> Self:
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_pre_hook(self._hook(layer.name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def strategy_scores(
    strategy: str, layer: PrunableLayer, input_sq_norms: dict[str, torch.Tensor] | None
) -> torch.Tensor:
    if strategy == "magnitude":
        return magnitude_scores(layer)
    if strategy == "wanda":
        if input_sq_norms is None or layer.name not in input_sq_norms:
            raise RuntimeError(f"No activation statistics were collected for {layer.name}: it never ran in forward.")
        return wanda_scores(layer, input_sq_norms[layer.name])
    raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}.")

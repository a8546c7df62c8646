# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Strategies: the score that proposes which weights to prune (lowest first), one registered object each.

| strategy | score | reads |
|---|---|---|
| ``magnitude`` | ``|W_ij|`` | the weight |
| ``wanda`` | ``|W_ij| * ||X_j||_2`` (Sun et al. 2023), the norm over every calibration token | the layer's input |

Scores are in (out, in) orientation and fp32.
"""

from __future__ import annotations

import torch

from ..core.layers import PrunableLayer
from ..core.masking import magnitude_scores
from ..core.registry import Registry
from .statistics import InputStatistics


__all__ = ["STRATEGIES", "MagnitudeStrategy", "Strategy", "WandaStrategy", "wanda_scores"]


class Strategy:
    """How a strategy scores a layer. ``needs_activations``: its score reads the layer's input statistics."""

    name: str = ""
    needs_activations: bool = False

    def scores(self, layer: PrunableLayer, statistics: InputStatistics | None) -> torch.Tensor:
        raise NotImplementedError


class MagnitudeStrategy(Strategy):
    name = "magnitude"

    def scores(self, layer: PrunableLayer, statistics: InputStatistics | None) -> torch.Tensor:
        return magnitude_scores(layer.out_in(layer.weight))


def wanda_scores(layer: PrunableLayer, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||``; ``input_sq_norms`` is, per input feature, the sum over tokens of ``x_j**2``."""
    norms = input_sq_norms.to(device=layer.weight.device, dtype=torch.float32).sqrt()
    return magnitude_scores(layer.out_in(layer.weight)) * norms.unsqueeze(0)


class WandaStrategy(Strategy):
    name = "wanda"
    needs_activations = True

    def scores(self, layer: PrunableLayer, statistics: InputStatistics | None) -> torch.Tensor:
        if statistics is None or layer.name not in statistics:
            raise RuntimeError(f"No activation statistics were collected for {layer.name}: it never ran in forward.")
        return wanda_scores(layer, statistics.sq_norms(layer.name))


STRATEGIES: Registry[Strategy] = Registry("strategy", "strategy")
STRATEGIES.register(MagnitudeStrategy())
STRATEGIES.register(WandaStrategy())

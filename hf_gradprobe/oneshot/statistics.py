# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The statistics of a layer's input that one-shot pruning reads, gathered by one collector.

Wanda's score needs, per input feature, the sum over calibration tokens of ``x_j**2``; reconstruction needs the
second moments ``X^T X`` (whose diagonal is that sum). Layers that read the same input tensor (q/k/v; gate/up)
share one accumulator, hooked on the first of them, so each input is reduced once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.hooks import HookSet
from ..core.layers import PrunableLayer
from .reconstruction import HessianAccumulator


__all__ = ["InputStatistics"]


class InputStatistics(HookSet):
    """Forward pre-hooks accumulating input statistics, in fp32 beside the weights, while the context is active.

    Args:
        groups (`Sequence[Sequence[PrunableLayer]]`):
            Layers grouped by the input tensor they read; a group of one layer reads its own input.
        second_moments (`bool`):
            Accumulate ``X^T X`` (``in_features**2`` fp32 values per group, for reconstruction); otherwise only the
            per-feature sum of squares (``in_features`` values).
        token_weights (`Sequence[torch.Tensor]`, *optional*):
            Per group, a ``(windows, seq_len)`` weight of every calibration token (loss-aware objectives):
            ``X^T diag(w) X`` and ``sum w x^2`` instead. Needs ``window_range``.
        window_range (`Callable[[], tuple[int, int]]`, *optional*):
            The windows ``[start, stop)`` of the batch being run (the pipeline's ``window_range``).
    """

    def __init__(
        self,
        groups: Sequence[Sequence[PrunableLayer]],
        *,
        second_moments: bool,
        token_weights: Sequence[torch.Tensor] | None = None,
        window_range: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.groups = [list(group) for group in groups]
        self.second_moments = second_moments
        if token_weights is not None and (window_range is None or len(token_weights) != len(self.groups)):
            raise ValueError("`token_weights` needs one weight tensor per group and a `window_range`.")
        self.token_weights = list(token_weights) if token_weights is not None else None
        self.window_range = window_range
        self._group_of = {layer.name: index for index, group in enumerate(self.groups) for layer in group}
        self._hessians: list[HessianAccumulator] = []
        self._sums: list[torch.Tensor | None] = [None] * len(self.groups)
        if second_moments:
            self._hessians = [
                HessianAccumulator(group[0].out_in(group[0].weight).shape[1], device=group[0].weight.device)
                for group in self.groups
            ]

    def attach(self) -> None:
        for index, group in enumerate(self.groups):
            self.pre_hook(group[0].module, lambda module, args, index=index: self._add(index, args[0]))

    @torch.no_grad()
    def _add(self, index: int, inputs: torch.Tensor) -> None:
        weights = None
        if self.token_weights is not None:
            start, stop = self.window_range()
            weights = self.token_weights[index][start:stop].reshape(-1, 1).to(inputs.device)
        if self.second_moments:
            self._hessians[index].add(inputs, weights=weights)
            return
        x = inputs.detach()
        x = x.reshape(-1, x.shape[-1]).float()
        total = (x * x).sum(dim=0) if weights is None else (x * x * weights).sum(dim=0)
        if self._sums[index] is None:
            self._sums[index] = total
        else:
            self._sums[index] += total

    def __contains__(self, name: str) -> bool:
        return name in self._group_of

    def sq_norms(self, name: str) -> torch.Tensor:
        """Per input feature of layer ``name``, the sum over tokens of ``x_j**2`` (what Wanda's norm is made of)."""
        index = self._index(name)
        if self.second_moments:
            return self._hessians[index].H.diagonal().clone()
        if self._sums[index] is None:
            raise RuntimeError(f"No activations reached {name}: it never ran in the forward pass.")
        return self._sums[index]

    def hessian(self, name: str) -> torch.Tensor:
        """The mean ``X^T X`` of layer ``name``'s input (a new tensor); needs ``second_moments``."""
        if not self.second_moments:
            raise RuntimeError("These statistics hold no second moments: build them with `second_moments=True`.")
        return self._hessians[self._index(name)].hessian

    def _index(self, name: str) -> int:
        if name not in self._group_of:
            raise RuntimeError(f"No input statistics were collected for {name}: it is not among the hooked layers.")
        return self._group_of[name]

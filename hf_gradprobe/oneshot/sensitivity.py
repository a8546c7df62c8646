# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""How much the loss depends on each layer's output at each calibration token: the weights of loss-aware layer
objectives.

A layer's least-squares objective ``||X W^T - X W_hat^T||^2`` treats every token alike. The end loss does not: it
moves most where its gradient with respect to the layer's output is large. One forward and backward pass of the
dense model per calibration window (nothing is stored on the model: no parameter needs a gradient) gives, for every
prunable layer ``l`` and token ``t``, ``s_lt = ||dL / dy_lt||^2``; the objective then weights token ``t`` by
``(1 - a) + a * s_t / mean(s)`` (a diagonal Fisher-style weighting, as GuidedQuant does for quantisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.hooks import HookSet
from ..core.layers import PrunableLayer


__all__ = ["TokenSensitivities", "blend_weights"]


class TokenSensitivities(HookSet):
    """While active, records ``||dL/dy||^2`` per token of every layer's output ``y`` for the window being run.

    Args:
        layers (`Sequence[PrunableLayer]`): the layers whose outputs are watched.
        windows (`int`): calibration windows; :attr:`window` names the one each backward pass belongs to.
        seq_len (`int`): tokens per window.
    """

    def __init__(self, layers: Sequence[PrunableLayer], windows: int, seq_len: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.values = {
            layer.name: torch.zeros(windows, seq_len, dtype=torch.float32, device=layer.weight.device)
            for layer in self.layers
        }
        self.window = 0

    def attach(self) -> None:
        for layer in self.layers:
            self.post_hook(layer.module, lambda module, args, output, name=layer.name: self._watch(name, output))

    def _watch(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # nothing before this layer needs a gradient: its output starts the graph
            output = output.detach().requires_grad_(True)
        window = self.window
        output.register_hook(lambda grad: self._record(name, window, grad))
        return output

    def _record(self, name: str, window: int, grad: torch.Tensor) -> None:
        self.values[name][window] += grad.detach().float().pow(2).sum(dim=-1).reshape(-1)

    def measure(
        self, model: nn.Module, windows: torch.Tensor, loss_fn, device, scale: float = 1.0, order=None
    ) -> None:
        """One forward and backward pass of ``loss_fn(model, window) * scale`` per window (``scale`` keeps fp16
        gradients above underflow; the weights are normalised, so it cancels). ``order``: the window indices to
        run (e.g. wrapped in a progress bar), default all."""
        with self, torch.enable_grad():
            for self.window in order if order is not None else range(len(windows)):
                loss = loss_fn(model, windows[self.window : self.window + 1].to(device))
                (loss * scale).backward()


def blend_weights(sensitivity: torch.Tensor, strength: float) -> torch.Tensor:
    """Token weights ``(1 - strength) + strength * s / mean(s)``: mean 1, never negative; uniform when ``s`` is 0."""
    mean = sensitivity.mean()
    if not bool(torch.isfinite(mean)) or float(mean) <= 0:
        return torch.ones_like(sensitivity)
    return (1.0 - strength) + strength * sensitivity / mean

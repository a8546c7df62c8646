# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Gradient probing: gradients of the LM loss w.r.t. chosen weights, optionally at shrunk values.

The probe never writes into the model's weights. While a :class:`GradientProbe` is active, each
probed layer computes its output with a *probe weight* ``W * s`` (``s = reduction_factor`` on the
candidates, 1 elsewhere) built as a fresh fp32 leaf tensor, and the gradient w.r.t. that tensor is
folded into a per-layer statistic as soon as autograd produces it. So:

* restoring a candidate is exact by construction (its stored value was never touched);
* gradients are computed in fp32 even for fp16/bf16 models, and no ``.grad`` is ever allocated on
  the model's parameters (only one layer's fp32 gradient exists at a time);
* statistics are stored in ``storage_dtype`` (fp16 by default) with a per-layer power-of-two scale
  chosen from the first batch, so small gradients do not flush to zero in fp16.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from typing_extensions import Self

from ..core.hooks import replaced_forward
from ..core.layers import PrunableLayer


__all__ = ["GRADIENT_STATISTICS", "GradientProbe", "probing_mode", "run_probe_batches"]


GRADIENT_STATISTICS = ("max_abs", "mean_abs", "abs_sum")
# fp16 statistics are scaled so the first batch's largest value lands near 2**10, leaving 2**5 of
# head-room below fp16's 65504 for later, larger batches; max_abs/abs_sum values never exceed B x that.
_TARGET_AMAX = 2.0**10


class _LayerStatistic:
    """Running per-weight statistic of one layer's gradient over probe batches."""

    def __init__(self, statistic: str, storage_dtype: torch.dtype):
        self.statistic = statistic
        self.storage_dtype = storage_dtype
        self.buffer: torch.Tensor | None = None
        self.scale: float = 1.0
        self.batches = 0

    def add(self, grad: torch.Tensor) -> None:
        grad = grad.detach()
        if self.buffer is None:
            if self.storage_dtype == torch.float16:
                amax = grad.abs().max().item()
                self.scale = (
                    2.0 ** math.floor(math.log2(_TARGET_AMAX / amax)) if amax > 0 and math.isfinite(amax) else 1.0
                )
            self.buffer = torch.zeros(grad.shape, dtype=self.storage_dtype, device=grad.device)
        value = grad.abs() if self.statistic in ("max_abs", "mean_abs") else grad
        value = value * self.scale
        if self.statistic == "max_abs":
            torch.maximum(self.buffer, value.to(self.storage_dtype), out=self.buffer)
        else:
            self.buffer += value.to(self.storage_dtype)
        self.batches += 1

    def result(self) -> torch.Tensor:
        """The statistic in fp32 (unscaled); ``abs_sum`` is ``|sum of gradients|``."""
        if self.buffer is None:
            raise RuntimeError("No gradient reached this layer: is it used by the model's forward?")
        out = self.buffer.float() / self.scale
        if self.statistic == "mean_abs":
            out /= self.batches
        elif self.statistic == "abs_sum":
            out = out.abs()
        return out


class _ProbeMatmul(torch.autograd.Function):
    """``x @ W_eff`` for a probed layer, with ``W_eff = W * s`` built transiently in forward and backward.

    Nothing weight-sized is saved for backward (only the input, as ``nn.Linear`` does, plus references to
    the weight and the shrink mask), and the weight gradient goes straight to the probe instead of into
    a ``.grad``. ``anchor`` is a scalar that requires grad, so backward runs even when nothing below the
    layer does (layerwise mode feeds cached hidden states).
    """

    @staticmethod
    def forward(ctx, x, anchor, weight, shrink, reduction_factor, transposed, record):
        ctx.save_for_backward(x, weight, shrink)
        ctx.reduction_factor, ctx.transposed, ctx.record = reduction_factor, transposed, record
        w = _effective_weight(weight, shrink, reduction_factor, transposed)
        out = x.to(torch.float32) @ (w if transposed else w.t())
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, shrink = ctx.saved_tensors
        w = _effective_weight(weight, shrink, ctx.reduction_factor, ctx.transposed)
        grad_out = grad_out.to(torch.float32)
        flat_x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        flat_g = grad_out.reshape(-1, grad_out.shape[-1])
        # weight gradient in (out, in) orientation, fp32, handed to the probe and never stored on the model
        ctx.record(flat_g.t() @ flat_x)
        grad_x = grad_out @ (w.t() if ctx.transposed else w)
        return grad_x.to(x.dtype), None, None, None, None, None, None


def _effective_weight(weight, shrink, reduction_factor, transposed) -> torch.Tensor:
    """fp32 copy of the weight with the candidates multiplied by ``reduction_factor``."""
    w = weight.detach().to(torch.float32)
    if shrink is None:
        return w
    return torch.where(shrink.t() if transposed else shrink, w * reduction_factor, w)


def _probe_forward(layer: PrunableLayer, probe: GradientProbe):
    module = layer.module

    def forward(self, x):
        shrink = probe.shrink_masks.get(layer.name)
        if shrink is not None:
            shrink = shrink.to(self.weight.device)
        out = _ProbeMatmul.apply(
            x,
            probe.anchor,
            self.weight,
            shrink,
            probe.reduction_factor,
            layer.transposed,
            lambda grad: probe._record(layer, grad),
        )
        return out + self.bias if self.bias is not None else out

    return types.MethodType(forward, module)


class GradientProbe:
    """Context manager: route the given layers through probe weights and collect gradient statistics.

    Args:
        layers: the layers whose gradients are wanted.
        shrink_masks: per layer name, an (out, in) bool mask of the weights multiplied by
            ``reduction_factor`` in the forward pass (the candidates); layers absent are not shrunk.
        statistic: ``max_abs`` (elementwise max over batches of |grad|),
            ``mean_abs`` or ``abs_sum`` (|gradient of the summed loss|).
        storage_dtype: dtype of the stored statistics (fp16 halves the memory of fp32).
        buffer_batches: hold a batch's gradients until its backward is complete, so a batch with
            non-finite gradients (fp16 overflow under loss scaling) can be dropped and retried. Costs
            one fp32 gradient per probed weight; off, each layer's gradient is folded in as it arrives.
    """

    def __init__(
        self,
        layers: Sequence[PrunableLayer],
        shrink_masks: dict[str, torch.Tensor] | None = None,
        reduction_factor: float = 0.1,
        statistic: str = "max_abs",
        storage_dtype: torch.dtype = torch.float16,
        buffer_batches: bool = False,
    ):
        if statistic not in GRADIENT_STATISTICS:
            raise ValueError(f"`gradient_statistic` must be one of {GRADIENT_STATISTICS}, got {statistic!r}.")
        self.layers = list(layers)
        self.shrink_masks = shrink_masks or {}
        self.reduction_factor = float(reduction_factor)
        self.statistics = {layer.name: _LayerStatistic(statistic, storage_dtype) for layer in self.layers}
        self.buffer_batches = buffer_batches
        self.anchor = torch.zeros((), requires_grad=True)
        # The fp16 loss scale of the batch being run: recorded gradients are divided by it.
        self.loss_scale = 1.0
        self._overrides = contextlib.ExitStack()
        self._batch_grads: dict[str, torch.Tensor] = {}
        self._batch_finite = True

    def _record(self, layer: PrunableLayer, grad: torch.Tensor) -> None:
        if self.buffer_batches:
            self._batch_grads[layer.name] = grad
        elif torch.isfinite(grad).all():
            self.statistics[layer.name].add(grad / self.loss_scale if self.loss_scale != 1.0 else grad)
        else:
            self._batch_finite = False

    def commit_batch(self, loss_scale: float = 1.0) -> bool:
        """End a batch: fold buffered gradients in; False if any gradient was non-finite."""
        grads, self._batch_grads = self._batch_grads, {}
        finite, self._batch_finite = self._batch_finite, True
        if not self.buffer_batches:
            return finite
        if any(not torch.isfinite(g).all() for g in grads.values()):
            return False
        for name, grad in grads.items():
            self.statistics[name].add(grad / loss_scale if loss_scale != 1.0 else grad)
        return True

    @contextlib.contextmanager
    def unshrunk(self):
        """Forwards inside see the original weights (e.g. for a reference output); gradients are not recorded."""
        saved, self.shrink_masks = self.shrink_masks, {}
        try:
            with torch.no_grad():
                yield
        finally:
            self.shrink_masks = saved

    def results(self) -> dict[str, torch.Tensor]:
        return {name: stat.result() for name, stat in self.statistics.items()}

    def __enter__(self) -> Self:
        device = self.layers[0].weight.device if self.layers else torch.device("cpu")
        self.anchor = torch.zeros((), device=device, requires_grad=True)
        self._overrides = contextlib.ExitStack()
        try:
            for layer in self.layers:
                self._overrides.enter_context(replaced_forward(layer.module, _probe_forward(layer, self)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._overrides.close()  # every layer's own forward back, exactly as it was
        self._batch_grads = {}


def run_probe_batches(
    probe: GradientProbe,
    batches: Iterable,
    loss_fn,
    half_precision_fp16: bool = False,
) -> int:
    """Forward/backward every batch through ``loss_fn(batch) -> scalar loss`` and commit its gradients.

    For fp16 models the loss is scaled (starting at 2**12, halved on overflow, the batch retried) so
    activation gradients do not underflow in the half-precision part of the backward pass. Without
    batch buffering a retried batch may fold some layers twice, which ``max_abs`` absorbs (the same
    unscaled gradient) but sums would not: the caller buffers batches for those.
    Returns the number of batches kept.
    """
    kept = 0
    for index, batch in enumerate(batches):
        loss_scale = 2.0**12 if half_precision_fp16 else 1.0
        for _ in range(16):
            probe.loss_scale = loss_scale
            loss = loss_fn(batch)
            if not bool(torch.isfinite(loss.detach()).all()):
                probe.loss_scale = 1.0
                shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else None
                raise FloatingPointError(
                    f"The probe loss on calibration window batch {index}"
                    + (f" (token ids of shape {shape})" if shape else "")
                    + f" is {loss.detach().float().reshape(-1)[0].item()}, not finite: its gradients would be "
                    "meaningless. Check the calibration windows (at least 2 tokens each, ids within the "
                    "vocabulary) and the model's weights (no NaN/inf)."
                )
            (loss * loss_scale).backward()
            if probe.commit_batch(loss_scale):
                kept += 1
                break
            if loss_scale <= 1.0:
                raise FloatingPointError("Non-finite gradients in the probe even without loss scaling.")
            loss_scale /= 2.0
    probe.loss_scale = 1.0
    return kept


@contextlib.contextmanager
def probing_mode(model: nn.Module, gradient_checkpointing: bool):
    """Dropout off, no parameter gradients, optional checkpointing; everything restored afterwards."""
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    was_checkpointing = bool(getattr(model, "is_activation_checkpointing", False))
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(
                    f"`probe_gradient_checkpointing=True` but {type(model).__name__} does not support it."
                )
            # transformers 5.x renamed gradient_* to activation_checkpointing_*; the old names warn.
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()  # HF only checkpoints in training mode; dropout is switched off below
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.eval()
        else:
            model.eval()
        yield
    finally:
        if gradient_checkpointing and not was_checkpointing:
            (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
        model.train(was_training)
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad.get(name, p.requires_grad))

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Block refinement: a short gradient-based fit of a pruned block's kept weights to the dense outputs.

Layer-wise reconstruction fits each layer on its own; the block's output also depends on how the layers' errors
combine through the attention and the MLP's gating, which only the block's gradient sees. After a block's layers
are pruned and reconstructed, a few Adam steps on its kept weights (masks fixed: pruned weights and their gradients
stay exactly zero) minimise the squared error between the block's output on the pruned model's hidden states and a
target: the dense block's output on the same inputs (``"block"``), or the dense model's hidden states there
(``"model"``: the block also corrects the error the pruned blocks before it let through).

Weights of half-precision models are optimised through fp32 copies and written back in their dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.layers import PrunableLayer
from .pipeline import BlockPipeline


__all__ = ["REFINE_TARGETS", "refine_block"]

REFINE_TARGETS = ("block", "model")


def refine_block(
    pipeline: BlockPipeline,
    index: int,
    layers: Sequence[PrunableLayer],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the kept weights of block ``index``'s ``layers`` so that its outputs on ``inputs`` approach ``targets``.

    Args:
        pipeline (`BlockPipeline`): runs the block on cached hidden states.
        index (`int`): the block.
        layers (`Sequence[PrunableLayer]`): its prunable layers; their zeros are the masks, kept exactly.
        inputs (`torch.Tensor`): the hidden states entering the block, one per calibration window.
        targets (`torch.Tensor`): what the block should output for them, the same shape.
        steps (`int`): Adam steps, each on ``batch_size`` windows drawn with a generator seeded by ``seed`` and
            ``index``.
        lr (`float`): Adam's learning rate.
        batch_size (`int`): windows per step.
        seed (`int`, *optional*, defaults to 0): seed of the window draws.

    Returns:
        `dict[str, float]`: the mean squared error of the first and of the last steps' batches (``loss_first``,
        ``loss_last``), relative to the targets' mean square.
    """
    params = [layer.weight for layer in layers]
    masks = [param.detach() == 0 for param in params]
    # fp32 masters: Adam's small steps vanish in bf16/fp16 weights.
    masters = [param.detach().float().clone().requires_grad_(True) for param in params]
    optimizer = torch.optim.Adam(masters, lr=lr)
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
    scale = targets.float().pow(2).mean().clamp_min(torch.finfo(torch.float32).tiny)
    losses = []
    flags = [param.requires_grad for param in params]
    try:
        for param in params:
            param.requires_grad_(True)
        with pipeline.from_block(index, stop_after_block=True, keep_graph=True), torch.enable_grad():
            for _ in range(steps):
                ids = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
                with torch.no_grad():
                    for param, master in zip(params, masters, strict=True):
                        param.copy_(master)
                output = pipeline.forward_block(inputs[ids.to(inputs.device)], ids)
                loss = (output.float() - targets[ids.to(targets.device)].float()).pow(2).mean() / scale
                grads = torch.autograd.grad(loss, params)
                for master, grad, mask in zip(masters, grads, masks, strict=True):
                    master.grad = grad.float().masked_fill_(mask, 0.0)
                optimizer.step()
                with torch.no_grad():
                    for master, mask in zip(masters, masks, strict=True):
                        master.masked_fill_(mask, 0.0)
                losses.append(float(loss.detach()))
    finally:
        with torch.no_grad():
            for param, master, mask, flag in zip(params, masters, masks, flags, strict=True):
                param.copy_(master)
                param.masked_fill_(mask, 0)
                param.requires_grad_(flag)
    head = losses[: max(1, len(losses) // 8)]
    tail = losses[-max(1, len(losses) // 8) :]
    return {"loss_first": sum(head) / len(head), "loss_last": sum(tail) / len(tail)} if losses else {}

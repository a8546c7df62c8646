# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`MaskedLayers`: a model's prunable layers and their training masks, and everything done to them.

Scoring (through the run's method), growing the masks (`selection`), zeroing the pruned weights, their optimizer
buffers and accumulated scores, masking gradients during backward, and counting, all on this rank's rows under
FSDP2 (`distributed`). The callback decides when; this module does it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers.utils import logging

from ..core.layers import PrunableLayer, find_prunable_layers
from ..core.masking import RowShards, apply_mask_
from .distributed import broadcast_masks_, is_distributed, local_tensor, row_shards, values_of_ranks
from .importance import DEFAULT_BETA1
from .methods import PruningMethod
from .optimizer import beta1_of, local_param_state, zero_pruned_state_
from .plan import PruningPlan
from .selection import PRUNED_SCORE, count_pruned, select_training_masks, selection_threshold, sharded_per_row_message
from .state import PRUNING_STATE_NAME, sharded_state_name


__all__ = ["MaskedLayers"]

logger = logging.get_logger(__name__)


class MaskedLayers:
    """The prunable layers of a model with their masks (True = pruned), and accumulated scores when the method
    keeps them. Under FSDP2 the masks and scores are this rank's rows of the weights; counts are the model's.

    Args:
        layers (`Sequence[PrunableLayer]`, *optional*):
            The layers, as `core.layers.find_prunable_layers` gives them.
        shards (`RowShards`, *optional*):
            How FSDP2 splits the weights by rows over the ranks; None for whole weights.
    """

    def __init__(self, layers: Sequence[PrunableLayer] = (), shards: RowShards | None = None) -> None:
        self.layers: list[PrunableLayer] = list(layers)
        self.shards = shards
        self.masks: list[torch.Tensor] = []
        self.movement: list[torch.Tensor] | None = None
        # A DTensor's numel is the whole weight's: the total is the model's on every rank.
        self.total: int = sum(layer.weight.numel() for layer in self.layers)
        self.pruned: int = 0
        self._hooks: list = []

    @classmethod
    def of_model(cls, model: torch.nn.Module, plan: PruningPlan) -> MaskedLayers:
        """The layers ``plan`` prunes in ``model`` (no masks yet); refuses what FSDP2 shards cannot do."""
        layers = find_prunable_layers(model, targets=plan.targets, ignore=plan.ignore)
        shards = row_shards([layer.weight for layer in layers])
        if shards is not None and plan.comparison_group == "per_row" and any(layer.transposed for layer in layers):
            raise ValueError(sharded_per_row_message(layers))
        return cls(layers, shards)

    # ---- setting up -------------------------------------------------------------------------------------

    def local_weights(self) -> list[torch.Tensor]:
        return [local_tensor(layer.weight.data) for layer in self.layers]

    def start(self, from_zeros: bool, accumulates: bool) -> float:
        """Create the masks (the weights' exact zeros with ``from_zeros``, else empty) and zeroed accumulated
        scores when ``accumulates``; returns the share of the prunable weights that were zero already.

        Those zeros were not chosen by the schedule: a sampled threshold tied at 0 may prune them all at once, so a
        restored state may exceed its schedule by that much.
        """
        weights = self.local_weights()
        self.masks = [(w == 0) if from_zeros else torch.zeros_like(w, dtype=torch.bool) for w in weights]
        if accumulates:
            self.movement = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        self.pruned = self.count_pruned()
        zeros = self.pruned if from_zeros else self.global_count(sum(int((w == 0).sum()) for w in weights))
        return zeros / self.total if self.total else 0.0

    def hook_gradients(self) -> None:
        """Mask every trainable weight's gradient during backward, before clipping and before DDP's all-reduce."""
        for layer, mask in zip(self.layers, self.masks, strict=True):
            if not layer.weight.requires_grad:
                continue
            if self.shards is not None or not is_distributed():
                # Masked in place once accumulated into `.grad`, before clipping: no new tensor per step. Under
                # FSDP2 this is also the only place it can be done: gradients are computed on unsharded copies (a
                # tensor hook on the sharded parameter never runs), then reduce-scattered into the shard's `.grad`,
                # after which the post-accumulate-grad hooks run.
                self._hooks.append(
                    layer.weight.register_post_accumulate_grad_hook(lambda param, mask=mask: _mask_grad_(param, mask))
                )
            else:
                # Under DDP the reducer copies gradients out as they are accumulated: a tensor hook masks every
                # micro-batch before that, so the all-reduce and clipping only ever see masked gradients.
                self._hooks.append(layer.weight.register_hook(lambda grad, mask=mask: grad.masked_fill(mask, 0)))

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # ---- mask updates -----------------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, method: PruningMethod, optimizer=None) -> list[torch.Tensor]:
        """fp32 scores of every prunable weight; already pruned weights score ``PRUNED_SCORE`` (masks only grow)."""
        out = []
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            weight = layer.weight
            score = method.scores(
                local_tensor(weight.data),
                local_param_state(optimizer, weight),
                movement=self.movement[index] if self.movement is not None else None,
                # Looking β₁ up walks the parameter groups: only a bias-correcting method needs it.
                beta1=beta1_of(optimizer, weight) if method.bias_corrects else DEFAULT_BETA1,
            )
            out.append(score.masked_fill_(mask, PRUNED_SCORE))
        return out

    def skip_nonfinite(self, scores: Sequence[torch.Tensor], step: int, plan: PruningPlan, target: float) -> bool:
        """Whether the mask update of ``step`` is skipped, with a warning, because some score is NaN/inf on some
        rank (every rank then skips together); raises instead when `plan.on_nonfinite` says so."""
        bad = [layer.name for layer, score in zip(self.layers, scores, strict=True) if not torch.isfinite(score).all()]
        flag = torch.tensor(float(len(bad)), device=scores[0].device if scores else "cpu")
        if is_distributed():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not flag.item():
            return False
        where = f"{len(bad)} layers, e.g. {bad[0]}" if bad else "another rank"
        message = (
            f"Pruning mask update at optimizer step {step}: the {plan.method.name} scores hold NaN or inf ({where}); "
            "the loss or the weights diverged (lower the learning rate, use bf16 or gradient clipping)."
        )
        if plan.on_nonfinite == "raise":
            raise FloatingPointError(message)
        logger.warning(
            f"{message} The update is skipped: the masks stay at {self.sparsity:.2%} (the schedule asks "
            f"{target:.2%}); non-finite scores never prune. Pass `pruning_on_nonfinite='raise'` to stop."
        )
        return True

    @torch.no_grad()
    def select(self, scores: Sequence[torch.Tensor], target: float, plan: PruningPlan, seed: int):
        """The masks of the lowest ``scores`` at the sparsity ``target`` (those the whole weights would get)."""
        return select_training_masks(
            scores,
            self.layers,
            target,
            plan.comparison_group,
            layer_adaptive=plan.layer_adaptive,
            exact_limit=plan.exact_limit,
            sample_fraction=plan.sample_fraction,
            seed=seed,
            shards=self.shards,
        )

    def threshold(self, scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> float:
        """The score threshold ``masks`` were selected with (NaN when they prune nothing new)."""
        threshold = selection_threshold(scores, masks)
        if self.shards is not None:
            # Each rank saw its rows only: the highest threshold of any rank is the one of the whole weights.
            every = values_of_ranks(threshold, self.shards, self.device)
            finite = [value for value in every if not math.isnan(value)]
            threshold = max(finite) if finite else float("nan")
        return threshold

    @torch.no_grad()
    def grow(self, masks: Sequence[torch.Tensor], sync: bool) -> int:
        """Add ``masks`` to the masks; under DDP with ``sync``, rank 0's masks then replace every rank's.

        Returns how many mask entries this rank had chosen otherwise than rank 0. Under FSDP2 every rank owns its
        rows' masks (the thresholds are agreed on): there is nothing to broadcast.
        """
        for mask, grown in zip(self.masks, masks, strict=True):
            mask |= grown.to(mask.device)
        if sync and is_distributed() and self.shards is None:
            return broadcast_masks_(self.masks)
        return 0

    @torch.no_grad()
    def apply(self, optimizer=None) -> None:
        """Zero the pruned weights, their optimizer buffers (exp_avg, exp_avg_sq, momentum...) and their
        accumulated scores."""
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            apply_mask_(local_tensor(layer.weight.data), mask)
            zero_pruned_state_(optimizer, layer.weight, mask)
            if self.movement is not None:
                self.movement[index].masked_fill_(mask, 0)

    @torch.no_grad()
    def zero_pruned_weights(self) -> None:
        for layer, mask in zip(self.layers, self.masks, strict=True):
            apply_mask_(local_tensor(layer.weight.data), mask)

    @torch.no_grad()
    def accumulate(self, method: PruningMethod) -> None:
        """Add this optimizer step's term to the accumulated scores of every weight that has a gradient."""
        for layer, score in zip(self.layers, self.movement, strict=True):
            if layer.weight.grad is not None:
                method.accumulate_(score, local_tensor(layer.weight), local_tensor(layer.weight.grad))

    # ---- counting and naming ----------------------------------------------------------------------------

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights currently masked."""
        return self.pruned / self.total if self.total else 0.0

    @property
    def device(self) -> torch.device:
        return self.masks[0].device if self.masks else local_tensor(self.layers[0].weight).device

    def count_pruned(self) -> int:
        """Masked weights of the whole model (under FSDP2, the sum of every rank's rows)."""
        return self.global_count(count_pruned(self.masks))

    def global_count(self, count: int) -> int:
        """``count`` of this process's rows summed over the FSDP2 ranks (itself without shards)."""
        if self.shards is None:
            return count
        return int(sum(values_of_ranks(float(count), self.shards, self.device)))

    def shard_layout(self) -> dict | None:
        """This rank's place in an FSDP2 run, stored with its pruning state and checked on resume."""
        if self.shards is None:
            return None
        return {
            "rank": self.shards.rank,
            "world_size": len(self.shards.counts[0]),
            "rows": [list(self.shards.row_range(index)) for index in range(len(self.layers))],
        }

    def recorded(self) -> dict:
        """What a pruning state records of the masks: the layers, the entries its masks prune (this rank's rows
        under FSDP2; checked against them on resume) and this rank's place among the FSDP2 ranks."""
        return {
            "masked": count_pruned(self.masks),
            "layers": [layer.name for layer in self.layers],
            "shard": self.shard_layout(),
        }

    def state_name(self) -> str:
        """The name of this process's pruning state file in a checkpoint folder."""
        layout = self.shard_layout()
        return PRUNING_STATE_NAME if layout is None else sharded_state_name(layout["rank"], layout["world_size"])


@torch.no_grad()
def _mask_grad_(param: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of ``param``'s (this rank's) gradient: FSDP2's post-accumulate-grad hook."""
    if param.grad is not None:
        local_tensor(param.grad).masked_fill_(mask, 0)

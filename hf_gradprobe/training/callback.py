# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningCallback`: all the logic of pruning while training, usable with any `Trainer`."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from transformers.utils import logging

from ..layers import PrunableLayer, find_prunable_layers
from ..masking import apply_mask_, global_masks, lowest_k_mask
from .arguments import resolve_pruning_options
from .importance import ADAM_METHODS, REQUIRED_STATE, accumulate_movement_, adam_scores, magnitude_scores
from .schedule import (
    is_update_step,
    layer_adaptive_scales,
    layer_sparsities,
    resolve_step,
    scheduled_sparsity,
)
from ..masking import sampled_threshold

logger = logging.get_logger(__name__)

PRUNING_STATE_NAME = "pruning_state.safetensors"
# Up to this many scores the threshold is exact (one fp32 copy of the pool, 64 MiB); above, sampled.
EXACT_LIMIT = 2**24
DEFAULT_SAMPLE_FRACTION = 0.02
LOG_PREFIX = "pruning/"


def _unwrap_optimizer(optimizer):
    # Accelerate's AcceleratedOptimizer (and DeepSpeed's wrappers) keep the torch optimizer in `.optimizer`.
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PruningCallback(TrainerCallback):
    """Prunes a model while it trains; works with [`~transformers.Trainer`] or any subclass.

    Lifecycle:

    * `on_train_begin`: find the prunable layers, check the optimizer, create the masks (or restore them from
      the checkpoint being resumed), and hook every prunable weight so its gradient is masked during backward,
      before clipping and before DDP's all-reduce.
    * `on_optimizer_step`: if the step was not skipped by the fp16 loss scaler, count it; on update steps of the
      schedule, score the weights (one read of the optimizer state), find the threshold, grow the masks and zero
      the pruned weights' optimizer moments; after every step, zero the pruned weights.
    * `on_save`: write masks and schedule state to `pruning_state.safetensors` in the checkpoint folder.
    * `on_log`: add `pruning/*` metrics when the trainer did not already merge them (see [`PruningTrainer.log`]).

    Example:

    ```python
    >>> trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[PruningCallback("bitter7", 0.5)])
    ```
    """

    def __init__(
        self,
        method: str = "bitter7",
        target_sparsity: float = 0.5,
        schedule: str | None = None,
        start_step: float = 0.1,
        end_step: float = 0.7,
        frequency: int = 50,
        comparison_group: str | None = None,
        layer_adaptive: bool | None = None,
        sample_fraction: float | None = None,
        targets: str | Sequence[str] | None = None,
        ignore: str | Sequence[str] | None = None,
        seed: int = 0,
        exact_limit: int = EXACT_LIMIT,
        sync_masks: bool = True,
    ):
        options = resolve_pruning_options(
            method,
            target_sparsity,
            schedule,
            start_step,
            end_step,
            frequency,
            comparison_group,
            layer_adaptive,
            sample_fraction,
        )
        for key, value in options.items():
            setattr(self, key, value)
        self.targets, self.ignore, self.seed = targets, ignore, int(seed)
        self.exact_limit, self.sync_masks = int(exact_limit), bool(sync_masks)
        # Set by PruningTrainer.train (or by hand) to the folder being resumed; see `_checkpoint_to_resume`.
        self.resume_from_checkpoint: str | None = None
        self._reset_state()

    @classmethod
    def from_args(cls, args) -> PruningCallback:
        """Build the callback from [`PruningTrainingArguments`]."""
        return cls(
            method=args.pruning_method,
            target_sparsity=args.pruning_target_sparsity,
            schedule=args.pruning_schedule,
            start_step=args.pruning_start_step,
            end_step=args.pruning_end_step,
            frequency=args.pruning_frequency,
            comparison_group=args.pruning_comparison_group,
            layer_adaptive=args.pruning_layer_adaptive,
            sample_fraction=args.pruning_sample_fraction,
            targets=args.pruning_targets,
            ignore=args.pruning_ignore,
            seed=args.seed,
        )

    def _reset_state(self) -> None:
        self.layers: list[PrunableLayer] = []
        self.masks: list[torch.Tensor] = []
        self.movement: list[torch.Tensor] | None = None
        self.optimizer_steps = 0  # optimizer steps that really updated the weights
        self.skipped_steps = 0
        self.mask_updates = 0
        self.threshold = float("nan")
        self.pruned = 0
        self.total = 0
        self.rank_disagreements = 0  # mask entries where a rank's own choice differed from rank 0's
        self.start = self.end = 0
        self._hooks: list = []
        self._seconds_since_log = 0.0
        self._updates_since_log = 0
        self._scale_before = None

    # ---- schedule -------------------------------------------------------------------------------------

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights currently masked."""
        return self.pruned / self.total if self.total else 0.0

    def target_at(self, step: int) -> float:
        if self.method == "fixed":
            return self.sparsity
        return scheduled_sparsity(step, self.target_sparsity, self.start, self.end, self.schedule)

    def _resolve_steps(self, max_steps: int) -> None:
        self.start = resolve_step(self.start_step, max_steps, "pruning_start_step")
        self.end = resolve_step(self.end_step, max_steps, "pruning_end_step")
        if self.end < self.start:
            raise ValueError(
                f"`pruning_end_step`={self.end_step} (step {self.end}) is before `pruning_start_step`="
                f"{self.start_step} (step {self.start}) for {max_steps} training steps. Set the end step after the start."
            )
        if self.method != "fixed" and self.end > max_steps:
            logger.warning(
                f"`pruning_end_step` resolves to optimizer step {self.end}, after the last training step "
                f"({max_steps}): training ends before the target sparsity {self.target_sparsity} is reached."
            )

    # ---- lifecycle ------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if getattr(args, "pruning_adjust_step_budget", False) and not getattr(
            args, "_pruning_step_budget_applied", False
        ):
            raise ValueError(
                "`pruning_adjust_step_budget=True` changes `max_steps`, which must happen before the Trainer is "
                "built: use `PruningTrainer`, or call `hf_gradprobe.training.apply_step_budget(args)` first."
            )
        if model is None:
            raise RuntimeError("PruningCallback needs the model: add it to a transformers Trainer.")
        self._remove_hooks()
        self._reset_state()
        self.layers = find_prunable_layers(model, targets=self.targets, ignore=self.ignore)
        self.total = sum(layer.weight.numel() for layer in self.layers)
        self._resolve_steps(state.max_steps)
        torch_optimizer = _unwrap_optimizer(optimizer)
        self._check_optimizer(torch_optimizer)

        checkpoint = self._checkpoint_to_resume(args, state)
        if checkpoint is not None and os.path.isfile(os.path.join(checkpoint, PRUNING_STATE_NAME)):
            self._load(os.path.join(checkpoint, PRUNING_STATE_NAME))
        else:
            if state.global_step > 0:
                logger.warning(
                    f"Resuming at step {state.global_step} without {PRUNING_STATE_NAME}: the masks are rebuilt "
                    "from the weights that are exactly zero and the schedule restarts from the global step."
                )
                self.optimizer_steps = state.global_step
            rebuild = self.method == "fixed" or state.global_step > 0
            self.masks = [
                (layer.weight.detach() == 0) if rebuild else torch.zeros_like(layer.weight, dtype=torch.bool)
                for layer in self.layers
            ]
            if self.method == "movement":
                self.movement = [torch.zeros_like(layer.weight, dtype=torch.float32) for layer in self.layers]
        self.pruned = _count(self.masks)
        if self.method == "fixed" and self.pruned == 0:
            logger.warning(
                "`pruning_method='fixed'` keeps the zeros the model already has, but its prunable weights have "
                "none: training stays dense. Prune it first (e.g. `prune_pretrained`) or choose another method."
            )
        self._apply_masks(torch_optimizer)
        for layer, mask in zip(self.layers, self.masks, strict=True):
            if layer.weight.requires_grad:
                # A tensor hook runs before the gradient is accumulated, so it masks every micro-batch before
                # clipping and before DDP's all-reduce: no Trainer override is needed for that.
                self._hooks.append(layer.weight.register_hook(lambda grad, mask=mask: grad.masked_fill(mask, 0)))
        logger.info(
            f"Pruning {len(self.layers)} layers ({self.total:,} weights) with {self.method!r}: "
            + (
                f"keeping {self.sparsity:.2%} zeros."
                if self.method == "fixed"
                else f"{self.schedule} ramp to {self.target_sparsity:.2%} from optimizer step {self.start} to "
                f"{self.end}, masks every {self.frequency} steps, {self.comparison_group} thresholds"
                + (", layer-adaptive." if self.layer_adaptive else ".")
            )
        )

    def _check_optimizer(self, optimizer) -> None:
        if self.method not in ADAM_METHODS or not REQUIRED_STATE[self.method]:
            return
        name = type(optimizer).__name__ if optimizer is not None else "None"
        groups = getattr(optimizer, "param_groups", None) or []
        if optimizer is None or not all("betas" in group for group in groups):
            raise ValueError(
                f"`pruning_method`={self.method!r} scores weights from AdamW's moments "
                f"({', '.join(REQUIRED_STATE[self.method])}), but the optimizer is {name}, which keeps none. Train "
                "with an Adam-family optimizer (`optim='adamw_torch'`, the default), or use "
                "`pruning_method='magnitude'` or `'movement'` with this optimizer."
            )
        in_optimizer = {id(p) for group in groups for p in group["params"]}
        missing = [layer.param_name for layer in self.layers if id(layer.weight) not in in_optimizer]
        if missing:
            raise ValueError(
                f"`pruning_method`={self.method!r} needs the optimizer state of every pruned weight, but {name} "
                f"does not train {missing[:3]}{'...' if len(missing) > 3 else ''}. Exclude them with `pruning_ignore` "
                "or unfreeze them."
            )

    def _checkpoint_to_resume(self, args, state) -> str | None:
        if state.global_step == 0:
            return None
        for candidate in (self.resume_from_checkpoint, getattr(args, "resume_from_checkpoint", None)):
            if isinstance(candidate, str) and os.path.isdir(candidate):
                return candidate
        return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if not self.layers:
            return
        if self._step_was_skipped(optimizer):
            # fp16 overflow: weights and moments were not updated, so neither is the schedule.
            self.skipped_steps += 1
            return
        self.optimizer_steps += 1
        step = self.optimizer_steps
        torch_optimizer = _unwrap_optimizer(optimizer)
        if self.movement is not None and step <= self.end:
            for layer, score in zip(self.layers, self.movement, strict=True):
                if layer.weight.grad is not None:
                    accumulate_movement_(score, layer.weight, layer.weight.grad)
        if self.method != "fixed" and is_update_step(step, self.start, self.end, self.frequency):
            began = time.perf_counter()
            self.update_masks(step, torch_optimizer)
            self._seconds_since_log += time.perf_counter() - began
            self._updates_since_log += 1
        else:
            # Masked gradients and zeroed moments already keep AdamW's pruned weights at 0; re-zeroing them
            # makes that hold for any optimizer (e.g. one with its own weight-decay path).
            for layer, mask in zip(self.layers, self.masks, strict=True):
                apply_mask_(layer.weight.data, mask)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        scaler = getattr(optimizer, "scaler", None)
        self._scale_before = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None

    def _step_was_skipped(self, optimizer) -> bool:
        if getattr(optimizer, "step_was_skipped", False):
            return True
        # Accelerate (1.15) reports no skip for optimizers that take the scaler's found_inf themselves (fused
        # AdamW, the default on CUDA): they are called and do nothing. An overflow always halves the loss scale.
        scaler = getattr(optimizer, "scaler", None)
        before, self._scale_before = self._scale_before, None
        return before is not None and scaler is not None and scaler.get_scale() < before

    def on_save(self, args, state, control, **kwargs):
        if not self.layers or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            self.save(os.path.join(folder, PRUNING_STATE_NAME))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # PruningTrainer merges the metrics inside `Trainer.log` (so `report_to` sees them); with another
        # Trainer they are added here, for the callbacks that come after this one and for `log_history`.
        if logs is None or not self.layers or not _is_training_log(logs) or f"{LOG_PREFIX}sparsity" in logs:
            return
        extra = self.pop_logs()
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hooks()
        if self.layers and self.method != "fixed" and self.optimizer_steps < self.end:
            logger.warning(
                f"Training ended after {self.optimizer_steps} optimizer steps, before `pruning_end_step` ({self.end}): "
                f"sparsity is {self.sparsity:.2%}, the target was {self.target_sparsity:.2%}"
                + (
                    f" ({self.skipped_steps} steps were skipped by the fp16 loss scaler)."
                    if self.skipped_steps
                    else "."
                )
            )

    def _remove_hooks(self) -> None:
        for handle in getattr(self, "_hooks", []):
            handle.remove()
        self._hooks = []

    # ---- masks ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, optimizer=None) -> list[torch.Tensor]:
        """fp32 importance of every prunable weight; already pruned weights score -inf (masks only grow)."""
        out = []
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            weight = layer.weight
            if self.method == "movement":
                score = self.movement[index].clone()
            elif self.method == "magnitude":
                score = magnitude_scores(weight)
            else:
                state = optimizer.state.get(weight, {}) if optimizer is not None else {}
                beta1 = _beta1(optimizer, weight) if self.method == "bitter8" else 0.9
                score = adam_scores(self.method, weight, state, beta1=beta1)
            out.append(score.masked_fill_(mask, -math.inf))
        return out

    @torch.no_grad()
    def update_masks(self, step: int, optimizer=None) -> None:
        """Grow the masks to the schedule's sparsity at ``step`` and zero the newly pruned weights and moments."""
        target = self.target_at(step)
        scores = self.scores(optimizer)
        seed = self.seed * 1_000_003 + step  # same on every rank, different at every update
        numels = [score.numel() for score in scores]
        thresholds = []
        if self.comparison_group == "global":
            exact = self.sample_fraction is None and self.total <= self.exact_limit
            if exact:
                new = global_masks(scores, target, exact_limit=self.exact_limit)
                thresholds.append(_kth_from_masks(scores, new))
            else:
                threshold = sampled_threshold(
                    scores, target, self.sample_fraction or DEFAULT_SAMPLE_FRACTION, seed
                )
                new = [score <= threshold for score in scores]
                thresholds.append(threshold)
        else:
            if self.layer_adaptive:
                positions = self._block_positions()
                sparsities = layer_sparsities(target, layer_adaptive_scales(positions, numels), numels)
            else:
                sparsities = [target] * len(scores)
            new = []
            for index, (score, sparsity) in enumerate(zip(scores, sparsities, strict=True)):
                if self.sample_fraction is None and score.numel() <= self.exact_limit:
                    mask = lowest_k_mask(score, sparsity)
                    thresholds.append(_kth_from_masks([score], [mask]))
                else:
                    fraction = self.sample_fraction or DEFAULT_SAMPLE_FRACTION
                    threshold = sampled_threshold([score], sparsity, fraction, seed + 7919 * index)
                    mask = score <= threshold
                    thresholds.append(threshold)
                new.append(mask)
        del scores
        for mask, grown in zip(self.masks, new, strict=True):
            mask |= grown.to(mask.device)
        if self.sync_masks and _distributed():
            self._broadcast_masks()
        self._apply_masks(optimizer)
        self.pruned = _count(self.masks)
        finite = [t for t in thresholds if math.isfinite(t)]
        self.threshold = max(finite) if finite else float("nan")
        self.mask_updates += 1

    def _block_positions(self) -> list[float]:
        blocks = [layer.block_index for layer in self.layers if layer.block_index is not None]
        last = max(blocks) if blocks else 0
        return [1.0 if layer.block_index is None or last == 0 else layer.block_index / last for layer in self.layers]

    def _broadcast_masks(self) -> None:
        # Ranks hold the same weights and moments and draw the same seeded sample, so they should agree;
        # rank 0's masks are broadcast anyway so a stray difference can never make the replicas drift.
        for mask in self.masks:
            local = mask.clone()
            dist.broadcast(mask.view(torch.uint8), src=0)
            self.rank_disagreements += int((local != mask).sum())
        if self.rank_disagreements:
            logger.warning_once(
                f"{self.rank_disagreements} mask entries computed on this rank differed from rank 0's; rank 0's "
                "masks are used on every rank."
            )

    @torch.no_grad()
    def _apply_masks(self, optimizer=None) -> None:
        """Zero the pruned weights and every weight-shaped optimizer buffer (exp_avg, exp_avg_sq, momentum...)."""
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            apply_mask_(layer.weight.data, mask)
            state = optimizer.state.get(layer.weight) if optimizer is not None else None
            for value in (state or {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.masked_fill_(mask.to(value.device), 0)
            if self.movement is not None:
                self.movement[index].masked_fill_(mask, 0)

    # ---- logging --------------------------------------------------------------------------------------

    def pop_logs(self) -> dict[str, float]:
        """Metrics for the next `Trainer.log` call; resets the time spent on mask updates since the last one."""
        if not self.layers:
            return {}
        logs = {
            f"{LOG_PREFIX}target_sparsity": round(self.target_at(self.optimizer_steps), 6),
            f"{LOG_PREFIX}sparsity": round(self.sparsity, 6),
            f"{LOG_PREFIX}mask_update_seconds": round(self._seconds_since_log, 6),
            f"{LOG_PREFIX}mask_updates": self._updates_since_log,
        }
        if math.isfinite(self.threshold):
            logs[f"{LOG_PREFIX}threshold"] = self.threshold
        if self.skipped_steps:
            logs[f"{LOG_PREFIX}skipped_steps"] = self.skipped_steps
        self._seconds_since_log, self._updates_since_log = 0.0, 0
        return logs

    # ---- checkpoint -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "version": 1,
            "method": self.method,
            "target_sparsity": self.target_sparsity,
            "schedule": self.schedule,
            "start": self.start,
            "end": self.end,
            "frequency": self.frequency,
            "comparison_group": self.comparison_group,
            "layer_adaptive": self.layer_adaptive,
            "optimizer_steps": self.optimizer_steps,
            "skipped_steps": self.skipped_steps,
            "mask_updates": self.mask_updates,
            "threshold": self.threshold,
            "layers": [layer.name for layer in self.layers],
        }

    def save(self, path: str) -> None:
        """Write masks (bool), movement scores and schedule counters to a safetensors file."""
        from safetensors.torch import save_file

        tensors = {
            f"mask.{layer.name}": mask.contiguous().cpu() for layer, mask in zip(self.layers, self.masks, strict=True)
        }
        if self.movement is not None:
            tensors.update(
                {
                    f"movement.{layer.name}": s.contiguous().cpu()
                    for layer, s in zip(self.layers, self.movement, strict=True)
                }
            )
        save_file(tensors, path, metadata={"pruning_state": json.dumps(self.state_dict())})

    def _load(self, path: str) -> None:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            meta = json.loads(handle.metadata()["pruning_state"])
            names = [layer.name for layer in self.layers]
            if meta["layers"] != names or meta["method"] != self.method:
                raise ValueError(
                    f"{path} was saved for method {meta['method']!r} on layers {meta['layers'][:3]}..., which does "
                    f"not match this run ({self.method!r} on {names[:3]}...). Resume with the same pruning arguments."
                )
            self.masks = [
                handle.get_tensor(f"mask.{name}").to(layer.weight.device)
                for name, layer in zip(names, self.layers, strict=True)
            ]
            if self.method == "movement":
                self.movement = [
                    handle.get_tensor(f"movement.{name}").to(layer.weight.device)
                    for name, layer in zip(names, self.layers, strict=True)
                ]
        self.optimizer_steps = meta["optimizer_steps"]
        self.skipped_steps = meta["skipped_steps"]
        self.mask_updates = meta["mask_updates"]
        self.threshold = meta["threshold"]
        logger.info(f"Restored pruning masks and schedule (optimizer step {self.optimizer_steps}) from {path}.")


def _beta1(optimizer, param) -> float:
    for group in getattr(optimizer, "param_groups", []):
        if any(p is param for p in group["params"]):
            return float(group.get("betas", (0.9, 0.999))[0])
    return 0.9


def _kth_from_masks(scores: list[torch.Tensor], masks: list[torch.Tensor]) -> float:
    """The largest pruned score: the threshold an exact selection used."""
    best = -math.inf
    for score, mask in zip(scores, masks, strict=True):
        if mask.any():
            best = max(best, float(score[mask.to(score.device)].max()))
    return best


def _count(masks: list[torch.Tensor]) -> int:
    # One device sync for all layers instead of one per layer.
    return int(torch.stack([mask.sum() for mask in masks]).sum()) if masks else 0


def _is_training_log(logs: dict) -> bool:
    return "loss" in logs or "train_loss" in logs

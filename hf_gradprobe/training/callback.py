# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningCallback`: the lifecycle of pruning while training, usable with any `Trainer`.

It orchestrates the other modules of the package's training part: `schedule` (when and how much),
`importance` (scores), `selection` (which weights), `optimizer` (moments and skipped steps), `distributed`
(identical masks on every rank), `state` (checkpoints and resume) and `logs` (`pruning/*` metrics).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Sequence

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..core.layers import PrunableLayer, find_prunable_layers
from ..core.masking import DEFAULT_SAMPLE_FRACTION, EXACT_LIMIT, apply_mask_
from ..core.validation import check_bool, check_int, check_seed
from .arguments import check_on_nonfinite, check_patterns, resolve_pruning_options
from .distributed import (
    broadcast_masks_,
    ddp_inactive_message,
    dtensor_class,
    is_distributed,
    is_sharded,
    local_tensor,
    row_shards,
    unsupported_placement,
    values_of_ranks,
)
from .importance import accumulate_movement_, method_scores
from .logs import LOG_PREFIX, is_training_log, pruning_logs
from .optimizer import (
    DEFAULT_BETA1,
    beta1_of,
    check_optimizer,
    keeps_zeros,
    local_param_state,
    loss_scale,
    step_was_skipped,
    unwrap_optimizer,
    zero_pruned_state_,
)
from .schedule import is_update_step, last_update_step, planned_sparsity, resolve_steps
from .selection import (
    PRUNED_SCORE,
    count_pruned,
    select_training_masks,
    selection_threshold,
    sharded_per_row_message,
)
from .state import (
    COUNTER_KEYS,
    DAMAGED_HINT,
    PRUNING_STATE_NAME,
    SCHEDULE_KEYS,
    checkpoint_folder,
    read_pruning_metadata,
    read_pruning_tensors,
    save_pruning_state,
    sharded_state_name,
    state_file_to_resume,
)


logger = logging.get_logger(__name__)

# The `PruningTrainingArguments` field of each schedule value a pruning state records (steps resolved).
ARGUMENT_OF = {
    "target_sparsity": "pruning_target_sparsity",
    "schedule": "pruning_schedule",
    "start": "pruning_start_step",
    "end": "pruning_end_step",
    "frequency": "pruning_frequency",
    "comparison_group": "pruning_comparison_group",
    "layer_adaptive": "pruning_layer_adaptive",
}
# The values that shape the sparsity ramp; a change of any of them re-plans a resumed ramp.
RAMP_KEYS = ("target_sparsity", "schedule", "start", "end")
# Standard deviations of a sampled threshold's quantile error allowed when a restored state is checked.
SAMPLED_SIGMAS = 6.0


def running_trainer() -> tuple[object | None, str | None]:
    """The `Trainer` whose `train()` is calling this callback, and the checkpoint folder it resumes (or None).

    Callbacks get neither: `CallbackHandler.call_event` passes the model, optimizer, scheduler and data loaders,
    never the Trainer or the handler, and `Trainer.train(resume_from_checkpoint=...)` keeps the folder in a
    local of `_inner_training_loop`. The stateful-callback mechanism (`ExportableState`) cannot help either: it
    stores JSON in `trainer_state.json` (no tensors) and, on resume, replaces the callback by a new instance.
    So the call stack is read: the nearest frame whose ``self`` is a `Trainer` (any subclass: TRL's, PEFT's).
    """
    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                resumed = None
                if frame.f_code.co_name == "_inner_training_loop":
                    value = frame.f_locals.get("resume_from_checkpoint")
                    resumed = value if isinstance(value, str | os.PathLike) else None
                return candidate, (os.fspath(resumed) if resumed is not None else None)
            frame = frame.f_back
    finally:
        del frame
    return None, None


def move_to_front(trainer, callback) -> bool:
    """Put ``callback`` first in ``trainer``'s callback list; whether it is first now.

    `Trainer.log` calls `on_log` of every callback in list order with one `logs` dict, and `Trainer(callbacks=...)`
    or `add_callback` append after the `report_to` integrations (TensorBoard, W&B...): only a callback placed
    before them can add metrics they receive. Moving it from index k to 0 while `call_event` iterates the list
    neither skips nor repeats a callback (the ones after k keep their index).
    """
    callbacks = getattr(getattr(trainer, "callback_handler", None), "callbacks", None)
    if not isinstance(callbacks, list) or not any(cb is callback for cb in callbacks):
        return False
    if callbacks[0] is not callback:
        index = next(i for i, cb in enumerate(callbacks) if cb is callback)
        callbacks.insert(0, callbacks.pop(index))
    return True


def fsdp_version(args, trainer=None) -> int | None:
    """The FSDP version the run asks for (Accelerate's plugin, else `TrainingArguments`), None without FSDP."""
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "fsdp_plugin", None)
    if plugin is not None:
        return int(getattr(plugin, "fsdp_version", 1) or 1)
    if not getattr(args, "fsdp", None):
        return None
    plugin_args = getattr(args, "fsdp_plugin_args", None) or {}
    config = getattr(args, "fsdp_config", None) or {}
    # transformers 5 builds FSDP2 unless `fsdp_config` asks for version 1.
    return int(plugin_args.get("fsdp_version", config.get("version", config.get("fsdp_version", 2))))


def sharded_training_message(args, model, trainer=None) -> str | None:
    """Why this run cannot prune while training (FSDP1, DeepSpeed, tensor parallelism), or None.

    Single-process, DDP and FSDP2 (`fully_shard`: DTensor parameters split by rows) runs are supported.
    """
    why = None
    version = fsdp_version(args, trainer)
    fsdp1_modules = False
    if model is not None:
        try:
            from torch.distributed.fsdp import FullyShardedDataParallel

            fsdp1_modules = any(isinstance(module, FullyShardedDataParallel) for module in model.modules())
        except ImportError:  # pragma: no cover - torch without distributed
            pass
    if getattr(args, "deepspeed", None) or getattr(trainer, "is_deepspeed_enabled", False):
        why = (
            "DeepSpeed (`deepspeed` is set: its ZeRO partitions hide the weights and moments per tensor); shard "
            'with FSDP2 instead: `fsdp=True, fsdp_config={"version": 2}`'
        )
    elif fsdp1_modules or version == 1:
        why = (
            "FSDP1 (`fsdp` with FSDP version 1: flat parameters hide the weights and moments per tensor); use "
            'FSDP2 instead: `fsdp_config={"version": 2}` (the default of transformers 5) or `fsdp_version: 2` in '
            "the Accelerate config"
        )
    elif model is not None and dtensor_class() is not None:
        for name, param in model.named_parameters():
            if is_sharded(param) and unsupported_placement(param):
                why = f"DTensor parameters such as {name} with {unsupported_placement(param)}"
                break
    if why is None:
        return None
    return (
        f"PruningCallback does not support {why}. Pruning while training supports single-process, DDP and FSDP2 "
        "training."
    )


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

    Under FSDP2 (DTensor weights and moments split by rows) each rank scores, masks and saves its own rows
    (one `pruning_state-rankNNNNN-of-NNNNN.safetensors` per rank); thresholds are agreed on across ranks, so
    the masks are those one process would choose; gradients are masked once reduce-scattered, before clipping.
    * `on_log`: add `pruning/*` metrics when the trainer did not already merge them (see [`PruningTrainer.log`]).

    Resuming (`train(resume_from_checkpoint=...)`) restores the masks and counters of the checkpoint's
    `pruning_state.safetensors` after checking it, at train begin, before any step; every refusal is one
    `ValueError` naming the file:

    * A damaged file (not safetensors, truncated, metadata missing or of the wrong type, a mask that is missing,
      not bool or not the layer's shape, tensors of no layer) or one saved for another method, model or layers.
    * A file that disagrees with itself or the run: a mask count other than the one it records, counters of
      another step than the checkpoint's, masks sparser or denser than its own schedule allows at its step
      (within the sampled-threshold tolerance), or, for `fixed`, masks where the model's weights are not zero.
    * Changed options. Unchanged, the run goes on exactly as the uninterrupted one. A different
      `pruning_method` is refused, so are a different `pruning_comparison_group`/`pruning_layer_adaptive` once
      the masks prune anything, and a `pruning_target_sparsity` below what the masks already prune (masks only
      grow). A different target, schedule, start or end step (including steps given as ratios that resolve
      elsewhere because `max_steps` changed) re-plans the ramp: from the sparsity the masks have at the
      resumed step to the new target at the new end step, with a warning; an end step at or before the resumed
      step is refused while the target is not reached. A ramp that is finished (or a target already reached)
      stays finished: the masks are kept as they are. A new `pruning_frequency` applies from the resumed step.

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
        on_nonfinite: str = "skip",
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
        self.targets, self.ignore = check_patterns("targets", targets), check_patterns("ignore", ignore)
        self.seed = check_seed("seed", seed)
        self.exact_limit = check_int(
            "exact_limit", exact_limit, minimum=0, hint="pools up to that many scores are decided exactly"
        )
        self.sync_masks = check_bool("sync_masks", sync_masks)
        self.on_nonfinite = check_on_nonfinite(on_nonfinite, "on_nonfinite")
        # Set by PruningTrainer.train (or by hand) to the folder being resumed; see `state.state_file_to_resume`.
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
            on_nonfinite=getattr(args, "pruning_on_nonfinite", "skip"),
        )

    def _reset_state(self) -> None:
        self.layers: list[PrunableLayer] = []
        self.masks: list[torch.Tensor] = []
        self.movement: list[torch.Tensor] | None = None
        self.optimizer_steps = 0  # optimizer steps that really updated the weights
        self.skipped_steps = 0
        self.mask_updates = 0
        self.nonfinite_updates = 0  # mask updates skipped because some scores were NaN/inf
        self.threshold = float("nan")
        self.pruned = 0
        self.total = 0
        self.rank_disagreements = 0  # mask entries where a rank's own choice differed from rank 0's
        self.shards = None  # FSDP2: how the prunable weights are split by rows (masks are then this rank's rows)
        self.start = self.end = 0
        self.replan: tuple[int, float] | None = None  # (step, sparsity) a resumed ramp was re-planned from
        self.preexisting_zeros = 0.0  # zeros (or rebuilt masks) that were there before this schedule pruned
        self._hooks: list = []
        self._seconds_since_log = 0.0
        self._updates_since_log = 0
        self._scale_before = None
        self._resumed_global_step = 0  # the Trainer's global step a restored state must match

    # ---- schedule -------------------------------------------------------------------------------------

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights currently masked."""
        return self.pruned / self.total if self.total else 0.0

    def target_at(self, step: int) -> float:
        if self.method == "fixed":
            return self.sparsity
        return planned_sparsity(step, self.target_sparsity, self.start, self.end, self.schedule, self.replan)

    def _resolve_steps(self, max_steps: int) -> None:
        self.start, self.end = resolve_steps(self.start_step, self.end_step, max_steps)

    def _warn_if_end_after_training(self, max_steps: int) -> None:
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
        trainer, resumed = running_trainer()
        unsupported = sharded_training_message(args, model, trainer)
        if unsupported:
            raise ValueError(unsupported)
        if not move_to_front(trainer, self):
            logger.warning_once(
                "PruningCallback could not find its Trainer's callback list: `report_to` integrations listed before "
                "it will not receive the `pruning/*` metrics (they still reach `state.log_history`)."
            )
        self._remove_hooks()
        self._reset_state()
        drift = ddp_inactive_message(args)
        if drift:
            logger.warning_once(drift)
        self.layers = find_prunable_layers(model, targets=self.targets, ignore=self.ignore)
        # A DTensor's numel is the whole weight's: the total is the model's on every rank.
        self.total = sum(layer.weight.numel() for layer in self.layers)
        self.shards = row_shards([layer.weight for layer in self.layers])
        if self.shards is None and fsdp_version(args, trainer) == 2 and is_distributed():
            logger.warning_once(
                "FSDP is configured but the prunable weights are not DTensors: the model is not sharded (Accelerate "
                "enables FSDP on accelerators only and trains on CPU with DDP); pruning as for DDP."
            )
        transposed = any(layer.transposed for layer in self.layers)
        if self.shards is not None and self.comparison_group == "per_row" and transposed:
            raise ValueError(sharded_per_row_message(self.layers))
        self._resolve_steps(state.max_steps)
        torch_optimizer = unwrap_optimizer(optimizer)
        check_optimizer(self.method, torch_optimizer, self.layers)

        # The folder `train(resume_from_checkpoint=...)` really resumes comes first: a checkpoint copied or
        # moved elsewhere is not `output_dir/checkpoint-{step}`.
        state_file = state_file_to_resume(
            state.global_step,
            args.output_dir,
            resumed,
            self.resume_from_checkpoint,
            getattr(args, "resume_from_checkpoint", None),
            name=self._state_name(),
        )
        if self.shards is not None:
            found = values_of_ranks(float(state_file is not None), self.shards, self._device())
            if 0 < sum(found) < len(found):
                missing = [rank for rank, value in enumerate(found) if not value]
                raise ValueError(
                    f"Resuming FSDP2 pruning at step {state.global_step}: ranks {missing} found no "
                    f"{self._state_name()} of their own in the checkpoint. A sharded pruning state resumes on the "
                    f"same number of ranks it was saved with, from a folder every rank can read."
                )
        if state_file is not None:
            self._resumed_global_step = state.global_step
            self._load(state_file)
        else:
            if state.global_step > 0:
                logger.warning(
                    f"Resuming at step {state.global_step} from "
                    f"{resumed or self.resume_from_checkpoint or checkpoint_folder(args.output_dir, state.global_step)} "
                    f"without {self._state_name()}: the masks are rebuilt "
                    "from the weights that are exactly zero and the schedule restarts from the global step."
                )
                self.optimizer_steps = state.global_step
            rebuild = self.method == "fixed" or state.global_step > 0
            weights = [local_tensor(layer.weight.data) for layer in self.layers]
            self.masks = [(w == 0) if rebuild else torch.zeros_like(w, dtype=torch.bool) for w in weights]
            if self.method == "movement":
                self.movement = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
            self.pruned = self._count_pruned()
            # Zeros the schedule did not choose: a sampled threshold tied at 0 may prune them all at once, so a
            # restored state may exceed its schedule by that much.
            zeros = self.pruned if rebuild else self._global_count(sum(int((w == 0).sum()) for w in weights))
            self.preexisting_zeros = zeros / self.total if self.total else 0.0
        self._warn_if_end_after_training(state.max_steps)
        if self.method == "movement" and not any(layer.weight.requires_grad for layer in self.layers):
            raise ValueError(
                "`pruning_method='movement'` scores weights from their gradients, but every prunable weight is "
                "frozen (e.g. the base layers of a LoRA/PEFT model). Use `pruning_method='fixed'` or `'magnitude'`."
            )
        if self.method == "fixed":
            empty = [
                layer.param_name
                for layer, mask in zip(self.layers, self.masks, strict=True)
                if layer.weight.requires_grad and mask.all() and mask.numel()
            ]
            if empty:
                logger.warning(
                    f"`pruning_method='fixed'` found {len(empty)} trainable layers that are all zeros ({empty[0]}"
                    f"{', ...' if len(empty) > 1 else ''}): they stay zero and learn nothing. A zero-initialised "
                    "adapter (LoRA's `lora_B`) must not be pruned: leave it out with `ignore`/`targets`."
                )
        if self.method == "fixed" and self.pruned == 0:
            logger.warning(
                "`pruning_method='fixed'` keeps the zeros the model already has, but its prunable weights have "
                "none: training stays dense. Prune it first (e.g. `prune_pretrained`) or choose another method."
            )
        self._apply_masks(torch_optimizer)
        for layer, mask in zip(self.layers, self.masks, strict=True):
            if not layer.weight.requires_grad:
                continue
            if self.shards is not None or not is_distributed():
                # The gradient is masked in place once accumulated into `.grad`, before clipping: no new tensor
                # per step. Under FSDP2 this is also the only place it can be done: gradients are computed on
                # unsharded copies (a tensor hook on the sharded parameter never runs), then reduce-scattered into
                # the shard's `.grad`, after which the post-accumulate-grad hooks run.
                self._hooks.append(
                    layer.weight.register_post_accumulate_grad_hook(lambda param, mask=mask: _mask_grad_(param, mask))
                )
            else:
                # Under DDP the reducer copies gradients out as they are accumulated: a tensor hook masks every
                # micro-batch before that, so the all-reduce and clipping only ever see masked gradients.
                self._hooks.append(layer.weight.register_hook(lambda grad, mask=mask: grad.masked_fill(mask, 0)))
        logger.info(
            f"Pruning {len(self.layers)} layers ({self.total:,} weights"
            + (f", sharded by rows over {len(self.shards.counts[0])} FSDP2 ranks" if self.shards else "")
            + f") with {self.method!r}: "
            + (
                f"keeping {self.sparsity:.2%} zeros."
                if self.method == "fixed"
                else f"{self.schedule} ramp to {self.target_sparsity:.2%} from optimizer step {self.start} to "
                f"{self.end}, masks every {self.frequency} steps, {self.comparison_group} thresholds"
                + (", layer-adaptive." if self.layer_adaptive else ".")
            )
        )

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if not self.layers:
            return
        scale_before, self._scale_before = self._scale_before, None
        if step_was_skipped(optimizer, scale_before):
            # fp16 overflow: weights and moments were not updated, so neither is the schedule.
            self.skipped_steps += 1
            return
        self.optimizer_steps += 1
        step = self.optimizer_steps
        torch_optimizer = unwrap_optimizer(optimizer)
        if self.movement is not None and step <= self.end:
            for layer, score in zip(self.layers, self.movement, strict=True):
                if layer.weight.grad is not None:
                    accumulate_movement_(score, local_tensor(layer.weight), local_tensor(layer.weight.grad))
        if self.method != "fixed" and is_update_step(step, self.start, self.end, self.frequency):
            began = time.perf_counter()
            self.update_masks(step, torch_optimizer)
            self._seconds_since_log += time.perf_counter() - began
            self._updates_since_log += 1
        elif not keeps_zeros(torch_optimizer):
            # Masked gradients and zeroed moments keep Adam(W)'s pruned weights exactly at 0 (a zero moment gives
            # a zero update; decay scales 0 to 0); any other optimizer may move them (e.g. its own weight-decay
            # path), so they are zeroed again after its step.
            for layer, mask in zip(self.layers, self.masks, strict=True):
                apply_mask_(local_tensor(layer.weight.data), mask)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._scale_before = loss_scale(optimizer)

    def on_save(self, args, state, control, **kwargs):
        # Under FSDP2 every rank saves the rows it holds, beside the Trainer's sharded model and optimizer.
        if not self.layers or (self.shards is None and not state.is_world_process_zero):
            return
        folder = checkpoint_folder(args.output_dir, state.global_step)
        if os.path.isdir(folder):
            self.save(os.path.join(folder, self._state_name()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        # PruningTrainer merges the metrics inside `Trainer.log`; with another Trainer they are added here.
        # `on_train_begin` moved this callback first, so every `report_to` integration after it sees them.
        if logs is None or not self.layers or not is_training_log(logs) or f"{LOG_PREFIX}sparsity" in logs:
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
        """fp32 importance of every prunable weight; already pruned weights score ``PRUNED_SCORE`` (masks only grow)."""
        out = []
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            weight = layer.weight
            score = method_scores(
                self.method,
                local_tensor(weight.data),
                local_param_state(optimizer, weight),
                movement=self.movement[index] if self.movement is not None else None,
                # Looking β₁ up walks the parameter groups: only bitter8 uses it.
                beta1=beta1_of(optimizer, weight) if self.method == "bitter8" else DEFAULT_BETA1,
            )
            out.append(score.masked_fill_(mask, PRUNED_SCORE))
        return out

    @torch.no_grad()
    def update_masks(self, step: int, optimizer=None) -> None:
        """Grow the masks to the schedule's sparsity at ``step`` and zero the newly pruned weights and moments."""
        scores = self.scores(optimizer)
        if self._scores_not_finite(scores, step):
            del scores
            self._apply_masks(optimizer)
            return
        new = select_training_masks(
            scores,
            self.layers,
            self.target_at(step),
            self.comparison_group,
            layer_adaptive=self.layer_adaptive,
            exact_limit=self.exact_limit,
            sample_fraction=self.sample_fraction,
            seed=self.seed * 1_000_003 + step,  # same on every rank, different at every update
            shards=self.shards,
        )
        threshold = selection_threshold(scores, new)
        if self.shards is not None:
            # Each rank saw its rows only: the highest threshold of any rank is the one of the whole weights.
            finite = [
                value for value in values_of_ranks(threshold, self.shards, self._device()) if not math.isnan(value)
            ]
            threshold = max(finite) if finite else float("nan")
        del scores
        for mask, grown in zip(self.masks, new, strict=True):
            mask |= grown.to(mask.device)
        # FSDP2: every rank owns its rows' masks (the thresholds are agreed on), there is nothing to broadcast.
        if self.sync_masks and is_distributed() and self.shards is None:
            self.rank_disagreements += broadcast_masks_(self.masks)
            if self.rank_disagreements:
                logger.warning_once(
                    f"{self.rank_disagreements} mask entries computed on this rank differed from rank 0's; rank 0's "
                    "masks are used on every rank."
                )
        self._apply_masks(optimizer)
        self.pruned = self._count_pruned()
        self.threshold = threshold
        self.mask_updates += 1

    def _scores_not_finite(self, scores: Sequence[torch.Tensor], step: int) -> bool:
        """Whether some score is NaN/inf (on any rank): the update is then skipped with a warning, or raises."""
        bad = [layer.name for layer, score in zip(self.layers, scores, strict=True) if not torch.isfinite(score).all()]
        flag = torch.tensor(float(len(bad)), device=scores[0].device if scores else "cpu")
        if is_distributed():  # every rank skips together, or none does
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not flag.item():
            return False
        where = f"{len(bad)} layers, e.g. {bad[0]}" if bad else "another rank"
        message = (
            f"Pruning mask update at optimizer step {step}: the {self.method} scores hold NaN or inf ({where}); "
            "the loss or the weights diverged (lower the learning rate, use bf16 or gradient clipping)."
        )
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message)
        self.nonfinite_updates += 1
        logger.warning(
            f"{message} The update is skipped: the masks stay at {self.sparsity:.2%} (the schedule asks "
            f"{self.target_at(step):.2%}); non-finite scores never prune. Pass `pruning_on_nonfinite='raise'` to stop."
        )
        return True

    @torch.no_grad()
    def _apply_masks(self, optimizer=None) -> None:
        """Zero the pruned weights, their optimizer buffers (exp_avg, exp_avg_sq, momentum...) and movement scores."""
        for index, (layer, mask) in enumerate(zip(self.layers, self.masks, strict=True)):
            apply_mask_(local_tensor(layer.weight.data), mask)
            zero_pruned_state_(optimizer, layer.weight, mask)
            if self.movement is not None:
                self.movement[index].masked_fill_(mask, 0)

    def _count_pruned(self) -> int:
        """Masked weights of the whole model (under FSDP2, the sum of every rank's rows)."""
        return self._global_count(count_pruned(self.masks))

    def _global_count(self, count: int) -> int:
        """``count`` of this process's rows summed over the FSDP2 ranks (itself without shards)."""
        if self.shards is None:
            return count
        return int(sum(values_of_ranks(float(count), self.shards, self._device())))

    def _device(self) -> torch.device:
        return self.masks[0].device if self.masks else local_tensor(self.layers[0].weight).device

    def _shard_layout(self) -> dict | None:
        """This rank's place in an FSDP2 run, stored with its pruning state and checked on resume."""
        if self.shards is None:
            return None
        return {
            "rank": self.shards.rank,
            "world_size": len(self.shards.counts[0]),
            "rows": [list(self.shards.row_range(index)) for index in range(len(self.layers))],
        }

    def _state_name(self) -> str:
        layout = self._shard_layout()
        return PRUNING_STATE_NAME if layout is None else sharded_state_name(layout["rank"], layout["world_size"])

    # ---- logging --------------------------------------------------------------------------------------

    def pop_logs(self) -> dict[str, float]:
        """Metrics for the next `Trainer.log` call; resets the time spent on mask updates since the last one."""
        if not self.layers:
            return {}
        logs = pruning_logs(
            self.target_at(self.optimizer_steps),
            self.sparsity,
            self._seconds_since_log,
            self._updates_since_log,
            self.threshold,
            self.skipped_steps,
        )
        self._seconds_since_log, self._updates_since_log = 0.0, 0
        return logs

    # ---- checkpoint -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The schedule and counters stored next to the masks (see `hf_gradprobe.training.state`)."""
        return {
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
            "nonfinite_updates": self.nonfinite_updates,
            "threshold": self.threshold,
            "replan": list(self.replan) if self.replan is not None else None,
            "preexisting_zeros": self.preexisting_zeros,
            # Entries this file's masks prune (this rank's rows under FSDP2): checked against them on resume.
            "masked": count_pruned(self.masks),
            "layers": [layer.name for layer in self.layers],
            "shard": self._shard_layout(),
        }

    def save(self, path: str) -> None:
        """Write masks, movement scores and schedule counters to ``path`` (a `pruning_state.safetensors`)."""
        names = [layer.name for layer in self.layers]
        save_pruning_state(path, names, self.masks, self.movement, self.state_dict())

    def _load(self, path: str) -> None:
        """Restore masks and counters from ``path`` once it is checked against itself, the model and this run.

        See the class docstring for what is refused and how changed options go on. Under FSDP2 every rank checks
        its own file and all ranks stop together when one refuses (no rank is left waiting in a collective).
        """
        names = [layer.name for layer in self.layers]
        weights = [local_tensor(layer.weight.data) for layer in self.layers]
        problem = None
        try:
            meta = read_pruning_metadata(path, names, self.method, required=(*SCHEDULE_KEYS, *COUNTER_KEYS))
            saved, layout = meta.get("shard"), self._shard_layout()
            if saved != layout:
                raise ValueError(
                    f"{path} holds the pruning state of {_describe_layout(saved)}, but this process is "
                    f"{_describe_layout(layout)} (or the rows differ). A sharded (FSDP2) pruning state resumes with "
                    "FSDP2 on the same number of ranks."
                )
            masks, movement = read_pruning_tensors(
                path, names, self.method, [w.device for w in weights], [tuple(w.shape) for w in weights]
            )
            self._check_state_itself(path, meta, masks, weights, self._resumed_global_step)
        except ValueError as error:
            problem = error
        self._stop_together(problem)
        self.masks = masks
        if movement is not None:
            self.movement = movement
        self.optimizer_steps = meta["optimizer_steps"]
        self.skipped_steps = meta["skipped_steps"]
        self.mask_updates = meta["mask_updates"]
        self.nonfinite_updates = meta.get("nonfinite_updates", 0)
        self.threshold = meta["threshold"]
        self.preexisting_zeros = meta.get("preexisting_zeros", 0.0)
        self.pruned = self._count_pruned()
        problem = None
        try:
            if self.method != "fixed":
                self._check_state_against_its_schedule(path, meta)
                self._continue_plan(path, meta)
        except ValueError as error:
            problem = error
        self._stop_together(problem)
        logger.info(f"Restored pruning masks and schedule (optimizer step {self.optimizer_steps}) from {path}.")

    def _stop_together(self, problem: ValueError | None) -> None:
        """Raise ``problem``; under FSDP2 on every rank when any rank has one."""
        if self.shards is not None:
            flags = values_of_ranks(float(problem is not None), self.shards, self._device())
            if problem is None and any(flags):
                ranks = [rank for rank, flag in enumerate(flags) if flag]
                problem = ValueError(
                    f"Resuming FSDP2 pruning: ranks {ranks} refused their pruning state file "
                    "(their error names the file and what is wrong); every rank stops before training."
                )
        if problem is not None:
            raise problem

    def _check_state_itself(self, path, meta, masks, weights, global_step: int) -> None:
        """A state whose counters, mask count or (for `fixed`) zeros disagree with it or the model is refused."""
        steps, skipped = meta["optimizer_steps"], meta["skipped_steps"]
        if steps + skipped != global_step:
            raise ValueError(
                f"{path} was saved at optimizer step {steps} (+{skipped} skipped), but the checkpoint resumes global "
                f"step {global_step}: the file belongs to another checkpoint. {DAMAGED_HINT}"
            )
        masked = count_pruned(masks)
        numel = sum(mask.numel() for mask in masks)
        if "masked" in meta and meta["masked"] != masked:
            raise ValueError(
                f"{path}: its masks prune {masked} weights ({_share(masked, numel)}), but its metadata records "
                f"{meta['masked']} ({_share(meta['masked'], numel)}): the file was altered or damaged. {DAMAGED_HINT}"
            )
        if self.method == "fixed":
            for layer, mask, weight in zip(self.layers, masks, weights, strict=True):
                stray = int((mask & (weight != 0)).sum())
                if stray:
                    raise ValueError(
                        f"{path}: its masks prune {stray} weights of {layer.name} that are not zero in the model, but "
                        "`pruning_method='fixed'` masks exactly the model's zeros: the state belongs to another model "
                        f"or was altered. Resume with the model the checkpoint was trained from. {DAMAGED_HINT}"
                    )

    def _sparsity_tolerance(self) -> float:
        """How far masks may be from their schedule's sparsity: one weight per rounding group (exact counts are
        ``round(sparsity * n)`` per row, layer or pool), plus ``SAMPLED_SIGMAS`` standard deviations of the
        quantile of a sampled threshold (``sqrt(p (1 - p) / m) <= 0.5 / sqrt(m)`` for ``m`` sampled scores)."""
        numels = [layer.weight.numel() for layer in self.layers]  # whole weights, also for DTensors
        total = sum(numels) or 1
        if self.comparison_group == "per_row":
            groups = sum(layer.weight.shape[1] if layer.transposed else layer.weight.shape[0] for layer in self.layers)
            pools = []  # every row is decided exactly
        elif self.comparison_group == "per_layer":
            groups, pools = len(numels), numels
        else:
            groups, pools = 1, [total]
        sampled = [n for n in pools if self.sample_fraction is not None or n > self.exact_limit]
        tolerance = groups / total + 1e-9
        if sampled:
            fraction = self.sample_fraction if self.sample_fraction is not None else DEFAULT_SAMPLE_FRACTION
            tolerance += SAMPLED_SIGMAS * 0.5 / math.sqrt(min(math.ceil(fraction * n) for n in sampled))
        return tolerance

    def _check_state_against_its_schedule(self, path: str, meta: dict) -> None:
        """Masks sparser or denser than the schedule they were saved with allows at their step are refused."""
        step, sparsity, tolerance = meta["optimizer_steps"], self.sparsity, self._sparsity_tolerance()
        replan = tuple(meta["replan"]) if meta.get("replan") is not None else None
        ramp = (meta["target_sparsity"], meta["start"], meta["end"], meta["schedule"], replan)

        def planned(at: int) -> float:
            target, start, end, schedule, replanned = ramp
            return planned_sparsity(at, target, start, end, schedule, replanned)

        described = (
            f"{meta['schedule']} to {meta['target_sparsity']:.2%} from step {meta['start']} to {meta['end']}"
            + (f", re-planned at step {replan[0]}" if replan else "")
        )
        highest = min(1.0, planned(step) + meta.get("preexisting_zeros", 0.0))
        if sparsity > highest + tolerance:
            raise ValueError(
                f"{path}: its masks prune {sparsity:.2%} of the weights at optimizer step {step}, but its schedule "
                f"({described}) allows at most {highest:.2%} there: the file was altered or belongs to another run. "
                f"{DAMAGED_HINT}"
            )
        # Skipped non-finite updates leave masks below their schedule; older files do not record them.
        last = last_update_step(step, meta["start"], meta["end"], meta["frequency"])
        if meta.get("nonfinite_updates") == 0 and last is not None and sparsity < planned(last) - tolerance:
            raise ValueError(
                f"{path}: its masks prune {sparsity:.2%} of the weights at optimizer step {step}, but its schedule "
                f"({described}) reached {planned(last):.2%} at step {last}: the file was altered or belongs to "
                f"another run. {DAMAGED_HINT}"
            )

    def _continue_plan(self, path: str, meta: dict) -> None:
        """How the restored ramp goes on when this run's schedule options differ from the checkpoint's."""
        replan = tuple(meta["replan"]) if meta.get("replan") is not None else None
        mine = {key: getattr(self, key) for key in SCHEDULE_KEYS}
        changed = {key: (meta[key], mine[key]) for key in SCHEDULE_KEYS if meta[key] != mine[key]}
        if not changed:
            self.replan = replan
            return
        step, sparsity, target = self.optimizer_steps, self.sparsity, self.target_sparsity
        listed = ", ".join(f"`{ARGUMENT_OF[key]}` {old!r} -> {new!r}" for key, (old, new) in changed.items())
        for key in ("comparison_group", "layer_adaptive"):
            if key in changed and self.pruned:
                old, new = changed[key]
                raise ValueError(
                    f"`{ARGUMENT_OF[key]}`={new!r}, but {path} was saved with {old!r} and its masks already prune "
                    f"{sparsity:.2%}: masks chosen by one rule cannot be grown to meet another's targets. Resume with "
                    f"`{ARGUMENT_OF[key]}`={old!r}, or start a new run from the pruned model."
                )
        tolerance = self._sparsity_tolerance()
        if target < sparsity - tolerance:
            raise ValueError(
                f"`pruning_target_sparsity`={target!r}, but {path} (saved with {meta['target_sparsity']!r}) already "
                f"prunes {sparsity:.2%} at optimizer step {step}, and masks only grow: the lower target cannot be met. "
                f"Resume with `pruning_target_sparsity` >= {sparsity:.4g}, or from an earlier checkpoint."
            )
        if not any(key in changed for key in RAMP_KEYS):
            self.replan = replan
            logger.warning(f"Resuming pruning from {path} at optimizer step {step} with {listed}: applied from here.")
            return
        ramp_done = step >= meta["end"] and target == meta["target_sparsity"]
        if ramp_done or target <= sparsity + tolerance:
            # Nothing is left to prune: no update step remains, so sampled thresholds cannot drift the masks.
            self.start, self.end = min(self.start, step), min(self.end, step)
            self.replan = None if ramp_done else (step, sparsity)
            logger.warning(
                f"Resuming pruning from {path} at optimizer step {step} with {listed}: its masks prune "
                f"{sparsity:.2%} and the target is {target:.2%}, so nothing is left to prune; the masks stay as "
                "they are."
            )
            return
        if self.end <= step:
            raise ValueError(
                f"`pruning_end_step` resolves to optimizer step {self.end}, but {path} resumes at step {step} with "
                f"{sparsity:.2%} pruned of the target {target:.2%}: the ramp would end before the run goes on. Set "
                f"`pruning_end_step` after step {step} (the checkpoint's ramp ends at step {meta['end']})."
            )
        begin = max(step, self.start)
        # Not yet started and nothing pruned: the new ramp as it stands is the re-planned one.
        self.replan = None if sparsity == 0 and begin == self.start else (begin, sparsity)
        logger.warning(
            f"Resuming pruning from {path} at optimizer step {step} with {listed}: the ramp is re-planned from the "
            f"{sparsity:.2%} its masks prune to {target:.2%} at step {self.end} ({self.schedule}, masks every "
            f"{self.frequency} steps)."
        )


@torch.no_grad()
def _mask_grad_(param: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of ``param``'s (this rank's) gradient: FSDP2's post-accumulate-grad hook."""
    if param.grad is not None:
        local_tensor(param.grad).masked_fill_(mask, 0)


def _share(count: int, numel: int) -> str:
    return f"{count / numel:.2%}" if numel else "0.00%"


def _describe_layout(layout: dict | None) -> str:
    return (
        "a single-process/DDP run"
        if layout is None
        else f"rank {layout['rank']} of {layout['world_size']} FSDP2 ranks"
    )

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningCallback`: the lifecycle of pruning while training, usable with any `Trainer`.

The callback decides when; the other modules do the work: `plan` (the options), `methods` (scores), `schedule`
(the ramp), `masks` (the masked layers), `resume` and `state` (checkpoints), `distributed` (DDP and FSDP2),
`integration` (what the Trainer tells a callback: the checkpoint resumed, where metrics go) and `logs`.
"""

from __future__ import annotations

import os
import time

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..core.layers import PrunableLayer
from .arguments import check_step_budget_applied
from .distributed import check_training_run, warn_if_fsdp_did_not_shard
from .integration import missing_state_message, resume_argument, state_file_to_resume, unreported_metrics_message
from .logs import LOG_PREFIX, describe_run, is_training_log, pruning_logs
from .masks import MaskedLayers
from .methods import DEFAULT_METHOD
from .optimizer import check_optimizer, keeps_zeros, loss_scale, step_was_skipped, unwrap_optimizer
from .plan import PruningPlan
from .resume import check_every_rank_found, restore_pruning_state
from .schedule import Ramp
from .state import checkpoint_folder, save_pruning_state


__all__ = ["PruningCallback"]

logger = logging.get_logger(__name__)


class PruningCallback(TrainerCallback):
    """Prunes a model while it trains; works with [`~transformers.Trainer`] or any subclass (TRL's, PEFT's).

    * `on_train_begin`: find the prunable layers, check the optimizer, create the masks (or restore and check them
      from the checkpoint resumed, see `hf_gradprobe.training.resume`), warn when the masks cannot follow the
      ramp, and hook every prunable weight so its gradient is masked during backward, before clipping and before
      DDP's all-reduce.
    * `on_optimizer_step`: if the fp16 loss scaler did not skip the step, count it; on the ramp's update steps,
      score the weights (one read of the optimizer state), find the threshold, grow the masks and zero the pruned
      weights' optimizer moments; pruned weights are zero after every step.
    * `on_save`: write masks and schedule state to `pruning_state.safetensors` in the checkpoint folder (under
      FSDP2, one file of its rows per rank; thresholds are agreed on across ranks, so the masks are those one
      process would choose).
    * `on_log`: add the `pruning/*` metrics unless the Trainer merged them already ([`PruningTrainer.log`]);
      integrations listed before the callback miss them (see `hf_gradprobe.training.integration`).

    Args:
        method (`str`, *optional*, defaults to `bitter7`):
            The pruning method (see `hf_gradprobe.training.methods`).
        target_sparsity (`float`, *optional*, defaults to `0.5`):
            Fraction of the prunable weights zeroed at the end of the ramp.
        plan ([`PruningPlan`], *optional*):
            The validated options, instead of `method`, `target_sparsity` and `options` ([`from_args`] passes it).
        resume_from_checkpoint (`str`, *optional*):
            The checkpoint folder the run resumes, for a Trainer that does not tell the callback (any but
            [`PruningTrainer`]); `args.resume_from_checkpoint` and `output_dir/checkpoint-{global_step}` are
            looked in after it.
        options:
            The other fields of [`PruningPlan`]: `schedule`, `start_step`, `end_step`, `frequency`,
            `comparison_group`, `layer_adaptive`, `sample_fraction`, `targets`, `ignore`, `seed`, `exact_limit`,
            `sync_masks`, `on_nonfinite`.

    Example:

    ```python
    >>> trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[PruningCallback("magnitude", 0.5)])
    ```
    """

    plan: PruningPlan
    ramp: Ramp  # resolved at train begin (re-planned when a resume changes the options)
    masked: MaskedLayers
    resume_from_checkpoint: str | os.PathLike | bool | None
    optimizer_steps: int  # optimizer steps that really updated the weights
    skipped_steps: int  # steps the fp16 loss scaler skipped
    mask_updates: int
    nonfinite_updates: int  # mask updates skipped because some scores were NaN/inf
    threshold: float  # the score threshold of the last mask update (NaN before any)
    rank_disagreements: int  # mask entries where this rank's own choice differed from rank 0's (DDP)
    preexisting_zeros: float  # zeros (or rebuilt masks) that were there before the schedule pruned
    _seconds_since_log: float  # time spent on mask updates since the last log entry
    _updates_since_log: int
    _scale_before: float | None  # the fp16 loss scale before the optimizer step

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        target_sparsity: float = 0.5,
        *,
        plan: PruningPlan | None = None,
        resume_from_checkpoint: str | os.PathLike | None = None,
        **options,
    ):
        if plan is None:
            plan = PruningPlan(method, target_sparsity, **options)
        elif options or (method, target_sparsity) != (DEFAULT_METHOD, 0.5):
            raise TypeError("PruningCallback takes either `plan=` or the options it is built from, not both.")
        self.plan = plan
        self.resume_from_checkpoint = resume_from_checkpoint
        self._reset_state()

    @classmethod
    def from_args(cls, args) -> PruningCallback:
        """Build the callback from [`PruningTrainingArguments`] (through [`PruningPlan.from_args`])."""
        return cls(plan=PruningPlan.from_args(args))

    def _reset_state(self) -> None:
        plan = self.plan
        self.ramp = Ramp(plan.target_sparsity, plan.schedule, 0, 0, plan.frequency)
        self.masked = MaskedLayers()
        self.optimizer_steps = self.skipped_steps = self.mask_updates = self.nonfinite_updates = 0
        self.threshold, self.rank_disagreements, self.preexisting_zeros = float("nan"), 0, 0.0
        self._seconds_since_log, self._updates_since_log = 0.0, 0
        self._scale_before = None

    @property
    def layers(self) -> list[PrunableLayer]:
        return self.masked.layers

    @property
    def masks(self) -> list[torch.Tensor]:
        return self.masked.masks

    @property
    def movement(self) -> list[torch.Tensor] | None:
        return self.masked.movement

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights currently masked."""
        return self.masked.sparsity

    def target_at(self, step: int) -> float:
        """The sparsity the schedule asks for after optimizer step ``step``."""
        return self.ramp.sparsity_at(step) if self.plan.method.updates_masks else self.sparsity

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        check_step_budget_applied(args)
        check_training_run(args, model)
        self.masked.remove_hooks()
        self._reset_state()
        self.masked = MaskedLayers.of_model(model, self.plan)
        if self.masked.shards is None:
            warn_if_fsdp_did_not_shard(args)
        self.ramp = self.plan.ramp(state.max_steps)
        torch_optimizer = unwrap_optimizer(optimizer)
        check_optimizer(self.plan.method, torch_optimizer, self.layers)
        self._restore_or_start(args, state)
        self.plan.method.check_start(self.layers, self.masks, self.masked.pruned)
        if self.plan.method.updates_masks:
            for message in self.ramp.warnings(state.max_steps, self.optimizer_steps):
                logger.warning(message)
        self.masked.apply(torch_optimizer)
        self.masked.hook_gradients()
        logger.info(describe_run(self.plan, self.ramp, self.masked))

    def _restore_or_start(self, args, state) -> None:
        """Restore the checkpoint's pruning state when the run resumes one, else create the masks."""
        folders = [
            resume_argument(folder, args.output_dir)
            for folder in (self.resume_from_checkpoint, getattr(args, "resume_from_checkpoint", None))
        ]
        name = self.masked.state_name()
        state_file = state_file_to_resume(state.global_step, args.output_dir, *folders, name=name)
        check_every_rank_found(state_file is not None, self.masked, state.global_step)
        if state_file is not None:
            restored = restore_pruning_state(state_file, self.masked, self.plan, self.ramp, state.global_step)
            self.ramp, self.threshold = restored.ramp, restored.threshold
            self.optimizer_steps, self.skipped_steps = restored.optimizer_steps, restored.skipped_steps
            self.mask_updates, self.nonfinite_updates = restored.mask_updates, restored.nonfinite_updates
            self.preexisting_zeros = restored.preexisting_zeros
            return
        if state.global_step > 0:
            folder = next((f for f in folders if f), None)
            logger.warning(missing_state_message(state.global_step, folder, args.output_dir, name))
            self.optimizer_steps = state.global_step
        # The model's zeros are the masks of a method keeping them, and of a resume without a pruning state.
        from_zeros = not self.plan.method.updates_masks or state.global_step > 0
        self.preexisting_zeros = self.masked.start(from_zeros, self.plan.method.accumulates)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._scale_before = loss_scale(optimizer)

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
        if self.movement is not None and step <= self.ramp.end:
            self.masked.accumulate(self.plan.method)
        if self.plan.method.updates_masks and self.ramp.is_update_step(step):
            began = time.perf_counter()
            self.update_masks(step, torch_optimizer)
            self._seconds_since_log += time.perf_counter() - began
            self._updates_since_log += 1
        elif not keeps_zeros(torch_optimizer):
            # Masked gradients and zeroed moments keep Adam(W)'s pruned weights at 0 (a zero update, decay scales 0
            # to 0); any other optimizer may move them (e.g. its own weight decay): they are zeroed after its step.
            self.masked.zero_pruned_weights()

    def on_save(self, args, state, control, **kwargs):
        # Under FSDP2 every rank saves the rows it holds, beside the Trainer's sharded model and optimizer.
        if not self.layers or (self.masked.shards is None and not state.is_world_process_zero):
            return
        folder = checkpoint_folder(args.output_dir, state.global_step)
        if os.path.isdir(folder):
            self.save(os.path.join(folder, self.masked.state_name()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not self.layers or not is_training_log(logs) or f"{LOG_PREFIX}sparsity" in logs:
            return
        extra = self.pop_logs()
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
        message = unreported_metrics_message(args)
        if message:
            logger.warning_once(message)

    def on_train_end(self, args, state, control, **kwargs):
        self.masked.remove_hooks()
        if self.layers and self.plan.method.updates_masks and self.optimizer_steps < self.ramp.end:
            skipped = (
                f" ({self.skipped_steps} steps were skipped by the fp16 loss scaler)" if self.skipped_steps else ""
            )
            logger.warning(
                f"Training ended after {self.optimizer_steps} optimizer steps, before `pruning_end_step` "
                f"({self.ramp.end}): sparsity is {self.sparsity:.2%}, the target was "
                f"{self.plan.target_sparsity:.2%}{skipped}."
            )

    @torch.no_grad()
    def scores(self, optimizer=None) -> list[torch.Tensor]:
        """fp32 importance of every prunable weight; already pruned weights score ``PRUNED_SCORE`` (masks only grow)."""
        return self.masked.scores(self.plan.method, optimizer)

    @torch.no_grad()
    def update_masks(self, step: int, optimizer=None) -> None:
        """Grow the masks to the schedule's sparsity at ``step`` and zero the newly pruned weights and moments."""
        scores = self.scores(optimizer)
        if self.masked.skip_nonfinite(scores, step, self.plan, self.target_at(step)):
            del scores
            self.nonfinite_updates += 1
            self.masked.apply(optimizer)
            return
        # The seed is the same on every rank and different at every update.
        new = self.masked.select(scores, self.target_at(step), self.plan, self.plan.seed * 1_000_003 + step)
        threshold = self.masked.threshold(scores, new)
        del scores
        self.rank_disagreements += self.masked.grow(new, self.plan.sync_masks)
        if self.rank_disagreements:
            logger.warning_once(
                f"{self.rank_disagreements} mask entries computed on this rank differed from rank 0's; rank 0's "
                "masks are used on every rank."
            )
        self.masked.apply(optimizer)
        self.masked.pruned = self.masked.count_pruned()
        self.threshold = threshold
        self.mask_updates += 1

    def pop_logs(self) -> dict[str, float]:
        """Metrics for the next `Trainer.log` call; resets the time spent on mask updates since the last one."""
        if not self.layers:
            return {}
        seconds, updates = self._seconds_since_log, self._updates_since_log
        self._seconds_since_log, self._updates_since_log = 0.0, 0
        target = self.target_at(self.optimizer_steps)
        return pruning_logs(target, self.sparsity, seconds, updates, self.threshold, self.skipped_steps)

    def state_dict(self) -> dict:
        """The schedule and counters stored next to the masks (see `hf_gradprobe.training.state`)."""
        return {
            "method": self.plan.method.name,
            **self.plan.recorded_schedule(self.ramp),
            "optimizer_steps": self.optimizer_steps,
            "skipped_steps": self.skipped_steps,
            "mask_updates": self.mask_updates,
            "nonfinite_updates": self.nonfinite_updates,
            "threshold": self.threshold,
            "preexisting_zeros": self.preexisting_zeros,
            **self.masked.recorded(),
        }

    def save(self, path: str) -> None:
        """Write masks, accumulated scores and schedule counters to ``path`` (a `pruning_state.safetensors`)."""
        save_pruning_state(path, [layer.name for layer in self.layers], self.masks, self.movement, self.state_dict())

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningTrainer`: a thin `Trainer` that wires in `PruningCallback`."""

from __future__ import annotations

import os

from transformers import Trainer

from ..core.layers import find_prunable_layers
from .arguments import PruningTrainingArguments, apply_step_budget
from .callback import PruningCallback
from .integration import resume_argument
from .logs import is_training_log
from .plan import PruningPlan


__all__ = ["PruningTrainer"]


class PruningTrainer(Trainer):
    """[`~transformers.Trainer`] that prunes while training, as set by [`PruningTrainingArguments`].

    All pruning happens in [`PruningCallback`] (also usable with a plain `Trainer`). This class only builds the
    run's [`PruningPlan`] once and hands it to its callback (`pruning_callback`), checks that the model has
    something to prune before training starts, applies the opt-in step budget, and overrides two public
    `Trainer` methods: `train` tells the callback which checkpoint is resumed, and `log` merges the `pruning/*`
    metrics into every training log entry, so every `report_to` integration receives them.

    Args:
        model ([`~transformers.PreTrainedModel`] or `torch.nn.Module`, *optional*):
            The model to train and prune.
        args ([`PruningTrainingArguments`], *optional*):
            The arguments; a plain [`~transformers.TrainingArguments`] is refused. Defaults to
            `PruningTrainingArguments(output_dir="trainer_output")`.
        *pargs, **kwargs:
            Everything else [`~transformers.Trainer`] takes.

    Example:

    ```python
    >>> args = PruningTrainingArguments("out", pruning_target_sparsity=0.5, max_steps=1000)
    >>> PruningTrainer(model=model, args=args, train_dataset=train_dataset).train()
    ```
    """

    pruning_callback: PruningCallback

    def __init__(self, model=None, args: PruningTrainingArguments | None = None, *pargs, **kwargs):
        if args is None:
            args = PruningTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, PruningTrainingArguments):
            raise TypeError(
                f"`args` must be a PruningTrainingArguments, got {type(args).__name__}. Build it with "
                "`PruningTrainingArguments(**args.to_dict(), pruning_method=...)`, or add a `PruningCallback` "
                "to a plain Trainer."
            )
        apply_step_budget(args)
        super().__init__(model, args, *pargs, **kwargs)
        plan = PruningPlan.from_args(args)
        self.pruning_callback = PruningCallback(plan=plan)
        if self.model is not None:
            find_prunable_layers(self.model, targets=plan.targets, ignore=plan.ignore)
        self.add_callback(self.pruning_callback)

    def train(self, resume_from_checkpoint: str | os.PathLike | bool | None = None, *pargs, **kwargs):
        """[`~transformers.Trainer.train`], telling the pruning callback the checkpoint folder it resumes."""
        self.pruning_callback.resume_from_checkpoint = resume_argument(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint, *pargs, **kwargs)

    def log(self, logs: dict[str, float], *pargs, **kwargs) -> None:
        """[`~transformers.Trainer.log`], with the `pruning/*` metrics merged into training log entries."""
        if is_training_log(logs):
            logs.update(self.pruning_callback.pop_logs())
        super().log(logs, *pargs, **kwargs)

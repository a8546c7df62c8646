# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningTrainer`: a thin `Trainer` that wires in `PruningCallback`."""

from __future__ import annotations

from transformers import Trainer

from ..core.layers import find_prunable_layers
from .arguments import PruningTrainingArguments, apply_step_budget
from .callback import PruningCallback
from .logs import is_training_log
from .state import resume_argument


class PruningTrainer(Trainer):
    """[`~transformers.Trainer`] that prunes while training, as set by [`PruningTrainingArguments`].

    All pruning happens in [`PruningCallback`] (also usable with a plain `Trainer`). This class only:
    checks the arguments and that the model has something to prune before training starts, applies the
    opt-in step budget, tells the callback which checkpoint is resumed, and merges the `pruning/*`
    metrics into `log` so every `report_to` integration receives them.

    Example:

    ```python
    >>> args = PruningTrainingArguments("out", pruning_method="bitter7", pruning_target_sparsity=0.5, max_steps=1000)
    >>> PruningTrainer(model=model, args=args, train_dataset=train_dataset).train()
    ```
    """

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
        self.pruning_callback = PruningCallback.from_args(args)
        if self.model is not None:
            find_prunable_layers(self.model, targets=args.pruning_targets, ignore=args.pruning_ignore)
        self.add_callback(self.pruning_callback)

    def train(self, resume_from_checkpoint: str | bool | None = None, *pargs, **kwargs):
        self.pruning_callback.resume_from_checkpoint = resume_argument(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint, *pargs, **kwargs)

    def log(self, logs: dict[str, float], *pargs, **kwargs) -> None:
        if is_training_log(logs):
            logs.update(self.pruning_callback.pop_logs())
        super().log(logs, *pargs, **kwargs)

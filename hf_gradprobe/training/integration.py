# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""How `PruningCallback` meets the Trainer that runs it, through public mechanisms only.

A callback receives the Trainer's arguments, state, model and optimizer, never the Trainer itself
(`CallbackHandler.call_event`), so two things are settled here:

* **Which checkpoint is resumed.** `PruningTrainer.train(resume_from_checkpoint=...)`, an override of the public
  method, tells its callback the folder (see [`resume_argument`]). With any other Trainer (a plain `Trainer`,
  TRL's `SFTTrainer`...) the callback looks, in order, in `PruningCallback(resume_from_checkpoint=...)`,
  `TrainingArguments.resume_from_checkpoint` and `output_dir/checkpoint-{global_step}` (where a checkpoint left in
  place is, and what `train(resume_from_checkpoint=True)` resumes); when none holds a pruning state it rebuilds
  the masks from the weights that are exactly zero, with a warning ([`state_file_to_resume`]).
* **Which integrations receive the `pruning/*` metrics.** `Trainer.log` hands one `logs` dict to the `on_log` of
  every callback in list order, and `Trainer(callbacks=...)` appends the callbacks given after the `report_to`
  integrations. `PruningTrainer.log`, an override, merges the metrics into `logs` before any callback runs: every
  `report_to` integration gets them. With another Trainer the callback adds them in its own `on_log`, which the
  integrations listed before it have already run: pass `report_to="none"` and the integrations after the callback,
  `callbacks=[PruningCallback(...), TensorBoardCallback()]` ([`unreported_metrics_message`] warns otherwise).
  `state.log_history` gets them either way.
"""

from __future__ import annotations

import os

from transformers.trainer_utils import get_last_checkpoint

from .state import PRUNING_STATE_NAME, checkpoint_folder


__all__ = [
    "CALLBACK_ORDER_ADVICE",
    "missing_state_message",
    "reporting_integrations",
    "resume_argument",
    "state_file_to_resume",
    "unreported_metrics_message",
]

CALLBACK_ORDER_ADVICE = (
    "use PruningTrainer, or pass `report_to='none'` and the integrations after the callback: "
    "`callbacks=[PruningCallback(...), TensorBoardCallback()]`"
)


def resume_argument(resume_from_checkpoint: str | os.PathLike | bool | None, output_dir: str) -> str | None:
    """The folder `Trainer.train(resume_from_checkpoint=...)` resumes: `True` means the last one in ``output_dir``."""
    if isinstance(resume_from_checkpoint, bool):
        return get_last_checkpoint(output_dir) if resume_from_checkpoint else None
    return os.fspath(resume_from_checkpoint) if resume_from_checkpoint is not None else None


def state_file_to_resume(
    global_step: int, output_dir: str, *candidates: str | None, name: str = PRUNING_STATE_NAME
) -> str | None:
    """The pruning state file (``name``) a run starting at ``global_step`` restores, or None.

    None for a fresh run. Otherwise the checkpoint is the first of ``candidates`` that is a folder, or else the
    checkpoint of ``global_step`` in ``output_dir``; None again when that checkpoint holds no pruning state.

    Args:
        global_step (`int`):
            The Trainer's global step at train begin (0 for a fresh run).
        output_dir (`str`):
            The Trainer's `output_dir`.
        candidates (`str`, *optional*):
            Folders the run may resume, most trusted first.
        name (`str`, *optional*, defaults to `"pruning_state.safetensors"`):
            The file of this process (FSDP2 ranks each have their own).
    """
    if global_step == 0:
        return None
    folder = next(
        (c for c in candidates if isinstance(c, str) and os.path.isdir(c)), checkpoint_folder(output_dir, global_step)
    )
    path = os.path.join(folder, name)
    return path if os.path.isfile(path) else None


def missing_state_message(global_step: int, folder: str | None, output_dir: str, name: str) -> str:
    """The warning of a run resumed at ``global_step`` whose checkpoint holds no pruning state it can find."""
    where = folder or checkpoint_folder(output_dir, global_step)
    return (
        f"Resuming at step {global_step} from {where} without {name}: the masks are rebuilt from the weights that "
        "are exactly zero and the schedule restarts from the global step. A Trainer other than PruningTrainer does "
        "not tell the callback which folder `train(resume_from_checkpoint=...)` resumes: pass it as "
        "`PruningCallback(..., resume_from_checkpoint=...)` (or `TrainingArguments.resume_from_checkpoint`)."
    )


def reporting_integrations(args) -> list[str]:
    """The `report_to` integrations of ``args`` (the Trainer builds their callbacks before those of `callbacks=`)."""
    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return [name for name in report_to if name != "none"]


def unreported_metrics_message(args) -> str | None:
    """A warning when the `pruning/*` metrics are added by the callback's own `on_log` while `report_to`
    integrations, which run before it, already logged the entry without them; None when there are none."""
    integrations = reporting_integrations(args)
    if not integrations:
        return None
    return (
        f"The `report_to` integrations {integrations} run before the callbacks passed in `callbacks=`, so they do "
        f"not receive the `pruning/*` metrics (`state.log_history` does): {CALLBACK_ORDER_ADVICE}."
    )

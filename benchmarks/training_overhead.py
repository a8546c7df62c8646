# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Step-time overhead of ``PruningTrainer`` over a plain ``Trainer``.

Measures the median optimizer-step time (and the total time) of the same model, data and seed trained by a plain
``Trainer`` and by ``PruningTrainer`` (bitter7, pruning active the whole run, the default mask-update frequency),
the runs interleaved (plain, pruning, plain, ...) so machine load hits both alike; the first steps of every run
are left out. Also the mean time of one mask update, and the step ratio with the updates amortised::

    python benchmarks/training.py --parts overhead                 # small GPT-2 on Tiny Shakespeare, CPU
    python benchmarks/training.py --parts overhead --device cuda --synthetic-vocab 50257 --d-model 768 \\
        --layers 12 --heads 12 --seq-len 512 --batch-size 8 --overhead-steps 150 --name training_cuda

The finetune part runs the same measurement on SmolLM2 (``training_finetune``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from training_common import StepSettings, StepTimer, logged_total, training_arguments


__all__ = ["OverheadSpec", "bench_overhead", "overhead_markdown"]


@dataclass(frozen=True)
class OverheadSpec:
    """``repeats`` interleaved pairs of runs of ``steps`` steps; the first ``warmup`` steps of each are not timed."""

    steps: int = 120
    repeats: int = 3
    warmup: int = 5
    settings: StepSettings = field(default_factory=StepSettings)


def bench_overhead(spec: OverheadSpec, dataset, make_model: Callable, description: str) -> dict:
    """Interleaved runs (plain, pruning, plain, ...) of ``spec.steps`` steps on fresh ``make_model()`` copies."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hf_gradprobe import PruningTrainer, PruningTrainingArguments

    output_dir = "/tmp/hf_gradprobe_bench_overhead"
    per_step = {"plain": [], "pruning": []}
    totals = {"plain": [], "pruning": []}
    update_seconds, updates, frequency = [], [], None
    for repeat in range(spec.repeats):
        for arm in ("plain", "pruning"):
            model = make_model()
            timer = StepTimer()
            common = training_arguments(spec.settings, output_dir, spec.steps, 0)
            if arm == "plain":
                trainer = Trainer(
                    model=model, args=TrainingArguments(**common), train_dataset=dataset, callbacks=[timer]
                )
            else:
                args = PruningTrainingArguments(
                    **common,
                    pruning_method="bitter7",
                    pruning_target_sparsity=0.5,
                    pruning_start_step=1,
                    pruning_end_step=spec.steps,  # pruning active the whole run; default frequency
                )
                frequency = args.pruning_frequency
                trainer = PruningTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            # The first steps include allocator warm-up for both arms alike; drop them.
            times = timer.times[spec.warmup :]
            per_step[arm].append(statistics.median(times))
            totals[arm].append(sum(times))
            if arm == "pruning":
                update_seconds.append(logged_total(trainer, "pruning/mask_update_seconds"))
                updates.append(int(logged_total(trainer, "pruning/mask_updates")))
            print(
                f"overhead repeat {repeat} {arm}: median {per_step[arm][-1] * 1e3:.1f} ms/step, total "
                f"{totals[arm][-1]:.2f} s",
                flush=True,
            )
    plain_step = min(per_step["plain"])
    mean_update = sum(update_seconds) / max(sum(updates), 1)
    return {
        "model": description,
        "steps": spec.steps,
        "repeats": spec.repeats,
        "timed_steps_per_run": spec.steps - spec.warmup,
        "frequency": frequency,
        "mask_updates_per_run": updates[0],
        "plain_median_step_ms": [t * 1e3 for t in per_step["plain"]],
        "pruning_median_step_ms": [t * 1e3 for t in per_step["pruning"]],
        "plain_total_s": totals["plain"],
        "pruning_total_s": totals["pruning"],
        "mask_update_ms": mean_update * 1e3,
        "ratio_median_step": min(per_step["pruning"]) / plain_step,
        "ratio_total_time": min(totals["pruning"]) / min(totals["plain"]),
        "ratio_median_step_plus_amortized_update": (min(per_step["pruning"]) + mean_update / frequency) / plain_step,
    }


def overhead_markdown(data: dict, env: dict) -> list[str]:
    """The overhead table: median step, total time, and the step with one mask update amortised."""
    frequency = data.get("frequency", 50)
    return [
        f"## Overhead: PruningTrainer vs Trainer, {data.get('model', '')} ({env['device']})",
        "",
        "| measure | plain Trainer | PruningTrainer | ratio |",
        "|---|---:|---:|---:|",
        (
            f"| median optimizer-step time (best of {data['repeats']} runs) | "
            f"{min(data['plain_median_step_ms']):.1f} ms | {min(data['pruning_median_step_ms']):.1f} ms | "
            f"{data['ratio_median_step']:.3f} |"
        ),
        (
            f"| total time of {data['timed_steps_per_run']} steps (best of {data['repeats']}) | "
            f"{min(data['plain_total_s']):.2f} s | {min(data['pruning_total_s']):.2f} s | "
            f"{data['ratio_total_time']:.3f} |"
        ),
        (
            f"| median step + one mask update ({data['mask_update_ms']:.1f} ms) every {frequency} steps | | | "
            f"{data['ratio_median_step_plus_amortized_update']:.3f} |"
        ),
        "",
    ]

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Quality of pruning while training a small GPT-2 from scratch, method against method.

Measures the held-out perplexity of a small GPT-2 trained from scratch on Tiny Shakespeare (character level: one
token per character, vocabulary built from the file), the same step budget for every arm, pruned to 50% with the
same schedule by each method (bitter7, bitter3, magnitude, movement), a dense control included; the held-out text
is the last 10% of the file, in non-overlapping windows of the context length. Every arm runs for every seed::

    python benchmarks/training.py --parts quality                      # 300 steps, seeds 0 and 1, CPU
    python benchmarks/training.py --parts quality --quality-steps 600
    python benchmarks/training.py --parts quality --quality-steps 4 --seeds 0 --methods bitter7 --d-model 32 \\
        --layers 1 --heads 2 --seq-len 32 --batch-size 2 --name smoke --out-dir /tmp/quality_smoke   # smoke run
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from training_common import (
    GPT2Shape,
    RandomWindows,
    StepSettings,
    logged_total,
    make_gpt2,
    ramp_step,
    training_arguments,
)


__all__ = ["QualitySpec", "bench_quality", "quality_markdown"]


@dataclass(frozen=True)
class QualitySpec:
    """Every method (and dense) for every seed: ``steps`` steps of ``settings`` on a GPT-2 of ``shape``, pruned
    to ``target_sparsity`` by the ``schedule`` ramp from ``start`` to ``end``, masks every ``frequency`` steps."""

    steps: int = 300
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = ("bitter7", "bitter3", "magnitude", "movement")
    shape: GPT2Shape = field(default_factory=GPT2Shape)
    settings: StepSettings = field(default_factory=StepSettings)
    target_sparsity: float = 0.5
    schedule: str = "cubic"
    start: float = 0.1
    end: float = 0.7
    frequency: int = 10


def train_arm(spec: QualitySpec, method: str | None, dataset, vocab: int, seed: int, output_dir: str):
    """One arm: ``Trainer`` (dense, ``method=None``) or ``PruningTrainer`` with ``method``; ``(trainer, output)``."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hf_gradprobe import PruningTrainer, PruningTrainingArguments

    model = make_gpt2(vocab, spec.shape, seed=seed)
    if spec.settings.device != "cpu":
        model.to(spec.settings.device)
    common = training_arguments(spec.settings, output_dir, spec.steps, seed)
    if method is None:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset)
    else:
        args = PruningTrainingArguments(
            **common,
            pruning_method=method,
            pruning_target_sparsity=spec.target_sparsity,
            pruning_schedule=spec.schedule,
            pruning_start_step=spec.start,
            pruning_end_step=spec.end,
            pruning_frequency=spec.frequency,
        )
        trainer = PruningTrainer(model=model, args=args, train_dataset=dataset)
    trainer.remove_callback(PrinterCallback)
    return trainer, trainer.train()


def bench_quality(spec: QualitySpec, train_ids, heldout_ids, vocab: int) -> dict:
    """Every arm for every seed, then the mean held-out perplexity per arm and its difference to magnitude's."""
    from hf_gradprobe import compute_perplexity, measure_sparsity

    runs = []
    arms = [("dense", None)] + [(m, m) for m in spec.methods]
    for seed in spec.seeds:
        dataset = RandomWindows(train_ids, spec.shape.seq_len, spec.steps * spec.settings.batch_size, seed=seed)
        for name, method in arms:
            began = time.perf_counter()
            trainer, output = train_arm(
                spec, method, dataset, vocab, seed, f"/tmp/hf_gradprobe_bench_quality/{name}-{seed}"
            )
            train_s = time.perf_counter() - began
            result = compute_perplexity(
                trainer.model, data=heldout_ids, seq_len=spec.shape.seq_len, batch_size=32, progress=False
            )
            sparsity = measure_sparsity(trainer.model).sparsity
            update_s = logged_total(trainer, "pruning/mask_update_seconds")
            runs.append(
                {
                    "arm": name,
                    "seed": seed,
                    "perplexity": result.perplexity,
                    "heldout_tokens": result.tokens,
                    "train_loss": output.training_loss,
                    "sparsity": sparsity,
                    "train_seconds": train_s,
                    "mask_update_seconds": update_s,
                }
            )
            print(
                f"quality {name} seed {seed}: ppl {result.perplexity:.3f} sparsity {sparsity:.4f} "
                f"train {train_s:.0f}s",
                flush=True,
            )
    summary = {}
    for name, _ in arms:
        ppls = [r["perplexity"] for r in runs if r["arm"] == name]
        summary[name] = {"mean_perplexity": statistics.mean(ppls), "perplexities": ppls}
    base = summary.get("magnitude", {}).get("mean_perplexity")
    for entry in summary.values():
        if base:
            entry["vs_magnitude_pct"] = (entry["mean_perplexity"] / base - 1) * 100
    model = make_gpt2(vocab, spec.shape, seed=0)
    return {
        "tokenizer": f"character level ({vocab} symbols: every distinct character of the file)",
        "model": spec.shape.describe(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "prunable_parameters": measure_sparsity(model).prunable_numel,
        "steps": spec.steps,
        "batch_size": spec.settings.batch_size,
        "tokens_per_step": spec.settings.batch_size * spec.shape.seq_len,
        "learning_rate": spec.settings.learning_rate,
        "target_sparsity": spec.target_sparsity,
        "schedule": spec.schedule,
        "start_step": ramp_step(spec.start, spec.steps),
        "end_step": ramp_step(spec.end, spec.steps),
        "frequency": spec.frequency,
        "seeds": list(spec.seeds),
        "heldout": "last 10% of input.txt, non-overlapping windows of the context length",
        "runs": runs,
        "summary": summary,
    }


def quality_markdown(data: dict, env: dict) -> list[str]:
    """The quality table: perplexity per seed, the mean, the difference to magnitude and the sparsity per arm."""
    lines = [
        f"## Quality: {data['model']} ({env['device']})",
        "",
        (
            f"{data['parameters'] / 1e6:.2f}M parameters ({data['prunable_parameters'] / 1e6:.2f}M prunable), "
            f"Tiny Shakespeare, {data['tokenizer']}; {data['steps']} AdamW steps of "
            f"{data['tokens_per_step']} tokens, lr {data['learning_rate']} cosine; pruning to "
            f"{data['target_sparsity']:.0%} with the {data['schedule']} schedule from step "
            f"{data['start_step']} to {data['end_step']}, masks every {data['frequency']} steps. "
            f"Perplexity on the {data['heldout']}."
        ),
        "",
        "| arm | " + " | ".join(f"ppl seed {s}" for s in data["seeds"]) + " | mean ppl | vs magnitude | sparsity |",
        "|---|" + "---:|" * (len(data["seeds"]) + 3),
    ]
    for name, summary in data["summary"].items():
        sparsities = [r["sparsity"] for r in data["runs"] if r["arm"] == name]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{p:.3f}" for p in summary["perplexities"])
            + f" | {summary['mean_perplexity']:.3f} | "
            + (f"{summary['vs_magnitude_pct']:+.1f}%" if "vs_magnitude_pct" in summary else "–")
            + f" | {statistics.mean(sparsities):.2%} |"
        )
    lines.append("")
    return lines

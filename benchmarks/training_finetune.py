# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Fine-tuning a pretrained model to 50% sparsity: which recipe wins.

Measures SmolLM2-135M-Instruct fine-tuned on WikiText-2 ``valid.txt`` to 50% of the block Linear layers, the same
optimizer steps, tokens and seed in every arm: dense fine-tuning (the ceiling); gradual pruning during
fine-tuning (magnitude, movement, bitter7, bitter3; one cubic ramp for all); one-shot then recovery (the default
``GradProbeConfig()``, Wanda + ADMM, then ``fixed`` masks); the peer recipe (llm-compressor's SparseGPT in its own
environment, ``llmcompressor_baseline.py --save-dir``, then the same ``fixed`` recovery). Perplexity on the test
texts of ``protocol.splits`` (32 x 1024 windows of WikiText-2 test and Tiny Shakespeare), measured sparsity,
wall/step times, and the step-time overhead of PruningTrainer (bitter7, default frequency) vs Trainer on SmolLM2
(interleaved runs in one process, ``training_overhead``). Every arm runs in a fresh process of this script
(``protocol.runner``), ``--jobs`` at a time; the report is ``training_finetune_report``::

    nice -n 19 python benchmarks/training.py --parts finetune --jobs 2 --threads-per-row 1 --name finetune
    python benchmarks/training.py --parts finetune --finetune-steps 2 --finetune-batch-size 1 --finetune-seq-len 64 \\
        --calibration-samples 4 --eval-windows 2 --finetune-overhead-steps 3 --finetune-overhead-repeats 1 \\
        --threads-per-row 1 --name smoke --out-dir /tmp/finetune_smoke          # smoke run (never into results/)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from protocol.child import child_main, prune_ours
from protocol.report import PACKAGED_MODEL_DESCRIPTION
from protocol.runner import LLMC_PYTHON, LLMC_SETUP, llmcompressor_command, machine, run_in_process, run_rows
from protocol.specs import DEFAULT_MODEL, RowSpec
from protocol.splits import (
    CALIBRATION_SAMPLES,
    CALIBRATION_TEXT,
    EVAL_SEQ_LEN,
    TEST_TEXTS,
    TEST_WINDOWS,
    calibration,
    texts,
    token_ids,
)
from training_common import RandomWindows, StepSettings, StepTimer, logged_total, ramp_step, training_arguments
from training_overhead import OverheadSpec, bench_overhead


__all__ = [
    "FINETUNE_ARMS",
    "GRADUAL_ARMS",
    "LLMC_ARM",
    "OURS_ARM",
    "FinetuneArm",
    "FinetuneOptions",
    "bench_finetune",
    "finetune_specs",
    "run_arm",
]

GRADUAL_ARMS = ("magnitude", "movement", "bitter7", "bitter3")
OURS_ARM = "wanda-admm+fixed"  # the default GradProbeConfig() (Wanda + ADMM reconstruction), then fixed masks
LLMC_ARM = "llmcompressor-sparsegpt+fixed"  # the peer recipe: llm-compressor's SparseGPT, then fixed masks
FINETUNE_ARMS = ("dense", *GRADUAL_ARMS, OURS_ARM, LLMC_ARM)
MODEL_DESCRIPTION = PACKAGED_MODEL_DESCRIPTION


@dataclass(frozen=True)
class FinetuneOptions:
    """The finetune part's options (``training.py``'s ``--finetune-*`` flags and the shared ramp)."""

    arms: tuple[str, ...] = FINETUNE_ARMS
    seeds: tuple[int, ...] = (0,)
    steps: int = 32
    batch_size: int = 4
    seq_len: int = 256
    learning_rate: float = 1e-4
    frequency: int = 4
    sample_fraction: float | None = None
    timing_warmup: int = 2
    overhead_steps: int = 12
    overhead_repeats: int = 2
    target_sparsity: float = 0.5
    schedule: str = "cubic"
    start: float = 0.1
    end: float = 0.7
    calibration_samples: int = CALIBRATION_SAMPLES
    eval_windows: int = TEST_WINDOWS
    eval_before_recovery: bool = False
    jobs: int = 1
    threads_per_row: int | None = None

    def __post_init__(self):
        unknown = [arm for arm in self.arms if arm not in FINETUNE_ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {list(FINETUNE_ARMS)}")


@dataclass(frozen=True)
class FinetuneArm:
    """One arm's process (``kind="finetune"``), or the overhead measurement (``kind="overhead"``, ``repeats``)."""

    kind: str
    name: str
    arm: str
    seed: int
    pattern: str
    target: float
    steps: int
    batch_size: int
    seq_len: int
    learning_rate: float
    schedule: str
    start: float
    end: float
    frequency: int
    sample_fraction: float | None
    timing_warmup: int
    calibration_samples: int
    eval: tuple[str, ...]
    eval_windows: int
    eval_before_recovery: bool
    repeats: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "eval", tuple(self.eval))

    @property
    def label(self) -> str:
        return f"{self.name} {self.pattern}@{self.target:g}"

    @property
    def settings(self) -> StepSettings:
        return StepSettings(batch_size=self.batch_size, learning_rate=self.learning_rate, device="cpu")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["eval"] = list(self.eval)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> FinetuneArm:
        return cls(**values)


def finetune_specs(options: FinetuneOptions) -> list[FinetuneArm]:
    """One spec per arm process: the longest first (one-shot arms, the overhead timing), so ``--jobs`` packs well.

    Dense and the one-shot arms run the first seed; the gradual arms run every seed of ``options.seeds``.
    """
    common = {
        "kind": "finetune",
        "pattern": "unstructured",
        "target": options.target_sparsity,
        "steps": options.steps,
        "batch_size": options.batch_size,
        "seq_len": options.seq_len,
        "learning_rate": options.learning_rate,
        "schedule": options.schedule,
        "start": options.start,
        "end": options.end,
        "frequency": options.frequency,
        "sample_fraction": options.sample_fraction,
        "timing_warmup": options.timing_warmup,
        "calibration_samples": options.calibration_samples,
        "eval": tuple(TEST_TEXTS),
        "eval_windows": options.eval_windows,
        "eval_before_recovery": options.eval_before_recovery,
    }
    first_seed = options.seeds[0]
    specs = [
        FinetuneArm(**common, name=arm, arm=arm, seed=first_seed)
        for arm in (LLMC_ARM, OURS_ARM)
        if arm in options.arms
    ]
    if options.overhead_repeats > 0:
        overhead = {**common, "kind": "overhead", "steps": options.overhead_steps}
        specs.append(
            FinetuneArm(**overhead, name="overhead", arm="overhead", seed=0, repeats=options.overhead_repeats)
        )
    for seed in options.seeds:
        for arm in ("dense", *GRADUAL_ARMS):
            if arm in options.arms and (arm != "dense" or seed == first_seed):
                name = arm if seed == first_seed else f"{arm}/seed{seed}"
                specs.append(FinetuneArm(**common, name=name, arm=arm, seed=seed))
    return specs


def training_windows(tokenizer, spec: FinetuneArm) -> RandomWindows:
    """``steps x batch`` windows of ``seq_len`` tokens at seeded random offsets of WikiText-2 ``valid.txt`` (the
    calibration text; never a test text): the same windows, in the same order, for every arm of a seed."""
    ids = token_ids(tokenizer, CALIBRATION_TEXT)
    return RandomWindows(ids, spec.seq_len, spec.steps * spec.batch_size, seed=spec.seed)


def evaluate_texts(model, tokenizer, eval_ids: dict) -> tuple[dict, float]:
    """Perplexity on each protocol text (``compute_perplexity`` with ``EVAL_SEQ_LEN`` windows, as ``run_row``)."""
    from hf_gradprobe import compute_perplexity

    began = time.perf_counter()
    model.eval()
    perplexity = {}
    for name, ids in eval_ids.items():
        result = compute_perplexity(model, tokenizer, ids, seq_len=EVAL_SEQ_LEN, progress=False)
        perplexity[name] = result.perplexity
    return perplexity, time.perf_counter() - began


def prune_with_llmcompressor(spec: FinetuneArm, folder: str) -> dict:
    """llm-compressor's SparseGPT on the protocol's calibration windows, in its own virtual environment
    (``benchmarks/llmcompressor_baseline.py --save-dir``); the pruned model is saved to ``folder``/model."""
    save_dir = os.path.join(folder, "model")
    peer = RowSpec(
        name="llmcompressor-sparsegpt",
        kind="llmcompressor",
        method="sparsegpt",
        pattern=spec.pattern,
        target=spec.target,
        calibration_samples=spec.calibration_samples,
        eval=spec.eval if spec.eval_before_recovery else (),
        eval_windows=spec.eval_windows,
    )
    row, failure = run_in_process(lambda out: [*llmcompressor_command(peer, out), "--save-dir", save_dir], os.environ)
    if row is None:
        raise RuntimeError(f"llm-compressor's SparseGPT failed ({failure})")
    return {
        "model_folder": save_dir,
        "prune_seconds": row["prune_seconds"],
        "extra_memory_bytes": row["extra_memory_bytes"],
        "oneshot_sparsity": row["sparsity"],
        "oneshot_perplexity": row["perplexity"] or None,
        "llmcompressor_version": row.get("llmcompressor_version"),
        "llmcompressor_process_seconds": row.get("total_seconds"),
    }


def prune_with_default_config(model, tokenizer, spec: FinetuneArm) -> tuple[object, dict]:
    """The project's best one-shot recipe: the default ``GradProbeConfig()`` on the protocol's calibration windows."""
    from hf_gradprobe import GradProbeConfig, measure_sparsity

    windows, _ = calibration(tokenizer, spec.calibration_samples)
    row = RowSpec(
        name=OURS_ARM,
        kind="ours",
        pattern=spec.pattern,
        target=spec.target,
        eval=spec.eval,
        eval_windows=spec.eval_windows,
        calibration_samples=spec.calibration_samples,
        probe_samples=GradProbeConfig().num_probe_samples,
    )
    model, pruned = prune_ours(model, tokenizer, windows, row)
    return model, {
        "prune_seconds": pruned.seconds,
        "extra_memory_bytes": pruned.extra_memory_bytes,
        "oneshot_config": pruned.extra["config"],
        "oneshot_sparsity": measure_sparsity(model).sparsity,
    }


def finetune_row(spec: FinetuneArm) -> dict:
    """One arm, in its own process: load (or prune) SmolLM2, fine-tune ``steps`` steps, measure it."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hf_gradprobe import PruningTrainer, PruningTrainingArguments, load_model, measure_sparsity

    began = time.perf_counter()
    arm = spec.arm
    row = {"name": spec.name, "arm": arm, "seed": spec.seed, "prune_seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="finetune-arm-") as folder:
        if arm == LLMC_ARM:
            info = prune_with_llmcompressor(spec, folder)
            model, tokenizer = load_model(info.pop("model_folder"), dtype=torch.float32)
            row.update(info)
        else:
            model, tokenizer = load_model(DEFAULT_MODEL, dtype=torch.float32)
        eval_ids = texts(tokenizer, spec.eval, spec.eval_windows, spec.calibration_samples)
        if arm == OURS_ARM:
            model, info = prune_with_default_config(model, tokenizer, spec)
            row.update(info)
            if spec.eval_before_recovery:
                row["oneshot_perplexity"], _ = evaluate_texts(model, tokenizer, eval_ids)

        common = training_arguments(spec.settings, os.path.join(folder, "out"), spec.steps, spec.seed)
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
                pruning_target_sparsity=spec.target,
                pruning_schedule=spec.schedule,
                pruning_start_step=spec.start,
                pruning_end_step=spec.end,
                pruning_frequency=spec.frequency,
                pruning_sample_fraction=spec.sample_fraction,
            )
            trainer = PruningTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        t_train = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - t_train
        model = trainer.model
        times = timer.times[spec.timing_warmup :] or timer.times
        row.update(
            train_seconds=train_seconds,
            train_loss=output.training_loss,
            losses=[e["loss"] for e in trainer.state.log_history if "loss" in e],
            median_step_seconds=statistics.median(times),
            step_seconds=timer.times,
            mask_updates=int(logged_total(trainer, "pruning/mask_updates")),
            mask_update_seconds=logged_total(trainer, "pruning/mask_update_seconds"),
            sparsity=measure_sparsity(model).sparsity,
        )
        row["perplexity"], row["eval_seconds"] = evaluate_texts(model, tokenizer, eval_ids)
    row.update(
        training_windows=[spec.steps * spec.batch_size, spec.seq_len],
        tokens=spec.steps * spec.batch_size * spec.seq_len,
        process_seconds=time.perf_counter() - began,
        torch_threads=torch.get_num_threads(),
    )
    return row


def overhead_row(spec: FinetuneArm) -> dict:
    """``bench_overhead`` on SmolLM2: plain Trainer vs PruningTrainer (bitter7, default frequency), interleaved."""
    from hf_gradprobe import load_model

    began = time.perf_counter()
    model, tokenizer = load_model(DEFAULT_MODEL, dtype=torch.float32)
    result = bench_overhead(
        OverheadSpec(steps=spec.steps, repeats=spec.repeats, warmup=spec.timing_warmup, settings=spec.settings),
        training_windows(tokenizer, spec),
        lambda: copy.deepcopy(model),
        f"SmolLM2-135M-Instruct, {spec.batch_size}x{spec.seq_len} tokens/step",
    )
    return {
        "name": spec.name,
        "arm": "overhead",
        "seed": spec.seed,
        "prune_seconds": 0.0,
        "perplexity": {},
        "overhead": result,
        "process_seconds": time.perf_counter() - began,
        "torch_threads": torch.get_num_threads(),
    }


def run_arm(spec: FinetuneArm) -> dict:
    """What an arm's process runs: the overhead measurement or one fine-tuning arm."""
    from transformers.utils import logging

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    logging.set_verbosity_error()
    return overhead_row(spec) if spec.kind == "overhead" else finetune_row(spec)


def bench_finetune(options: FinetuneOptions, save, command: str) -> dict:
    """Every arm in a fresh process, ``options.jobs`` at a time; ``save(result)`` after each arm."""
    specs = finetune_specs(options)
    result = {
        "protocol": "benchmarks/protocol/",
        "model": MODEL_DESCRIPTION,
        "arms": list(options.arms),
        "seeds": list(options.seeds),
        "target_sparsity": options.target_sparsity,
        "steps": options.steps,
        "batch_size": options.batch_size,
        "seq_len": options.seq_len,
        "tokens_per_step": options.batch_size * options.seq_len,
        "learning_rate": options.learning_rate,
        "schedule": options.schedule,
        "start_step": ramp_step(options.start, options.steps),
        "end_step": ramp_step(options.end, options.steps),
        "frequency": options.frequency,
        "sample_fraction": options.sample_fraction,
        "timing_warmup": options.timing_warmup,
        "overhead_steps": options.overhead_steps,
        "overhead_repeats": options.overhead_repeats,
        "calibration_samples": options.calibration_samples,
        "eval": list(TEST_TEXTS),
        "eval_windows": options.eval_windows,
        "machine": machine().rsplit(",", 1)[0],  # the threads are per arm: threads_per_row
        "command": command,
        "failed": [],
    }
    if any(spec.arm == LLMC_ARM for spec in specs) and not LLMC_PYTHON.exists():
        specs = [spec for spec in specs if spec.arm != LLMC_ARM]
        result["failed"].append(
            f"{LLMC_ARM} (no llm-compressor environment at {LLMC_PYTHON}: run `{LLMC_SETUP}` first)"
        )
    save(result)
    return run_rows(specs, __file__, result, save, jobs=options.jobs, threads=options.threads_per_row)


if __name__ == "__main__":
    # An arm's process, started by protocol.runner: ``training_finetune.py --row-json SPEC --out FILE``.
    sys.exit(child_main(sys.argv[1:], run_arm, FinetuneArm))

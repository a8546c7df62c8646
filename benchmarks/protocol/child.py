# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One row, in its own process: load the model, prune it, measure sparsity, memory and perplexity.

``runner.run_rows`` starts ``SCRIPT --row-json SPEC --out FILE`` for each row; the script's ``main`` hands that
to ``child_main``, which runs ``run_row`` and writes the row as JSON. llm-compressor's rows call ``run_row`` with
their own prune step (``benchmarks/llmcompressor_baseline.py``), so both sides are measured by the same code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from protocol.specs import RowSpec
from protocol.splits import VALIDATION_TEXTS, calibration, check_texts, eval_seq_len, texts


__all__ = [
    "Pruned",
    "child_arguments",
    "child_main",
    "load_row_model",
    "log",
    "prune_dense",
    "prune_ours",
    "resident_memory",
    "run_row",
]


@dataclass
class Pruned:
    """What a prune step reports: its time and memory (peak over the memory just before), the reconstruction,
    the probe windows (ours with the probe), and ``extra`` fields copied into the row."""

    seconds: float
    peak_memory_bytes: int
    memory_before_bytes: int
    reconstruction: str
    probe_samples: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def extra_memory_bytes(self) -> int:
        return max(0, self.peak_memory_bytes - self.memory_before_bytes)


PruneStep = Callable[[object, object, torch.Tensor, RowSpec], tuple[object, Pruned]]


def log(spec: RowSpec, message: str) -> None:
    """A progress line on stderr, stamped with the time and the row."""
    seed = f" seed {spec.calibration_seed}" if getattr(spec, "calibration_seed", 0) else ""
    print(f"[{time.strftime('%H:%M:%S')} {spec.name} {spec.pattern}{seed}] {message}", file=sys.stderr, flush=True)


def resident_memory() -> int:
    """Bytes resident in this process now."""
    import psutil

    return psutil.Process().memory_info().rss


def load_row_model(spec: RowSpec):
    """``(model, tokenizer)`` of the row's ``model`` in eval mode, on its ``device``."""
    from hf_gradprobe import load_model

    model, tokenizer = load_model(spec.model)
    if spec.device != "cpu":
        model.to(spec.device)
    model.eval()
    return model, tokenizer


def prune_ours(model, tokenizer, windows: torch.Tensor, spec: RowSpec) -> tuple[object, Pruned]:
    """``prune_pretrained`` with the spec's GradProbeConfig settings on the protocol's calibration windows (drawn
    with the spec's ``calibration_seed``)."""
    import hf_gradprobe as hg

    overrides = dict(spec.overrides)
    if overrides.get("probe", True):
        overrides.setdefault("num_probe_samples", min(spec.probe_samples, len(windows)))
    config = hg.GradProbeConfig(
        target_sparsity=spec.target,
        pattern=spec.pattern,
        num_calibration_samples=len(windows),
        calibration_seq_len=windows.shape[1],
        calibration_seed=spec.calibration_seed,
        **overrides,
    )
    model, report = hg.prune_pretrained(
        model, config, calibration=windows, tokenizer=tokenizer, return_report=True, progress=spec.progress
    )
    return model, Pruned(
        seconds=report.seconds,
        peak_memory_bytes=report.peak_memory_bytes,
        memory_before_bytes=report.memory_before_bytes,
        reconstruction=config.reconstruction,
        probe_samples=config.num_probe_samples if config.probe else None,
        extra={"restored": report.restored, "config": report.config, "method": config.method},
    )


def prune_dense(model, tokenizer, windows: torch.Tensor, spec: RowSpec) -> tuple[object, Pruned]:
    """The dense row: nothing pruned."""
    return model, Pruned(seconds=0.0, peak_memory_bytes=0, memory_before_bytes=0, reconstruction="none")


def run_row(spec: RowSpec, prune: PruneStep | None = None) -> dict:
    """Load the model, prune it with ``prune(model, tokenizer, windows, spec) -> (model, Pruned)``, measure it."""
    from hf_gradprobe import compute_perplexity, measure_sparsity

    if prune is None:
        prune = prune_dense if spec.kind == "dense" else prune_ours
    start = time.perf_counter()
    check_texts(spec.eval, tuning=spec.purpose == "tune")
    log(spec, f"loading {spec.model} on {spec.device}")
    model, tokenizer = load_row_model(spec)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    windows, _ = calibration(tokenizer, spec.calibration_samples, spec.calibration_seed)
    eval_ids = texts(tokenizer, spec.eval, spec.eval_windows, spec.calibration_samples, spec.full_test_windows)
    if spec.validation_windows:
        # Validation columns beside the test ones: a configuration is chosen on these, never on the test texts.
        eval_ids.update(texts(tokenizer, VALIDATION_TEXTS, spec.validation_windows, spec.calibration_samples))
    rss_before = resident_memory()
    log(spec, f"pruning (calibration {tuple(windows.shape)}, RSS {rss_before / 2**20:.0f} MiB)")
    model, pruned = prune(model, tokenizer, windows, spec)
    log(spec, f"pruned in {pruned.seconds:.1f} s, extra memory {pruned.extra_memory_bytes / 2**20:.0f} MiB")
    measured = measure_sparsity(model, pattern=spec.pattern if ":" in spec.pattern else None)
    perplexity, scored = {}, {}
    for name, ids in eval_ids.items():
        # 1024-token windows, 2048 for the full test text (compute_perplexity refuses more than the model's
        # positions); every predicted token of a window is scored, a trailing partial window dropped.
        seq_len = eval_seq_len(name)
        result = compute_perplexity(model, tokenizer, ids, seq_len=seq_len, progress=False)
        perplexity[name] = result.perplexity
        scored[name] = {
            "windows": result.windows,
            "seq_len": result.seq_len,
            "tokens": result.tokens,
            "text_tokens": ids.numel(),
            "seconds": result.seconds,
        }
        log(spec, f"perplexity {name} ({result.windows} x {seq_len}, {result.seconds:.0f} s): {result.perplexity:.3f}")
    return {
        "name": spec.name,
        "kind": spec.kind,
        "pattern": spec.pattern,
        "target": spec.target,
        "overrides": spec.overrides,
        "reconstruction": pruned.reconstruction,
        "probe_samples": pruned.probe_samples,
        "sparsity": measured.sparsity,
        "nm_compliant": measured.nm_compliant,
        "perplexity": perplexity,
        "scored": scored,
        "prune_seconds": pruned.seconds,
        "rss_before_prune_bytes": rss_before,
        "memory_before_bytes": pruned.memory_before_bytes,
        "peak_memory_bytes": pruned.peak_memory_bytes,
        "extra_memory_bytes": pruned.extra_memory_bytes,
        "model_bytes": model_bytes,
        "model": spec.model,
        "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": spec.device,
        "calibration_windows": list(windows.shape),
        "calibration_seed": spec.calibration_seed,
        "calibration_sha256": hashlib.sha256(windows.numpy().tobytes()).hexdigest(),
        "eval_windows": spec.eval_windows,
        "process_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **pruned.extra,
    }


def child_arguments(argv=None) -> argparse.Namespace:
    """The ``--row-json SPEC --out FILE`` of a row's process (see ``runner.run_rows``), offline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--row-json", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return args


def child_main(argv=None, run: Callable = run_row, spec_type: type = RowSpec) -> int:
    """``SCRIPT --row-json SPEC --out FILE``: ``run(spec_type.from_dict(SPEC))``, written to FILE as JSON."""
    args = child_arguments(argv)
    row = run(spec_type.from_dict(json.loads(args.row_json)))
    Path(args.out).write_text(json.dumps(row, indent=1, default=str))
    return 0

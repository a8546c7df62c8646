# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The parent side: every row in a fresh Python process, a few at a time, the results saved after each row.

A fresh process per row means a row's time and memory carry nothing over from earlier rows. A row's process is
``SCRIPT --row-json SPEC --out FILE`` (the script hands it to ``protocol.child``), or llm-compressor's driver in
its own virtual environment for the peer rows. Progress goes to stderr.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from protocol.splits import BENCHMARKS, REPO


__all__ = [
    "LLMC_PYTHON",
    "LLMC_SCRIPT",
    "LLMC_SETUP",
    "Spec",
    "child_environment",
    "llmcompressor_command",
    "machine",
    "row_command",
    "run_in_process",
    "run_rows",
]

LLMC_PYTHON = BENCHMARKS / ".venv-llmcompressor" / "bin" / "python"
LLMC_SCRIPT = BENCHMARKS / "llmcompressor_baseline.py"
LLMC_SETUP = "bash benchmarks/setup_llmcompressor.sh"


class Spec(Protocol):
    """What the runner needs of a row's spec (``RowSpec``, the finetune arms' spec, ...)."""

    name: str
    kind: str

    @property
    def label(self) -> str: ...

    def to_dict(self) -> dict: ...


def llmcompressor_command(spec, out: str) -> list[str]:
    """llm-compressor's row (a ``RowSpec`` of kind ``llmcompressor``) in its virtual environment, JSON to ``out``."""
    return [
        str(LLMC_PYTHON),
        str(LLMC_SCRIPT),
        "--method",
        spec.method,
        "--pattern",
        spec.pattern,
        "--sparsity",
        str(spec.target),
        "--calibration-samples",
        str(spec.calibration_samples),
        "--eval",
        ",".join(spec.eval),
        "--eval-windows",
        str(spec.eval_windows),
        "--calibration-seed",
        str(spec.calibration_seed),
        *(["--full-test-windows", str(spec.full_test_windows)] if spec.full_test_windows is not None else []),
        "--model",
        spec.model,
        "--device",
        spec.device,
        "--json-out",
        out,
    ]


def row_command(spec: Spec, script: str, out: str) -> list[str]:
    """How a row is launched: llm-compressor's rows in their virtual environment, the others by ``script``."""
    if spec.kind == "llmcompressor":
        return llmcompressor_command(spec, out)
    return [sys.executable, script, "--row-json", json.dumps(spec.to_dict()), "--out", out]


def machine() -> str:
    """The machine in one line (architecture, cores, Python, torch and its threads)."""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def child_environment(threads: int) -> dict:
    """A row's environment: offline, ``threads`` torch threads, no tokenizer thread pool."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}


def run_in_process(command: Callable[[str], list[str]], env: dict) -> tuple[dict | None, str]:
    """Run ``command(out)`` (a row's process, writing its JSON to ``out``) in a fresh process from the repository
    root; ``(row, "")``, or ``(None, why)`` when it failed."""
    with tempfile.TemporaryDirectory(prefix="benchmark-row-") as folder:
        out = os.path.join(folder, "row.json")
        done = subprocess.run(command(out), check=False, cwd=REPO, env=env)
        if done.returncode == 0 and os.path.exists(out):
            return json.loads(Path(out).read_text()), ""
    return None, f"exit status {done.returncode}"


def run_rows(
    specs: Sequence[Spec],
    script: str,
    result: dict,
    save: Callable[[dict], None],
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Run every spec in its own process, ``jobs`` at a time (each with ``threads``, default ``cpu_count // jobs``, so
    rows never oversubscribe the cores); ``save(result)`` after each row, rows kept in spec order (partial results
    survive). Pass fewer ``threads`` when other work shares the machine."""
    result.setdefault("rows", [])
    result.setdefault("failed", [])
    start = time.perf_counter()
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    env = child_environment(threads)
    result["rows_at_a_time"], result["threads_per_row"] = jobs, threads
    done_rows: dict[int, dict] = {}
    lock = threading.Lock()

    def run(number: int, spec: Spec) -> None:
        label = f"row {number}/{len(specs)}: {spec.label}"
        print(f"== {label}", file=sys.stderr, flush=True)
        t_row = time.perf_counter()
        if spec.kind == "llmcompressor" and not LLMC_PYTHON.exists():
            row, failure = None, f"run {LLMC_SETUP} first"
        else:
            row, failure = run_in_process(lambda out: row_command(spec, script, out), env)
        wall = time.perf_counter() - t_row
        with lock:
            if row is None:
                result["failed"].append(f"{spec.label} ({failure})")
                print(f"== {label} FAILED ({failure})", file=sys.stderr, flush=True)
            else:
                row.update(wall_seconds=wall, spec=spec.to_dict())
                done_rows[number] = row
                ppl = ", ".join(f"{k} {v:.2f}" for k, v in (row.get("perplexity") or {}).items())
                prune = row.get("prune_seconds", 0.0)
                print(f"== {label} done in {wall:.0f} s (prune {prune:.1f} s): {ppl}", file=sys.stderr, flush=True)
            result["rows"] = [done_rows[k] for k in sorted(done_rows)]
            result["total_seconds"] = time.perf_counter() - start
            save(result)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(run, number, spec) for number, spec in enumerate(specs, 1)]:
            future.result()
    return result

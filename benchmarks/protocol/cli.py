# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The command line every one-shot benchmark script shares, and its ``main``.

A script (``oneshot.py``, ``tune_oneshot.py``) adds its own options to ``benchmark_parser`` and hands ``main`` a
``build_specs(args) -> [RowSpec]``, a ``to_markdown(result) -> str``, a ``describe(args) -> dict`` (its fields
of the result) and optionally ``outputs(result, args, folder, name)``, which writes further files (a plot) before
each markdown. ``--render FILE.json`` prints the markdown of a saved result without running anything (and writes
those files beside it, or into ``--out-dir``).
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
from protocol.report import PACKAGED_MODEL_DESCRIPTION
from protocol.rows import validate
from protocol.runner import machine, run_rows
from protocol.specs import DEFAULT_DEVICE, DEFAULT_MODEL, RowSpec
from protocol.splits import BENCHMARKS, CALIBRATION_SAMPLES, CALIBRATION_SEEDS, EVAL_SEQ_LEN, ProtocolError


__all__ = ["benchmark_parser", "main", "model_description", "write_atomic", "write_outputs"]


def benchmark_parser(doc: str, name: str, eval_windows: int, patterns: str) -> argparse.ArgumentParser:
    """The options every one-shot benchmark script shares; the script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=name, help="output file stem")
    parser.add_argument("--patterns", default=patterns, help="PATTERN[@SPARSITY],... (N:M means 1 - N/M)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"any causal LM: a local folder or a Hub id in the local cache (rows run offline); default {DEFAULT_MODEL}, "
        "the packaged SmolLM2-135M-Instruct Q4_1 GGUF, de-quantized to fp32 (not the published bf16 weights)",
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
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where NAME.json and NAME.md (and a script's further files) go (default: benchmarks/results; with "
        "--render: the folder of FILE.json)",
    )
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
        return PACKAGED_MODEL_DESCRIPTION
    return model_id


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: a stopped launch never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


Outputs = Callable[[dict, argparse.Namespace, Path, str], None]


def write_outputs(outputs: Outputs | None, result: dict, args, folder: Path, name: str) -> None:
    """``outputs(result, args, folder, name)``; a failure is reported on stderr and never stops a launch."""
    if outputs is None:
        return
    try:
        outputs(result, args, folder, name)
    except Exception as err:  # noqa: BLE001 - a plot must not cost the rows measured so far
        print(f"== could not write the further outputs of {name}: {type(err).__name__}: {err}", file=sys.stderr)


def main(
    parser: argparse.ArgumentParser,
    argv,
    script: str,
    build_specs: Callable[[argparse.Namespace], list[RowSpec]],
    to_markdown: Callable[[dict], str],
    describe: Callable[[argparse.Namespace], dict],
    outputs: Outputs | None = None,
) -> int:
    """A benchmark script's ``main``: a child runs one row (``--row-json``); the parent parses ``argv``, builds and
    checks every row's spec before the first runs, then runs each in its own process, rewriting ``NAME.json``,
    ``outputs``' files and ``NAME.md`` in ``--out-dir`` after each; ``describe(args)`` adds the script's fields to
    the result."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--row-json" in argv:
        return child_main(argv)
    args = parser.parse_args(argv)
    if args.render:
        source = Path(args.render)
        result = json.loads(source.read_text())
        write_outputs(outputs, result, args, Path(args.out_dir) if args.out_dir else source.parent, source.stem)
        print(to_markdown(result), end="")
        return 0
    out_dir = Path(args.out_dir) if args.out_dir else BENCHMARKS / "results"
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
        "validation_avoids_seeds": list(CALIBRATION_SEEDS),
        "eval_windows": args.eval_windows,
        **describe(args),
        "command": f"python benchmarks/{Path(script).name} " + shlex.join(argv),
        "machine": machine(),
    }

    def save(result: dict) -> None:
        # After every row: the further outputs (a plot; they may note themselves in the result), the JSON, then the
        # markdown; an error in rendering skips that file (re-render with --render) but never stops the launch.
        os.makedirs(out_dir, exist_ok=True)
        write_outputs(outputs, result, args, out_dir, args.name)
        write_atomic(Path(out_dir, f"{args.name}.json"), json.dumps(result, indent=1, default=str))
        try:
            markdown = to_markdown(result)
        except Exception as err:  # noqa: BLE001 - see above
            print(f"== could not render {args.name}.md: {type(err).__name__}: {err}", file=sys.stderr)
        else:
            write_atomic(Path(out_dir, f"{args.name}.md"), markdown)

    run_rows(specs, script, result, save, jobs=args.jobs, threads=args.threads_per_row)
    print(to_markdown(result))
    return 0

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Hyper-parameter selection for one-shot pruning, on validation text only (never a test text).

Runs named sets of GradProbeConfig overrides on top of a base row (default ``gradprobe-wanda``), each in a fresh
process (``benchmarks/protocol.py``, the runner ``oneshot.py`` uses), and reports perplexity on the validation
texts only: 16 x 1024 windows of WikiText-2 ``valid.txt`` disjoint from the calibration windows, and the first
16 x 1024 windows of Pride and Prejudice. Test texts are refused in code (``protocol.check_disjoint``)::

    python benchmarks/tune_oneshot.py                         # the default grid -> results/tune_oneshot.{json,md}
    python benchmarks/tune_oneshot.py --patterns 2:4 --grid '{"admm": {"reconstruction": "admm"}}'
    python benchmarks/tune_oneshot.py --base wanda --name tune_wanda
    python benchmarks/tune_oneshot.py --grid '{"none": {"reconstruction": "none"}}' --patterns unstructured@0.5 \\
        --eval-windows 1 --calibration-samples 4 --probe-samples 2 --name smoke --out-dir /tmp/tune_smoke

Then run the chosen configuration on the test texts with ``oneshot.py --rows ... --extra-config JSON``.
"""

from __future__ import annotations

import json
import math
import sys

import protocol


EVAL_TEXTS = tuple(protocol.VALIDATION_TEXTS)
# One factor at a time around ADMM reconstruction (and SparseGPT's), on top of the base row.
DEFAULT_GRID = {
    "none": {"reconstruction": "none"},
    "none-gw0": {"reconstruction": "none", "gradient_weight": 0.0},
    "none-cr1.5": {"reconstruction": "none", "candidate_ratio": 1.5},
    "admm": {"reconstruction": "admm"},
    "admm-parallel": {"reconstruction": "admm", "reconstruction_order": "parallel"},
    "admm-damping0.1": {"reconstruction": "admm", "reconstruction_damping": 0.1},
    "admm-ridge0.01": {"reconstruction": "admm", "reconstruction_ridge": 0.01},
    "admm-ridge0.1": {"reconstruction": "admm", "reconstruction_ridge": 0.1},
    "admm-gw0": {"reconstruction": "admm", "gradient_weight": 0.0},
    "admm-cr1.5": {"reconstruction": "admm", "candidate_ratio": 1.5},
    "sparsegpt": {"reconstruction": "sparsegpt"},
    "sparsegpt-parallel": {"reconstruction": "sparsegpt", "reconstruction_order": "parallel"},
    "sparsegpt-damping0.1": {"reconstruction": "sparsegpt", "reconstruction_damping": 0.1},
}


def geometric_mean(row: dict) -> float:
    values = [row["perplexity"][name] for name in EVAL_TEXTS]
    return math.exp(sum(math.log(v) for v in values) / len(values))


def grid(args) -> dict:
    """``--grid`` (JSON) or the built-in grid: ``{name: GradProbeConfig overrides}``."""
    values = json.loads(args.grid) if args.grid else DEFAULT_GRID
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ValueError('--grid must be a JSON object {"name": {overrides}, ...}')
    return values


def build_specs(args) -> list[dict]:
    protocol.check_disjoint(eval_names=EVAL_TEXTS, tuning=True)
    specs = []
    for pattern_spec in args.patterns.split(","):
        pattern, target = protocol.parse_pattern(pattern_spec)
        for name, overrides in grid(args).items():
            spec = protocol.spec_for(args.base, pattern, target, EVAL_TEXTS, args, "tune", overrides)
            if spec["kind"] != "ours":
                raise ValueError(f"--base must be a row of ours, not {args.base!r}")
            specs.append({**spec, "name": name, "grid_overrides": overrides})
    return specs


def to_markdown(result: dict) -> str:
    lines = protocol.header(
        result,
        f"base row `{result['base']}`; perplexity on VALIDATION text only: {result['eval_windows']} x "
        f"{protocol.EVAL_SEQ_LEN} windows of WikiText-2 valid disjoint from the calibration windows, and the first "
        f"{result['eval_windows']} of Pride and Prejudice",
    )
    rows = result["rows"]
    first = [
        ("config", "name"),
        ("pattern", "pattern"),
        ("target", lambda r: f"{r['target']:g}"),
        ("overrides", lambda r: f"`{json.dumps(r['spec']['grid_overrides'])}`"),
        ("geo-mean ppl", lambda r: protocol.fmt(geometric_mean(r))),
    ]
    lines += protocol.markdown_table(rows, EVAL_TEXTS, first)
    best = {}
    for row in rows:
        key = f"{row['pattern']}@{row['target']:g}"
        if key not in best or geometric_mean(row) < geometric_mean(best[key]):
            best[key] = row
    lines += [""] + [
        f"Best on validation for {key} (geometric mean of the validation perplexities): **{row['name']}** "
        f"`{json.dumps(row['spec']['grid_overrides'])}`"
        for key, row in best.items()
    ]
    lines += protocol.footer(result)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = protocol.argument_parser(__doc__, "tune_oneshot", protocol.VALIDATION_WINDOWS, "unstructured@0.5,2:4")
    parser.add_argument(
        "--grid", default=None, help='JSON {"name": {GradProbeConfig overrides}, ...} (default: built in)'
    )
    parser.add_argument("--base", default="gradprobe-wanda", help="row of ours the grid's overrides apply to")

    def describe(args):
        return {
            "purpose": "tune (validation texts only)",
            "eval": list(EVAL_TEXTS),
            "base": args.base,
            "grid": grid(args),
        }

    return protocol.main(parser, argv, __file__, build_specs, to_markdown, describe)


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Hyper-parameter selection for one-shot pruning, on validation text only (never a test text).

Measures the perplexity of named sets of GradProbeConfig overrides on top of a base row (default
``gradprobe-wanda``), each in a fresh process (``benchmarks/protocol/``, the runner ``oneshot.py`` uses), on the
validation texts only: 16 x 1024 windows of WikiText-2 ``valid.txt`` disjoint from the calibration windows of
every seed in ``protocol.splits.CALIBRATION_SEEDS`` (0 and 1), and the first 16 x 1024 windows of Pride and
Prejudice. Test texts are refused in code (``protocol.splits``), and the best entry per pattern is the one with the
lowest geometric mean of the validation perplexities::

    python benchmarks/tune_oneshot.py                         # the default grid -> results/tune_oneshot.{json,md}
    python benchmarks/tune_oneshot.py --patterns 2:4 --grid '{"admm": {"reconstruction": "admm"}}'
    python benchmarks/tune_oneshot.py --base wanda --name tune_wanda
    python benchmarks/tune_oneshot.py --grid '{"none": {"reconstruction": "none"}}' --patterns unstructured@0.5 \\
        --eval-windows 1 --calibration-samples 4 --probe-samples 2 --threads-per-row 1 --name smoke \\
        --out-dir /tmp/tune_smoke                             # smoke run
    python benchmarks/tune_oneshot.py --render benchmarks/results/tune_order.json   # the table again

Then run the chosen configuration on the test texts with ``oneshot.py --rows ... --extra-config JSON``.
"""

from __future__ import annotations

import json
import math
import sys

from protocol import cli, report, rows, splits
from protocol.specs import Pattern, RowSpec, RunOptions


__all__ = ["DEFAULT_GRID", "EVAL_TEXTS", "argument_parser", "build_specs", "geometric_mean", "main", "to_markdown"]

EVAL_TEXTS = tuple(splits.VALIDATION_TEXTS)
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
    """The geometric mean of a row's validation perplexities (what the best entry is chosen by)."""
    values = [row["perplexity"][name] for name in EVAL_TEXTS]
    return math.exp(sum(math.log(v) for v in values) / len(values))


def grid(args) -> dict:
    """``--grid`` (JSON) or the built-in grid: ``{name: GradProbeConfig overrides}``."""
    values = json.loads(args.grid) if args.grid else DEFAULT_GRID
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ValueError('--grid must be a JSON object {"name": {overrides}, ...}')
    return values


def build_specs(args) -> list[RowSpec]:
    """Every grid entry at every pattern, on top of ``--base``, scored on the validation texts."""
    splits.check_texts(EVAL_TEXTS, tuning=True)
    options = RunOptions.from_args(args)
    specs = []
    for _, pattern in Pattern.parse_list(args.patterns):
        for name, overrides in grid(args).items():
            spec = rows.row_spec(args.base, pattern, EVAL_TEXTS, options, purpose="tune", extra=overrides)
            if spec.kind != "ours":
                raise ValueError(f"--base must be a row of ours, not {args.base!r}")
            specs.append(rows.renamed(spec, name, grid_overrides=overrides))
    return specs


def to_markdown(result: dict) -> str:
    """The tuning table: every entry's validation perplexities and their geometric mean, and the best per pattern."""
    lines = report.header(
        result,
        f"base row `{result['base']}`; perplexity on VALIDATION text only: {result['eval_windows']} x "
        f"{splits.EVAL_SEQ_LEN} windows of WikiText-2 valid disjoint from the calibration windows (of seeds "
        f"{', '.join(map(str, result.get('validation_avoids_seeds', [splits.CALIBRATION_SEED])))}), and the first "
        f"{result['eval_windows']} of Pride and Prejudice",
    )
    table_rows = result["rows"]
    first = [
        ("config", "name"),
        ("pattern", "pattern"),
        ("target", lambda r: f"{r['target']:g}"),
        ("overrides", lambda r: f"`{json.dumps(r['spec']['grid_overrides'])}`"),
        ("geo-mean ppl", lambda r: report.fmt(geometric_mean(r))),
    ]
    lines += report.markdown_table(table_rows, EVAL_TEXTS, first)
    best = {}
    for row in table_rows:
        key = f"{row['pattern']}@{row['target']:g}"
        if key not in best or geometric_mean(row) < geometric_mean(best[key]):
            best[key] = row
    lines += [""] + [
        f"Best on validation for {key} (geometric mean of the validation perplexities): **{row['name']}** "
        f"`{json.dumps(row['spec']['grid_overrides'])}`"
        for key, row in best.items()
    ]
    lines += report.footer(result)
    return "\n".join(lines) + "\n"


def argument_parser():
    """The tuning script's command line (the shared options, ``--grid`` and ``--base``)."""
    parser = cli.benchmark_parser(__doc__, "tune_oneshot", splits.VALIDATION_WINDOWS, "unstructured@0.5,2:4")
    parser.add_argument(
        "--grid", default=None, help='JSON {"name": {GradProbeConfig overrides}, ...} (default: built in)'
    )
    parser.add_argument("--base", default="gradprobe-wanda", help="row of ours the grid's overrides apply to")
    return parser


def describe(args) -> dict:
    """The tuning script's fields of the result."""
    return {"purpose": "tune (validation texts only)", "eval": list(EVAL_TEXTS), "base": args.base, "grid": grid(args)}


def main(argv=None) -> int:
    return cli.main(argument_parser(), argv, __file__, build_specs, to_markdown, describe)


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe inspect MODEL_OR_DIR [--pattern 2:4] [--json]`: per-layer and total sparsity, N:M compliance."""

from __future__ import annotations

from ..core.sparsity import format_sparsity_table
from .common import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="per-layer and total sparsity of a model, and which layers break an N:M pattern"
    )
    parser.add_argument("model", help="saved model folder, Hub id, or 'smollm2-135m'")
    parser.add_argument(
        "--pattern",
        default=None,
        help="N:M pattern to check, e.g. 2:4 (default: the one the model was pruned with, if any; "
        "'unstructured' checks none)",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="regular expressions choosing the layers (default: Linear/Conv1D in the repeated blocks)",
    )
    parser.add_argument("--ignore", nargs="+", default=None, help="regular expressions of layers to leave out")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def format_report(report) -> str:
    """Terminal table of a ``SparsityReport``: one row per layer, totals, and an N:M verdict."""
    lines = []
    pruning = report.extra.get("pruning") if isinstance(report.extra, dict) else None
    if pruning:
        lines.append("pruned with hf_gradprobe: " + ", ".join(f"{k}={v}" for k, v in pruning.items()))
    totals = (report.total_parameters, report.total_zeros)
    lines.append(format_sparsity_table(report.layers, report.pattern, style="text", totals=totals))
    nm = report.pattern
    if nm:
        broken = [layer for layer in report.layers if layer.nm_violating_groups]
        if not broken:
            lines.append(f"{nm}: every layer complies.")
        else:
            lines.append(
                f"{nm}: {len(broken)} of {len(report.layers)} layers break the pattern: "
                + ", ".join(layer.name for layer in broken[:5])
                + (" ..." if len(broken) > 5 else "")
            )
    return "\n".join(lines)


def run(args) -> int:
    from ..sharing.inspection import sparsity_report

    report = sparsity_report(
        args.model,
        pattern=args.pattern,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        targets=args.targets,
        ignore=args.ignore,
    )
    if args.json:
        print_json({"model": args.model, **report.to_dict()})
    else:
        print(format_report(report))
    return 0

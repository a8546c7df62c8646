# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe inspect MODEL_OR_DIR [--pattern 2:4] [--json]`: per-layer and total sparsity, N:M compliance."""

from __future__ import annotations

from .common import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="per-layer and total sparsity of a model, and which layers break an N:M pattern"
    )
    parser.add_argument("model", help="saved model folder, Hub id, or 'smollm2-135m'")
    parser.add_argument("--pattern", default=None,
                        help="N:M pattern to check, e.g. 2:4 (default: the one the model was pruned with, if any; "
                             "'unstructured' checks none)")
    parser.add_argument("--targets", nargs="+", default=None,
                        help="regular expressions choosing the layers (default: Linear/Conv1D in the repeated blocks)")
    parser.add_argument("--ignore", nargs="+", default=None, help="regular expressions of layers to leave out")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report) -> str:
    """Terminal table of a ``SparsityReport``: one row per layer, totals, and an N:M verdict."""
    nm = report.pattern
    head = ["layer", "shape", "zeros", "sparsity"] + ([f"{nm} bad groups", "first at (row, group)"] if nm else [])
    rows = [head]
    for layer in report.layers:
        row = [layer.name, "x".join(map(str, layer.shape)), f"{layer.zeros:,}", f"{layer.sparsity:.2%}"]
        if nm:
            if layer.nm_violating_groups == -1:
                row += ["n/a", "input size not a multiple of M"]
            else:
                first = layer.nm_first_violation
                row += [f"{layer.nm_violating_groups:,}", f"({first[0]}, {first[1]})" if first else "-"]
        rows.append(row)
    pad = [""] * (len(head) - 4)
    rows.append(["prunable total", f"{report.prunable_numel:,} weights", f"{report.prunable_zeros:,}",
                 f"{report.sparsity:.2%}", *pad])
    rows.append(["all parameters", f"{report.total_parameters:,}", f"{report.total_zeros:,}",
                 f"{report.overall_sparsity:.2%}", *pad])
    lines = []
    pruning = report.extra.get("pruning") if isinstance(report.extra, dict) else None
    if pruning:
        lines.append("pruned with hf_gradprobe: " + ", ".join(f"{k}={v}" for k, v in pruning.items()))
    lines.append(_table(rows, right={2, 3, 4}))
    if nm:
        broken = [layer for layer in report.layers if layer.nm_violating_groups]
        if not broken:
            lines.append(f"{nm}: every layer complies.")
        else:
            lines.append(f"{nm}: {len(broken)} of {len(report.layers)} layers break the pattern: "
                         + ", ".join(layer.name for layer in broken[:5]) + (" ..." if len(broken) > 5 else ""))
    return "\n".join(lines)


def run(args) -> int:
    from ..inspection import sparsity_report

    report = sparsity_report(
        args.model, pattern=args.pattern, revision=args.revision, trust_remote_code=args.trust_remote_code,
        targets=args.targets, ignore=args.ignore,
    )
    if args.json:
        print_json({"model": args.model, **report.to_dict()})
    else:
        print(format_report(report))
    return 0

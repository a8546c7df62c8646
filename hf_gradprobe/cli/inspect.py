# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe inspect MODEL_OR_DIR [--pattern 2:4] [--json]`: per-layer and total sparsity, N:M compliance."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.sparsity import format_sparsity_table
from .common import HubArguments, add_command, print_json


__all__ = ["InspectArguments", "format_report", "register", "run"]


@dataclass
class InspectArguments:
    """The flags of `hf-gradprobe inspect`."""

    pattern: str | None = field(
        default=None,
        metadata={
            "help": "N:M pattern to check, e.g. 2:4; 'unstructured' checks none, and None the one the model was "
            "pruned with, if any."
        },
    )
    targets: list[str] | None = field(
        default=None,
        metadata={"help": "Regular expressions choosing the layers; None: Linear/Conv1D in the repeated blocks."},
    )
    ignore: list[str] | None = field(default=None, metadata={"help": "Regular expressions of layers to leave out."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object."})


def register(subparsers) -> None:
    """Add ``hf-gradprobe inspect`` to ``subparsers``."""
    add_command(
        subparsers,
        "inspect",
        (InspectArguments, HubArguments),
        run,
        help="per-layer and total sparsity of a model, and which layers break an N:M pattern",
        default_model=None,
    )


def format_report(report) -> str:
    """A terminal table of a sparsity report.

    Args:
        report (`SparsityReport`):
            What :func:`~hf_gradprobe.sharing.inspection.sparsity_report` returned.

    Returns:
        `str`: one row per layer, the totals, and an N:M verdict when a pattern was checked.
    """
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


def run(args, inspect_args: InspectArguments, hub_args: HubArguments) -> int:
    """Measure the model's sparsity and print it; returns the exit code."""
    from ..sharing.inspection import sparsity_report

    report = sparsity_report(
        args.model,
        pattern=inspect_args.pattern,
        revision=hub_args.revision,
        trust_remote_code=hub_args.trust_remote_code,
        targets=inspect_args.targets,
        ignore=inspect_args.ignore,
    )
    if inspect_args.json:
        print_json({"model": args.model, **report.to_dict()})
    else:
        print(format_report(report))
    return 0

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning benchmark: dense, magnitude, Wanda, GradProbe and llm-compressor side by side.

Measures, for every row and pattern, the measured sparsity, perplexity on the test texts (and, with
``--validation-windows``, on the validation texts a configuration is chosen on), prune seconds and the extra peak
memory while pruning. Every row runs in a fresh Python process (llm-compressor's in its own virtual environment,
made by ``bash benchmarks/setup_llmcompressor.sh``), so time and memory carry nothing over from earlier rows::

    python benchmarks/oneshot.py                      # all rows -> benchmarks/results/oneshot.{json,md}
    python benchmarks/oneshot.py --rows wanda,gradprobe-wanda-admm --patterns 2:4
    python benchmarks/oneshot.py --rows gradprobe-wanda-admm --extra-config '{"reconstruction_ridge": 0.01}' \\
        --name oneshot_best                           # a "best configuration" row after tune_oneshot.py
    python benchmarks/oneshot.py --model path/to/causal-lm --device cuda --rows dense,wanda-admm --name other
    python benchmarks/oneshot.py --rows wanda --patterns unstructured@0.5 --eval-windows 1 \\
        --calibration-samples 4 --threads-per-row 1 --name smoke --out-dir /tmp/bench_smoke  # smoke run
    python benchmarks/oneshot.py --render benchmarks/results/oneshot.json   # the table again, nothing run

Rows: ``dense``; ``magnitude``, ``wanda``, ``gradprobe-magnitude``, ``gradprobe-wanda`` and their ``-layerwise``
variants, each optionally ending in ``-admm`` or ``-sparsegpt`` (reconstruction of the kept weights);
``llmcompressor-sparsegpt``, ``llmcompressor-wanda`` (``protocol/rows.py``). Patterns: ``unstructured@SPARSITY``
or ``N:M``. ``--model`` (default: the packaged SmolLM2-135M-Instruct, fp32) and ``--device`` (default: cpu) are
recorded in the results JSON and the table's header.

Protocol (``benchmarks/protocol/``): prunable = the Linear layers of the decoder blocks; calibration 64 x 512
tokens of WikiText-2 valid (seed 0); perplexity on the first 32 x 1024 windows of WikiText-2 raw test and of
Tiny Shakespeare. Extra memory = peak over the memory just before pruning (CUDA allocator peak, or RSS sampled
every 5 ms on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from protocol import cli, report, rows, splits
from protocol.specs import Pattern, RowSpec, RunOptions


__all__ = ["DEFAULT_ROWS", "EVAL_TEXTS", "argument_parser", "build_specs", "main", "to_markdown"]

DEFAULT_ROWS = [
    "dense",
    "magnitude",
    "magnitude-admm",
    "wanda",
    "wanda-admm",
    "gradprobe-wanda",
    "gradprobe-wanda-admm",
    "llmcompressor-sparsegpt",
    "llmcompressor-wanda",
]
EVAL_TEXTS = tuple(splits.TEST_TEXTS)


def json_object(text: str, option: str) -> dict:
    """A JSON object given on the command line."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object, got {text!r}")
    return value


def build_specs(args) -> list[RowSpec]:
    """Dense once (if asked), then for each pattern every other row, in the order given.

    ``--named-rows`` defines extra row names as a known row plus overrides, e.g.
    ``{"gradprobe-wanda-admm-kl": {"row": "gradprobe-wanda-admm", "probe_loss": "kl"}}``; ``--rows-per-pattern``
    narrows the rows of a pattern, e.g. ``{"unstructured@0.6": ["wanda-admm", "llmcompressor-sparsegpt"]}``.
    """
    options = RunOptions.from_args(args)
    extra = json_object(args.extra_config, "--extra-config")
    named = json_object(args.named_rows, "--named-rows")
    per_pattern = json_object(args.rows_per_pattern, "--rows-per-pattern")
    names = args.rows.split(",")
    specs = [rows.row_spec("dense", None, EVAL_TEXTS, options)] if "dense" in names else []
    for spelling, pattern in Pattern.parse_list(args.patterns):
        for row in per_pattern.get(spelling, names):
            if row == "dense":
                continue
            if row in named:
                overrides = dict(named[row])
                spec = rows.row_spec(overrides.pop("row"), pattern, EVAL_TEXTS, options, extra={**extra, **overrides})
                specs.append(rows.renamed(spec, row))
            else:
                specs.append(rows.row_spec(row, pattern, EVAL_TEXTS, options, extra=extra))
    return [
        dataclasses.replace(spec, validation_windows=args.validation_windows) if spec.kind == "ours" else spec
        for spec in specs
    ]


def to_markdown(result: dict) -> str:
    """The table of a one-shot result: header, one line per row, the validation note, the overrides, the footer."""
    lines = report.header(
        result,
        f"perplexity on the first {result['eval_windows']} x {splits.EVAL_SEQ_LEN} windows of WikiText-2 raw test "
        "and of Tiny Shakespeare; extra memory = peak while pruning minus the memory just before",
    )
    first = [("method", "name"), ("pattern", "pattern"), ("target", lambda r: f"{r['target']:g}")]
    if any("launch" in row for row in result["rows"]):  # rows merged from several launches say which
        first.append(("launch", "launch"))
    validation = tuple(splits.VALIDATION_TEXTS) if result.get("validation_windows") else ()
    lines += report.markdown_table(result["rows"], EVAL_TEXTS + validation, first)
    if validation:
        lines += [
            "",
            (
                f"Validation columns ({result['validation_windows']} x {splits.EVAL_SEQ_LEN} windows; our rows only) are "
                "what a configuration is chosen on; the test columns are reported, never tuned on."
            ),
        ]
    for name, definition in result.get("named_rows", {}).items():
        overrides = {key: value for key, value in definition.items() if key != "row"}
        lines += ["", f"`{name}` is `{definition['row']}` with the overrides `{json.dumps(overrides)}`."]
    if result["extra_config"]:
        lines += ["", f"Extra GradProbeConfig overrides on every row of ours: `{json.dumps(result['extra_config'])}`"]
    lines += report.footer(result)
    return "\n".join(lines) + "\n"


def argument_parser():
    """The one-shot benchmark's command line (the shared options and its own)."""
    parser = cli.benchmark_parser(__doc__, "oneshot", splits.TEST_WINDOWS, "unstructured@0.5,2:4,unstructured@0.6")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated row names")
    parser.add_argument("--extra-config", default="{}", help="JSON GradProbeConfig overrides for every row of ours")
    parser.add_argument(
        "--validation-windows",
        type=int,
        default=0,
        help="also score our rows on N windows of each validation text, to choose a configuration on (default 0)",
    )
    parser.add_argument("--named-rows", default="{}", help='JSON {"name": {"row": KNOWN_ROW, overrides...}}')
    parser.add_argument("--rows-per-pattern", default="{}", help='JSON {"PATTERN[@SPARSITY]": [rows]}')
    return parser


def describe(args) -> dict:
    """The one-shot benchmark's fields of the result."""
    return {
        "eval": list(EVAL_TEXTS),
        "extra_config": json.loads(args.extra_config),
        "named_rows": json.loads(args.named_rows),
        "validation_windows": args.validation_windows,
    }


def main(argv=None) -> int:
    return cli.main(argument_parser(), argv, __file__, build_specs, to_markdown, describe)


if __name__ == "__main__":
    sys.exit(main())

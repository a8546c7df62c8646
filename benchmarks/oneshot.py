# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning benchmark on SmolLM2-135M-Instruct: dense, magnitude, Wanda, GradProbe, llm-compressor.

Every row runs in a fresh Python process (llm-compressor's in its own virtual environment, made by
``bash benchmarks/setup_llmcompressor.sh``), so time and memory carry nothing over from earlier rows::

    python benchmarks/oneshot.py                      # all rows -> benchmarks/results/oneshot.{json,md}
    python benchmarks/oneshot.py --rows wanda,gradprobe-wanda-admm --patterns 2:4
    python benchmarks/oneshot.py --rows gradprobe-wanda-admm --extra-config '{"reconstruction_ridge": 0.01}' \\
        --name oneshot_best                           # a "best configuration" row after tune_oneshot.py
    python benchmarks/oneshot.py --rows wanda --patterns unstructured@0.5 --eval-windows 1 \\
        --calibration-samples 4 --name smoke --out-dir /tmp/bench_smoke     # smoke run (never into results/)

Rows: ``dense``; ``magnitude``, ``wanda``, ``gradprobe-magnitude``, ``gradprobe-wanda`` and their ``-layerwise``
variants, each optionally ending in ``-admm`` or ``-sparsegpt`` (reconstruction of the kept weights);
``llmcompressor-sparsegpt``, ``llmcompressor-wanda``. Patterns: ``unstructured@SPARSITY`` or ``N:M``.

Protocol (``benchmarks/protocol.py``): fp32 model from the packaged GGUF; prunable = the Linear layers of the
decoder blocks; calibration 64 x 512 tokens of WikiText-2 valid (seed 0); perplexity on the first 32 x 1024
windows of WikiText-2 raw test and of Tiny Shakespeare. Extra memory = peak over the memory just before pruning
(CUDA allocator peak, or RSS sampled every 5 ms on CPU).
"""

from __future__ import annotations

import json
import sys

import protocol


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
EVAL_TEXTS = tuple(protocol.TEST_TEXTS)


def build_specs(args) -> list[dict]:
    """Dense once (if asked), then for each pattern every other row, in the order given.

    ``--named-rows`` defines extra row names as a known row plus overrides, e.g.
    ``{"gradprobe-wanda-admm-kl": {"row": "gradprobe-wanda-admm", "probe_loss": "kl"}}``; ``--rows-per-pattern``
    narrows the rows of a pattern, e.g. ``{"unstructured@0.6": ["wanda-admm", "llmcompressor-sparsegpt"]}``.
    """
    extra = json.loads(args.extra_config)
    named = json.loads(args.named_rows)
    per_pattern = json.loads(args.rows_per_pattern)
    rows = args.rows.split(",")
    specs = []
    if "dense" in rows:
        specs.append(protocol.spec_for("dense", "dense", 0.0, EVAL_TEXTS, args, "benchmark"))
    for pattern_spec in args.patterns.split(","):
        pattern, target = protocol.parse_pattern(pattern_spec)
        for row in per_pattern.get(pattern_spec, rows):
            if row == "dense":
                continue
            if row in named:
                overrides = dict(named[row])
                spec = protocol.spec_for(
                    overrides.pop("row"), pattern, target, EVAL_TEXTS, args, "benchmark", {**extra, **overrides}
                )
                specs.append({**spec, "name": row})
            else:
                specs.append(protocol.spec_for(row, pattern, target, EVAL_TEXTS, args, "benchmark", extra))
    for spec in specs:
        if spec["kind"] == "ours":
            spec["validation_windows"] = args.validation_windows
    return specs


def to_markdown(result: dict) -> str:
    lines = protocol.header(
        result,
        f"perplexity on the first {result['eval_windows']} x {protocol.EVAL_SEQ_LEN} windows of WikiText-2 raw test "
        "and of Tiny Shakespeare; extra memory = peak while pruning minus the memory just before",
    )
    first = [("method", "name"), ("pattern", "pattern"), ("target", lambda r: f"{r['target']:g}")]
    validation = tuple(protocol.VALIDATION_TEXTS) if result.get("validation_windows") else ()
    lines += protocol.markdown_table(result["rows"], EVAL_TEXTS + validation, first)
    if validation:
        lines += [
            "",
            (
                f"Validation columns ({result['validation_windows']} x {protocol.EVAL_SEQ_LEN} windows; our rows only) are "
                "what a configuration is chosen on; the test columns are reported, never tuned on."
            ),
        ]
    if result["extra_config"]:
        lines += ["", f"Extra GradProbeConfig overrides on every row of ours: `{json.dumps(result['extra_config'])}`"]
    lines += protocol.footer(result)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = protocol.argument_parser(
        __doc__, "oneshot", protocol.TEST_WINDOWS, "unstructured@0.5,2:4,unstructured@0.6"
    )
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

    def describe(args):
        return {
            "eval": list(EVAL_TEXTS),
            "extra_config": json.loads(args.extra_config),
            "named_rows": json.loads(args.named_rows),
            "validation_windows": args.validation_windows,
        }

    return protocol.main(parser, argv, __file__, build_specs, to_markdown, describe)


if __name__ == "__main__":
    sys.exit(main())

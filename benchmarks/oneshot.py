# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning benchmark: dense, magnitude, Wanda, GradProbe, the package default and llm-compressor side by side.

Measures, for every row and pattern, the measured sparsity, perplexity on the test texts (and, with
``--validation-windows``, on the validation texts a configuration is chosen on), prune seconds and the extra peak
memory while pruning. Every row runs in a fresh Python process (llm-compressor's in its own virtual environment,
made by ``bash benchmarks/setup_llmcompressor.sh``), so time and memory carry nothing over from earlier rows. The
results (``NAME.json``, ``NAME.md`` and the plot ``NAME.png``) are rewritten after every row::

    python benchmarks/oneshot.py                      # all rows -> benchmarks/results/oneshot.{json,md,png}
    python benchmarks/oneshot.py --rows wanda,gradprobe-wanda-admm --patterns 2:4
    python benchmarks/oneshot.py --rows gradprobe-wanda-admm --extra-config '{"reconstruction_ridge": 0.01}' \\
        --name oneshot_best                           # a "best configuration" row after tune_oneshot.py
    python benchmarks/oneshot.py --model path/to/causal-lm --device cuda --rows dense,wanda-admm --name other
    python benchmarks/oneshot.py --rows dense,wanda,default,llmcompressor-sparsegpt \\
        --patterns unstructured@0.5,unstructured@0.6,unstructured@0.7,2:4 \\
        --full-test-rows dense,wanda,default,llmcompressor-sparsegpt \\
        --seed-rows default,llmcompressor-sparsegpt   # the papers' full test column, and a second seed
    python benchmarks/oneshot.py --rows wanda --patterns unstructured@0.5 --eval-windows 1 \\
        --calibration-samples 4 --threads-per-row 1 --name smoke --out-dir /tmp/bench_smoke  # smoke run
    python benchmarks/oneshot.py --render benchmarks/results/oneshot.json   # the table (and plot) again

Rows: ``dense``; ``default`` (``GradProbeConfig()``'s defaults at the time of the launch, recorded resolved in each
row's ``config``); ``magnitude``, ``wanda``, ``gradprobe-magnitude``, ``gradprobe-wanda`` and their
``-layerwise`` variants, each optionally ending in ``-admm`` or ``-sparsegpt`` (reconstruction of the kept
weights), every one pinned to the full set of settings it means (``protocol/rows.py``: ``PINNED``), so a changed
package default changes none of them; ``llmcompressor-sparsegpt``, ``llmcompressor-wanda``; and ``--named-rows``,
a known row plus overrides. Patterns: ``unstructured@SPARSITY`` or ``N:M``. ``--model`` (default: the packaged
SmolLM2-135M-Instruct Q4_1 GGUF, de-quantized to fp32) and ``--device`` (default: cpu) are recorded in the results
JSON and the table's header.

Protocol (``benchmarks/protocol/``): prunable = the Linear layers of the decoder blocks; calibration 64 x 512
tokens of WikiText-2 valid (seed 0; ``--seed-rows`` adds each named row again with seed 1); perplexity on the first
32 x 1024 windows of WikiText-2 raw test and of Tiny Shakespeare, and for the ``--full-test-rows`` on the whole of
WikiText-2 raw test in 2048-token windows (the SparseGPT/Wanda papers' protocol); the validation windows avoid the
calibration windows of both seeds. Extra memory = peak over the memory just before pruning (CUDA allocator peak, or
RSS sampled every 5 ms on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from protocol import cli, report, rows, splits
from protocol.plot import DEFAULT_PLOT_ROWS
from protocol.specs import Pattern, RowSpec, RunOptions


__all__ = [
    "DEFAULT_ROWS",
    "EVAL_TEXTS",
    "FULL_TEST_TEXT",
    "argument_parser",
    "build_specs",
    "draw",
    "main",
    "row_definitions",
    "to_markdown",
]

DEFAULT_ROWS = [
    "dense",
    "default",
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
FULL_TEST_TEXT = next(iter(splits.FULL_TEST_TEXTS))  # "test-wikitext-full"
# GradProbeConfig fields a row's spec sets (sizes, seed, pattern): not part of what a row means.
SIZE_FIELDS = set(rows.SPEC_FIELDS)


def json_object(text: str, option: str) -> dict:
    """A JSON object given on the command line."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object, got {text!r}")
    return value


def name_list(text: str | None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; empty or ``None`` -> ``[]``."""
    return [name for name in (text or "").split(",") if name]


def build_specs(args) -> list[RowSpec]:
    """Dense once (if asked), then for each pattern every other row, in the order given.

    ``--named-rows`` defines extra row names as a known row plus overrides, e.g.
    ``{"gradprobe-wanda-admm-kl": {"row": "gradprobe-wanda-admm", "probe_loss": "kl"}}``; ``--rows-per-pattern``
    narrows the rows of a pattern, e.g. ``{"unstructured@0.6": ["wanda-admm", "llmcompressor-sparsegpt"]}``.
    ``--full-test-rows`` adds the full WikiText-2 test (2048-token windows) to the rows of those names;
    ``--seed-rows`` follows each row of those names with the same row calibrated with each further seed of
    ``splits.CALIBRATION_SEEDS`` (seed 1), scored on the same texts but the full test (which it gets only with
    ``--full-test-seeds``: the seed's spread shows in the other columns, and a full pass costs ~25 min a row).
    """
    options = RunOptions.from_args(args)
    extra = json_object(args.extra_config, "--extra-config")
    named = json_object(args.named_rows, "--named-rows")
    per_pattern = json_object(args.rows_per_pattern, "--rows-per-pattern")
    names = name_list(args.rows)
    full_rows, seed_rows = name_list(args.full_test_rows), name_list(args.seed_rows)
    if "dense" in seed_rows:
        raise ValueError("--seed-rows: dense calibrates nothing, a second seed would measure the same model")
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
    launched = {spec.name for spec in specs}
    for option, wanted in (("--full-test-rows", full_rows), ("--seed-rows", seed_rows)):
        missing = [name for name in wanted if name not in launched]
        if missing:  # a typo would silently drop a headline column
            raise ValueError(f"{option} names rows this launch does not run: {missing}; it runs {sorted(launched)}")
    out = []
    for spec in specs:
        if spec.kind == "ours":
            spec = dataclasses.replace(spec, validation_windows=args.validation_windows)
        if spec.name in full_rows:
            spec = dataclasses.replace(
                spec, eval=(*spec.eval, FULL_TEST_TEXT), full_test_windows=args.full_test_windows
            )
        out.append(spec)
        if spec.name in seed_rows:
            texts = spec.eval if args.full_test_seeds else tuple(n for n in spec.eval if n != FULL_TEST_TEXT)
            for seed in splits.CALIBRATION_SEEDS[1:]:
                out.append(dataclasses.replace(spec, calibration_seed=seed, eval=texts))
    return out


def config_departures(config: dict, defaults: dict) -> dict:
    """The settings of a resolved row ``config`` that differ from ``defaults`` (sizes and seed aside)."""
    return {
        key: value
        for key, value in config.items()
        if key not in SIZE_FIELDS and key in defaults and defaults[key] != value
    } | {key: value for key, value in config.items() if key not in SIZE_FIELDS and key not in defaults}


def row_definitions(result: dict) -> list[str]:
    """What each row of ours meant in this launch: its resolved config against the launch's ``GradProbeConfig()``
    (recorded as ``package_defaults``; launches before it: nothing)."""
    defaults = result.get("package_defaults")
    if not defaults:
        return []
    seen: dict[str, dict] = {}
    for row in result["rows"]:
        # An unstructured row where there is one: N:M rows record allocation="uniform" whatever they asked.
        if row.get("kind") != "ours" or not row.get("config"):
            continue
        earlier = seen.get(row["name"])
        if earlier is None or (row["pattern"] == "unstructured" and earlier["pattern"] != "unstructured"):
            seen[row["name"]] = row
    if not seen:
        return []
    method = result.get("package_default_method", "?")
    lines = [
        "",
        (
            f"Rows of ours against this launch's `GradProbeConfig()` (method `{method}`); every row but `default` pins "
            "all its settings (`benchmarks/protocol/rows.py`), so a later change of a package default changes none:"
        ),
        "",
    ]
    for name, row in seen.items():
        departures = config_departures(row["config"], defaults)
        what = f"differs in `{json.dumps(departures)}`" if departures else "the package defaults"
        lines.append(f"* `{name}` (method `{row.get('method', '?')}`): {what}")
    return lines


def full_test_description(result: dict) -> str:
    """What the full-test column measured (from the rows' ``scored`` record), or ``""`` without one."""
    scored = next(
        (row["scored"][FULL_TEST_TEXT] for row in result["rows"] if FULL_TEST_TEXT in row.get("scored", {})), None
    )
    if scored is None:
        return ""
    if result.get("full_test_windows"):  # capped (smoke runs): not the papers' number
        return (
            f"; {splits.LABELS[FULL_TEST_TEXT]} (the rows that asked for it): only the first {scored['windows']} x "
            f"{scored['seq_len']} windows of WikiText-2 raw test (--full-test-windows), not the whole text"
        )
    return (
        f"; {splits.LABELS[FULL_TEST_TEXT]} (the rows that asked for it): the whole of WikiText-2 raw test "
        f"({scored['text_tokens']:,} tokens) in {scored['windows']} x {scored['seq_len']} windows, "
        f"{scored['tokens']:,} predicted tokens scored, the last partial window dropped (the SparseGPT/Wanda "
        "papers' protocol)"
    )


def to_markdown(result: dict) -> str:
    """The table of a one-shot result: header, one line per row, the plot, the validation note, the row
    definitions and overrides, the footer."""
    lines = report.header(
        result,
        f"perplexity on the first {result['eval_windows']} x {splits.EVAL_SEQ_LEN} windows of WikiText-2 raw test "
        f"and of Tiny Shakespeare{full_test_description(result)}; extra memory = peak while pruning minus the "
        "memory just before",
    )
    first = [("method", "name"), ("pattern", "pattern"), ("target", lambda r: f"{r['target']:g}")]
    if any("launch" in row for row in result["rows"]):  # rows merged from several launches say which
        first.append(("launch", "launch"))
    seeds = report.calibration_seeds(result)
    if seeds != [splits.CALIBRATION_SEED]:
        first.append(("seed", lambda r: "" if r.get("kind") == "dense" else report.row_seed(r)))
    full = (FULL_TEST_TEXT,) if any(FULL_TEST_TEXT in row.get("perplexity", {}) for row in result["rows"]) else ()
    validation = tuple(splits.VALIDATION_TEXTS) if result.get("validation_windows") else ()
    lines += report.markdown_table(result["rows"], EVAL_TEXTS + full + validation, first)
    if result.get("plot"):
        shown = ", ".join(f"`{name}`" for name in result.get("plot_rows") or DEFAULT_PLOT_ROWS)
        lines += ["", f"![Perplexity against sparsity ({shown}), in domain and out of domain]({result['plot']})"]
    if len(seeds) > 1:
        lines += [
            "",
            (
                f"Seed column: the calibration windows' seed; a row run with seeds {', '.join(map(str, seeds))} "
                "shows the spread of one calibration draw."
            ),
        ]
    if validation:
        avoided = ", ".join(map(str, result.get("validation_avoids_seeds", [splits.CALIBRATION_SEED])))
        lines += [
            "",
            (
                f"Validation columns ({result['validation_windows']} x {splits.EVAL_SEQ_LEN} windows; our rows only; "
                f"the WikiText-2 valid windows overlap no calibration window of seed(s) {avoided}) are what a "
                "configuration is chosen on; the test columns are reported, never tuned on."
            ),
        ]
    lines += row_definitions(result)
    for name, definition in result.get("named_rows", {}).items():
        overrides = {key: value for key, value in definition.items() if key != "row"}
        lines += ["", f"`{name}` is `{definition['row']}` with the overrides `{json.dumps(overrides)}`."]
    if result["extra_config"]:
        lines += ["", f"Extra GradProbeConfig overrides on every row of ours: `{json.dumps(result['extra_config'])}`"]
    lines += report.footer(result)
    return "\n".join(lines) + "\n"


def draw(result: dict, args, folder, name: str) -> None:
    """The plot ``folder/NAME.png`` of the ``--plot-rows`` (a launch's own, or the defaults), linked from the
    markdown by ``result["plot"]``."""
    from pathlib import Path

    from protocol.plot import sparsity_plot

    names = name_list(args.plot_rows) or result.get("plot_rows") or list(DEFAULT_PLOT_ROWS)
    written = sparsity_plot(result, Path(folder) / f"{name}.png", names)
    if written is not None:
        result["plot"], result["plot_rows"] = written.name, list(names)


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
    parser.add_argument(
        "--full-test-rows",
        default="",
        help=f"rows (names, comma-separated) also scored on the whole WikiText-2 test in {splits.FULL_TEST_SEQ_LEN}-"
        "token windows (the papers' protocol; about 150 windows: ~20-30 min per row on one CPU thread)",
    )
    parser.add_argument(
        "--full-test-windows",
        type=int,
        default=None,
        help="score only the first N windows of the full test (smoke runs; the column then says so)",
    )
    parser.add_argument(
        "--seed-rows",
        default="",
        help="rows (names, comma-separated) run again with calibration seed 1, to show the spread",
    )
    parser.add_argument(
        "--full-test-seeds",
        action="store_true",
        help="score the --seed-rows' seed-1 copies on the full test too (default: their seed-0 rows only)",
    )
    parser.add_argument(
        "--plot-rows",
        default=None,
        help=f"rows drawn in NAME.png (default: a launch's own choice, else {','.join(DEFAULT_PLOT_ROWS)})",
    )
    return parser


def describe(args) -> dict:
    """The one-shot benchmark's fields of the result: the options, and the package defaults of the launch."""
    from hf_gradprobe import GradProbeConfig

    defaults = GradProbeConfig()
    return {
        "eval": list(EVAL_TEXTS),
        "extra_config": json.loads(args.extra_config),
        "named_rows": json.loads(args.named_rows),
        "validation_windows": args.validation_windows,
        "full_test_rows": name_list(args.full_test_rows),
        "full_test_windows": args.full_test_windows,
        "seed_rows": name_list(args.seed_rows),
        "full_test_seeds": args.full_test_seeds,
        "plot_rows": name_list(args.plot_rows) or list(DEFAULT_PLOT_ROWS),
        "pinned": rows.PINNED,
        "package_defaults": defaults.to_dict(),
        "package_default_method": defaults.method,
    }


def main(argv=None) -> int:
    return cli.main(argument_parser(), argv, __file__, build_specs, to_markdown, describe, outputs=draw)


if __name__ == "__main__":
    sys.exit(main())

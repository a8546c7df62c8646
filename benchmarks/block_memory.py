# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Peak memory of pruning one decoder block with Mistral-7B's shapes, beyond the loaded model.

A one-block Mistral (hidden 4096, MLP 14336, 32 query / 8 key-value heads, vocabulary 32000) with random weights
is pruned block by block (what every block of the 7B model costs in turn) with the configuration given, on
windows of 2048 tokens, in a fresh process. The extra peak (peak resident memory while pruning minus the
resident memory of the loaded model) is what one block adds; the 7B estimate adds it to the 7B model's bytes.

    python benchmarks/block_memory.py                         # -> benchmarks/results/block_memory.{json,md}
    python benchmarks/block_memory.py --dtype bfloat16 --windows 4 --probe-windows 1
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
MISTRAL_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
MISTRAL_7B_PARAMETERS = 7_241_732_096  # Mistral-7B-v0.3 has 7.25B parameters (bf16: 14.5 GB)


def child(spec: dict) -> dict:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    import hf_gradprobe as hg
    from hf_gradprobe.core.runtime import resident_memory

    torch.manual_seed(0)
    dtype = getattr(torch, spec["dtype"])
    config = MistralConfig(num_hidden_layers=1, **MISTRAL_7B)
    model = MistralForCausalLM(config).to(dtype)
    model.eval()
    block_bytes = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    windows = torch.randint(0, config.vocab_size, (spec["windows"], spec["seq_len"]))
    before = resident_memory()
    settings = {
        "num_calibration_samples": spec["windows"],
        "calibration_seq_len": spec["seq_len"],
        "num_probe_samples": spec["probe_windows"],
        "calibration_batch_size": 1,
        **spec["config"],
    }
    start = time.perf_counter()
    _, report = hg.prune_pretrained(
        model, hg.GradProbeConfig(**settings), calibration=windows, return_report=True, progress=False
    )
    return {
        "spec": spec,
        "settings": settings,
        "block_bytes": block_bytes,
        "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "resident_before": before,
        "peak": report.peak_memory_bytes,
        "extra_bytes": report.peak_memory_bytes - before,
        "sparsity": report.sparsity,
        "seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--windows", type=int, default=2, help="calibration windows of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--probe-windows", type=int, default=1)
    parser.add_argument(
        "--config",
        default='{"reconstruction": "admm", "reconstruction_iterations": 2, "layerwise": true}',
        help="GradProbeConfig overrides (JSON); ADMM's iteration count does not change the peak",
    )
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    spec = {
        "dtype": args.dtype,
        "windows": args.windows,
        "seq_len": args.seq_len,
        "probe_windows": args.probe_windows,
        "config": json.loads(args.config),
    }
    # The child's stderr passes through, so a failure shows its traceback.
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], check=True, stdout=subprocess.PIPE, text=True
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    gib = 2**30
    bf16_model = MISTRAL_7B_PARAMETERS * 2
    # Hidden-state cache and activations scale with the dtype's size; Hessians and solver buffers stay fp32.
    estimate = bf16_model + row["extra_bytes"]
    row["estimate_7b_bf16_bytes"] = estimate
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / "block_memory.json").write_text(json.dumps(row, indent=2) + "\n")
    lines = [
        (
            "One Mistral-7B-shaped block pruned on "
            f"{args.windows} x {args.seq_len}-token windows ({args.dtype}, random weights, CPU, fresh process), "
            f"settings {json.dumps(row['settings'])}."
        ),
        "",
        "| block | model loaded | extra peak while pruning | extra / block | 7B bf16 + extra |",
        "|---:|---:|---:|---:|---:|",
        (
            f"| {row['block_bytes'] / gib:.2f} GiB | {row['model_bytes'] / gib:.2f} GiB | {row['extra_bytes'] / gib:.2f} GiB "
            f"| {row['extra_bytes'] / row['block_bytes']:.2f} | {estimate / gib:.1f} GiB |"
        ),
        "",
        (
            f"Command: `python benchmarks/block_memory.py --dtype {args.dtype} --windows {args.windows} "
            f"--seq-len {args.seq_len} --probe-windows {args.probe_windows} --config '{args.config}'`; "
            f"{row['seconds']:.0f} s."
        ),
    ]
    (Path(args.out_dir) / "block_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

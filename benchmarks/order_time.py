# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Prune time of the two reconstruction orders on the first blocks of SmolLM2 (Wanda + ADMM, 64 x 512 calibration).

Each order runs in a fresh process on the same truncated model, one after the other, and the script reports the
prune seconds and where they go (the top functions of a cProfile). Not a quality measurement: see
``tune_oneshot.py`` for that::

    python benchmarks/order_time.py --blocks 4 --threads 1      # -> results/order_time.{json,md}
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import protocol


ORDERS = ("sequential", "parallel")
TOP = ("linear", "addmm_", "scaled_dot_product_attention", "reconstruct_admm")


def run_order(order: str, blocks: int, threads: int) -> dict:
    import torch

    import hf_gradprobe as hg

    torch.set_num_threads(threads)
    model, tokenizer = hg.load_model(protocol.MODEL, dtype=torch.float32)
    model.model.layers = model.model.layers[:blocks]
    model.config.num_hidden_layers = blocks
    windows, _ = protocol.calibration(tokenizer)
    config = hg.GradProbeConfig(target_sparsity=0.5, reconstruction_order=order)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    hg.prune_pretrained(model, config, calibration=windows, progress=False)
    profile.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    spent = {name: 0.0 for name in TOP}
    for (_, _, function), (_, _, own, cumulative, _) in stats.items():
        for name in TOP:
            if name in function:
                spent[name] += cumulative if name == "reconstruct_admm" else own
    return {"order": order, "blocks": blocks, "threads": threads, "prune_seconds": seconds, "seconds_in": spent}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=str(protocol.HERE / "results"))
    parser.add_argument("--name", default="order_time")
    parser.add_argument("--child", choices=ORDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_order(args.child, args.blocks, args.threads)))
        return 0
    load = os.getloadavg()[0]
    rows = []
    for order in ORDERS:
        command = [sys.executable, __file__, "--child", order, "--blocks", str(args.blocks)]
        done = subprocess.run([*command, "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{order}: {rows[-1]['prune_seconds']:.1f} s", file=sys.stderr)
    result = {"command": "python benchmarks/" + " ".join([Path(__file__).name, *(argv or sys.argv[1:])]), "rows": rows}
    result["machine"] = protocol.machine().rsplit(",", 1)[0] + f", {args.threads} thread(s)"
    result["load_average_before"] = load

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        (
            f"Wanda + ADMM at 50% on the first {args.blocks} blocks of SmolLM2-135M-Instruct (fp32), calibration "
            f"{protocol.CALIBRATION_SAMPLES} x {protocol.CALIBRATION_SEQ_LEN} tokens; each order in a fresh process, "
            "one after the other."
        ),
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}; load average before {load:.1f}.",
        "",
        "| order | prune s | in linear layers s | in X^T X s | in attention s | in ADMM s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        spent = row["seconds_in"]
        lines.append(
            f"| {row['order']} | {row['prune_seconds']:.1f} | {spent['linear']:.1f} | {spent['addmm_']:.1f} | "
            f"{spent['scaled_dot_product_attention']:.1f} | {spent['reconstruct_admm']:.1f} |"
        )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

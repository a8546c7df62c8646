# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Prune time of the two reconstruction orders on the first blocks of SmolLM2 (Wanda + ADMM, 64 x 512 calibration).

Measures, for each order (``sequential``, ``parallel``), the prune seconds and where they go (the top functions of
a cProfile: linear layers, ``X^T X``, attention, the ADMM solve). Each order runs in a fresh process on the same
truncated model, one after the other (``protocol.runner``). Not a quality measurement: see ``tune_oneshot.py``::

    python benchmarks/order_time.py --blocks 4 --threads 1      # -> results/order_time.{json,md}
    python benchmarks/order_time.py --blocks 1 --threads 1 --calibration-samples 4 --out-dir /tmp/order_smoke
    python benchmarks/order_time.py --render benchmarks/results/order_time.json   # the table again
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from protocol.child import child_main
from protocol.report import weights_note
from protocol.runner import machine, run_rows
from protocol.specs import DEFAULT_MODEL
from protocol.splits import BENCHMARKS, CALIBRATION_SAMPLES, CALIBRATION_SEQ_LEN, calibration


__all__ = ["ORDERS", "OrderSpec", "main", "run_order", "to_markdown"]

ORDERS = ("sequential", "parallel")
TOP = ("linear", "addmm_", "scaled_dot_product_attention", "reconstruct_admm")


@dataclass(frozen=True)
class OrderSpec:
    """One order's process: the reconstruction order, the blocks kept, the torch threads, the calibration."""

    kind: ClassVar[str] = "order"
    order: str
    blocks: int
    threads: int
    calibration_samples: int = CALIBRATION_SAMPLES
    model: str = DEFAULT_MODEL

    @property
    def name(self) -> str:
        return self.order

    @property
    def label(self) -> str:
        return f"{self.order} order, first {self.blocks} blocks"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OrderSpec:
        return cls(**values)


def run_order(spec: OrderSpec) -> dict:
    """Prune the first ``spec.blocks`` blocks with the default configuration in ``spec.order``, under cProfile."""
    import cProfile
    import pstats
    import time

    import torch

    import hf_gradprobe as hg

    torch.set_num_threads(spec.threads)
    model, tokenizer = hg.load_model(spec.model, dtype=torch.float32)
    model.model.layers = model.model.layers[: spec.blocks]
    model.config.num_hidden_layers = spec.blocks
    windows, _ = calibration(tokenizer, spec.calibration_samples)
    config = hg.GradProbeConfig(target_sparsity=0.5, reconstruction_order=spec.order)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    hg.prune_pretrained(model, config, calibration=windows, progress=False)
    profile.disable()
    seconds = time.perf_counter() - start
    spent = {name: 0.0 for name in TOP}
    for (_, _, function), (_, _, own, cumulative, _) in pstats.Stats(profile).stats.items():
        for name in TOP:
            if name in function:
                spent[name] += cumulative if name == "reconstruct_admm" else own
    return {
        "order": spec.order,
        "blocks": spec.blocks,
        "threads": spec.threads,
        "prune_seconds": seconds,
        "seconds_in": spent,
    }


def to_markdown(result: dict) -> str:
    """The table: each order's prune seconds and the seconds in its top functions."""
    rows = result["rows"]
    blocks = rows[0]["blocks"] if rows else "?"
    lines = [
        (
            f"Wanda + ADMM at 50% on the first {blocks} blocks of SmolLM2-135M-Instruct (fp32), calibration "
            f"{result.get('calibration_samples', CALIBRATION_SAMPLES)} x {CALIBRATION_SEQ_LEN} tokens; each order in a "
            "fresh process, one after the other."
        ),
        "",
        *weights_note(),
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}; load average before {result['load_average_before']:.1f}.",
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
    if result.get("failed"):
        lines += ["", "Not run or failed: " + "; ".join(result["failed"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--row-json" in argv:
        return child_main(argv, run_order, OrderSpec)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration-samples", type=int, default=CALIBRATION_SAMPLES)
    parser.add_argument("--out-dir", default=str(BENCHMARKS / "results"))
    parser.add_argument("--name", default="order_time")
    parser.add_argument("--render", metavar="FILE.json", help="print the markdown of a saved result and exit")
    args = parser.parse_args(argv)
    if args.render:
        print(to_markdown(json.loads(Path(args.render).read_text())), end="")
        return 0
    result = {
        "command": "python benchmarks/" + " ".join([Path(__file__).name, *argv]),
        "machine": machine().rsplit(",", 1)[0] + f", {args.threads} thread(s)",
        "load_average_before": os.getloadavg()[0],
        "calibration_samples": args.calibration_samples,
    }
    out = Path(args.out_dir)

    def save(result: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / f"{args.name}.md").write_text(to_markdown(result))

    specs = [OrderSpec(order, args.blocks, args.threads, args.calibration_samples) for order in ORDERS]
    run_rows(specs, __file__, result, save, jobs=1, threads=args.threads)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

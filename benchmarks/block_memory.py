# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Peak memory of pruning one decoder block with Mistral-7B's shapes, beyond the loaded model.

A one-block Mistral (hidden 4096, MLP 14336, 32 query / 8 key-value heads, vocabulary 32000) with random weights
is pruned block by block (what every block of the 7B model costs in turn) with the configuration given, on
windows of 2048 tokens, in a fresh process (``protocol.runner``). The extra peak (peak resident memory while
pruning minus the resident memory of the loaded model) is what one block adds; the 7B estimate adds it to the 7B
model's bytes::

    python benchmarks/block_memory.py                         # -> benchmarks/results/block_memory.{json,md}
    python benchmarks/block_memory.py --dtype bfloat16 --windows 4 --probe-windows 1
    python benchmarks/block_memory.py --seq-len 64 --windows 1 --out-dir /tmp/block_smoke   # smoke run
    python benchmarks/block_memory.py --render benchmarks/results/block_memory.json      # the table again
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from protocol.child import child_main, resident_memory
from protocol.runner import run_in_process
from protocol.splits import BENCHMARKS


__all__ = ["MISTRAL_7B", "MISTRAL_7B_PARAMETERS", "BlockSpec", "main", "prune_block", "to_markdown"]

MISTRAL_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
MISTRAL_7B_PARAMETERS = 7_241_732_096  # Mistral-7B-v0.3 has 7.25B parameters (bf16: 14.5 GB)
DEFAULT_CONFIG = '{"reconstruction": "admm", "reconstruction_iterations": 2, "layerwise": true}'


@dataclass(frozen=True)
class BlockSpec:
    """The measurement: the block's dtype, the calibration windows and probe windows, GradProbeConfig overrides."""

    kind: ClassVar[str] = "block"
    name: ClassVar[str] = "mistral-7b-block"
    dtype: str = "float32"
    windows: int = 2
    seq_len: int = 2048
    probe_windows: int = 1
    config: dict = dataclasses.field(default_factory=lambda: json.loads(DEFAULT_CONFIG))

    @property
    def label(self) -> str:
        return f"one Mistral-7B block, {self.dtype}, {self.windows} x {self.seq_len}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> BlockSpec:
        return cls(**values)

    def command(self) -> str:
        return (
            f"python benchmarks/block_memory.py --dtype {self.dtype} --windows {self.windows} --seq-len {self.seq_len} "
            f"--probe-windows {self.probe_windows} --config '{json.dumps(self.config)}'"
        )


def prune_block(spec: BlockSpec) -> dict:
    """Build the one-block model with random weights, prune it, and report the extra peak memory."""
    import time

    import torch
    from transformers import MistralConfig, MistralForCausalLM

    import hf_gradprobe as hg

    torch.manual_seed(0)
    dtype = getattr(torch, spec.dtype)
    config = MistralConfig(num_hidden_layers=1, **MISTRAL_7B)
    model = MistralForCausalLM(config).to(dtype)
    model.eval()
    block_bytes = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    windows = torch.randint(0, config.vocab_size, (spec.windows, spec.seq_len))
    before = resident_memory()
    settings = {
        "num_calibration_samples": spec.windows,
        "calibration_seq_len": spec.seq_len,
        "num_probe_samples": spec.probe_windows,
        "calibration_batch_size": 1,
        **spec.config,
    }
    start = time.perf_counter()
    _, report = hg.prune_pretrained(
        model, hg.GradProbeConfig(**settings), calibration=windows, return_report=True, progress=False
    )
    return {
        "spec": spec.to_dict(),
        "settings": settings,
        "block_bytes": block_bytes,
        "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "resident_before": before,
        "peak": report.peak_memory_bytes,
        "extra_bytes": report.peak_memory_bytes - before,
        "sparsity": report.sparsity,
        "seconds": time.perf_counter() - start,
    }


def to_markdown(row: dict) -> str:
    """The one-line table: block, loaded model, extra peak, extra per block, and the 7B estimate."""
    spec = BlockSpec.from_dict(row["spec"])
    gib = 2**30
    return (
        "\n".join(
            [
                (
                    "One Mistral-7B-shaped block pruned on "
                    f"{spec.windows} x {spec.seq_len}-token windows ({spec.dtype}, random weights, CPU, fresh process), "
                    f"settings {json.dumps(row['settings'])}."
                ),
                "",
                "| block | model loaded | extra peak while pruning | extra / block | 7B bf16 + extra |",
                "|---:|---:|---:|---:|---:|",
                (
                    f"| {row['block_bytes'] / gib:.2f} GiB | {row['model_bytes'] / gib:.2f} GiB | "
                    f"{row['extra_bytes'] / gib:.2f} GiB | {row['extra_bytes'] / row['block_bytes']:.2f} | "
                    f"{row['estimate_7b_bf16_bytes'] / gib:.1f} GiB |"
                ),
                "",
                f"Command: `{row.get('command', spec.command())}`; {row['seconds']:.0f} s.",
            ]
        )
        + "\n"
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--row-json" in argv:
        return child_main(argv, prune_block, BlockSpec)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--windows", type=int, default=2, help="calibration windows of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--probe-windows", type=int, default=1)
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help="GradProbeConfig overrides (JSON); ADMM's iteration count does not change the peak",
    )
    parser.add_argument("--out-dir", default=str(BENCHMARKS / "results"))
    parser.add_argument("--render", metavar="FILE.json", help="print the markdown of a saved result and exit")
    args = parser.parse_args(argv)
    if args.render:
        print(to_markdown(json.loads(Path(args.render).read_text())), end="")
        return 0
    spec = BlockSpec(args.dtype, args.windows, args.seq_len, args.probe_windows, json.loads(args.config))
    # The child's stderr passes through, so a failure shows its traceback.
    row, failure = run_in_process(
        lambda out: [sys.executable, __file__, "--row-json", json.dumps(spec.to_dict()), "--out", out],
        dict(os.environ),
    )
    if row is None:
        print(f"block_memory: the child failed ({failure})", file=sys.stderr)
        return 1
    row["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    # Hidden-state cache and activations scale with the dtype's size; Hessians and solver buffers stay fp32.
    row["estimate_7b_bf16_bytes"] = MISTRAL_7B_PARAMETERS * 2 + row["extra_bytes"]
    row["command"] = spec.command()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "block_memory.json").write_text(json.dumps(row, indent=2) + "\n")
    (out / "block_memory.md").write_text(to_markdown(row))
    print(to_markdown(row), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

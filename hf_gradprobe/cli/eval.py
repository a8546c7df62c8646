# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe eval MODEL --data PATH_OR_DATASET [--seq_len 1024]`: corpus perplexity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.runtime import peak_resident_memory
from .common import ModelArguments, add_command, check_data_flag, print_json


@dataclass
class EvalArguments:
    """The flags of `hf-gradprobe eval`."""

    data: str = field(metadata={"help": "Local .txt/.raw/.json(l)/.parquet file or a datasets name."})
    split: str = field(default="test", metadata={"help": "Split of a datasets name."})
    seq_len: int = field(default=1024, metadata={"help": "Tokens per window."})
    max_windows: int | None = field(default=None, metadata={"help": "Score only the first N windows."})
    stride: int | None = field(default=None, metadata={"help": "Sliding windows every STRIDE tokens."})
    batch_size: int = field(default=1, metadata={"help": "Windows per forward pass."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object."})


def register(subparsers) -> None:
    add_command(
        subparsers,
        "eval",
        (EvalArguments, ModelArguments),
        run,
        help="perplexity of a model on a corpus",
    )


def run(args, eval_args: EvalArguments, model_args: ModelArguments) -> int:
    from ..evaluation.perplexity import compute_perplexity
    from ..models import load_model

    check_data_flag(eval_args.data, "--data")  # before loading the model
    model, tokenizer = load_model(args.model, **asdict(model_args))
    result = compute_perplexity(
        model,
        tokenizer,
        eval_args.data,
        seq_len=eval_args.seq_len,
        max_windows=eval_args.max_windows,
        stride=eval_args.stride,
        batch_size=eval_args.batch_size,
        progress=not eval_args.json,
        split=eval_args.split,
    )
    if eval_args.json:
        print_json(
            {
                "model": args.model,
                "data": eval_args.data,
                **result.to_dict(),
                "peak_memory_bytes": peak_resident_memory(),
            }
        )
    else:
        print(
            f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
            f"({result.windows} windows x {result.seq_len}) in {result.seconds:.1f} s"
        )
    return 0

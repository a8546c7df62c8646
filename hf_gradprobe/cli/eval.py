# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe eval MODEL --data PATH_OR_DATASET [--seq_len 1024]`: corpus perplexity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.runtime import peak_resident_memory
from ..core.validation import check_int, describe_value
from .common import (
    ModelArguments,
    add_command,
    check_data_flag,
    check_model_source,
    perplexity_problem,
    print_json,
    raise_no_tokenizer,
)


def check_window_flags(prefix: str, seq_len, max_windows, stride=None, batch_size=1) -> None:
    """The window flags of ``eval`` (and ``prune --eval_*``, ``prefix='eval_'``), refused before any loading."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(
            f"`{prefix}seq_len` must be at least 2 tokens (an integer >= 2, the tokens per window), got "
            f"{describe_value(seq_len)}."
        )
    check_int(f"{prefix}max_windows", max_windows, minimum=1, allow_none=True, hint="windows to score; None: all")
    check_int(f"{prefix}stride", stride, minimum=1, allow_none=True, hint="tokens between window starts")
    check_int(f"{prefix}batch_size", batch_size, minimum=1, hint="windows per forward pass")


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

    def __post_init__(self):
        check_window_flags("", self.seq_len, self.max_windows, self.stride, self.batch_size)


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

    # Before loading the model: the data, and that the model folder has what evaluating needs.
    check_data_flag(eval_args.data, "--data")
    check_model_source(args.model, needs_tokenizer=True, why="`hf-gradprobe eval --data`")
    model, tokenizer = load_model(args.model, **asdict(model_args))
    if tokenizer is None:
        raise_no_tokenizer(args.model, "`hf-gradprobe eval --data`", "none could be loaded")
    result, overflow = None, False
    try:
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
    except OverflowError:  # exp() of a mean loss above ~709 nats
        overflow = True
    problem = perplexity_problem(
        result.perplexity if result else None, result.nll if result else None, overflow=overflow
    )
    if eval_args.json:
        print_json(
            {
                "model": args.model,
                "data": eval_args.data,
                **(result.to_dict() if result else {"perplexity": None}),
                **({"perplexity": None, "error": problem} if problem else {}),
                "peak_memory_bytes": peak_resident_memory(),
            }
        )
    if problem:
        raise ValueError(f"`model`={args.model!r} on `--data`={eval_args.data!r}: {problem}")
    if not eval_args.json:
        print(
            f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
            f"({result.windows} windows x {result.seq_len}) in {result.seconds:.1f} s"
        )
    return 0

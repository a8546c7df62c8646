# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe eval MODEL --data PATH_OR_DATASET [--seq_len 1024]`: corpus perplexity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.runtime import peak_resident_memory
from ..core.validation import check_count
from ..evaluation.data import check_data_source
from .common import (
    ModelArguments,
    add_command,
    check_model_source,
    check_window_positions,
    perplexity_problem,
    print_json,
    raise_no_tokenizer,
)


__all__ = ["EvalArguments", "check_window_flags", "register", "run"]


def check_window_flags(prefix: str, seq_len, max_windows, stride=None, batch_size=1) -> None:
    """Refuse the window flags of ``eval`` (and of ``prune --eval_*``) before anything is loaded.

    Args:
        prefix (`str`):
            What the flags' names start with: ``""`` for ``eval``, ``"eval_"`` for ``prune``.
        seq_len (`int`):
            Tokens per window, at least 2.
        max_windows (`int`, *optional*):
            Windows to score; ``None`` scores all.
        stride (`int`, *optional*):
            Tokens between window starts; ``None`` gives non-overlapping windows.
        batch_size (`int`, *optional*, defaults to 1):
            Windows per forward pass.
    """
    check_count(f"{prefix}seq_len", seq_len, minimum=2, unit="tokens", hint="the tokens per window")
    check_count(f"{prefix}max_windows", max_windows, unit="window", allow_none=True, hint="None: all")
    check_count(f"{prefix}stride", stride, unit="token", allow_none=True, hint="tokens between window starts")
    check_count(f"{prefix}batch_size", batch_size, unit="window", hint="windows per forward pass")


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
    """Add ``hf-gradprobe eval`` to ``subparsers``."""
    add_command(
        subparsers,
        "eval",
        (EvalArguments, ModelArguments),
        run,
        help="perplexity of a model on a corpus",
    )


def run(args, eval_args: EvalArguments, model_args: ModelArguments) -> int:
    """Measure the perplexity and print it; returns the exit code."""
    from ..evaluation.perplexity import compute_perplexity
    from ..models import load_model

    # Before loading the model: the data, and that the model folder has what evaluating needs.
    check_data_source(eval_args.data, "--data")
    check_model_source(args.model, needs_tokenizer=True, why="`hf-gradprobe eval --data`")
    check_window_positions(args.model, model_args, {"seq_len": eval_args.seq_len})
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

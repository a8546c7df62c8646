# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe eval MODEL --data PATH_OR_DATASET`: corpus perplexity."""

from __future__ import annotations

from .common import add_model_arguments, peak_rss_bytes, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="perplexity of a model on a corpus (non-overlapping windows)")
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="local .txt/.raw/.json(l)/.parquet file or a datasets name")
    parser.add_argument("--split", default="test", help="split of a datasets name (default: test)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per window (default: 1024)")
    parser.add_argument("--max-windows", type=int, default=None, help="score only the first N windows")
    parser.add_argument("--stride", type=int, default=None, help="sliding windows every STRIDE tokens")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation import compute_perplexity
    from ..models import load_model

    model, tokenizer = load_model(
        args.model, revision=args.revision, dtype=args.dtype, device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )
    result = compute_perplexity(
        model, tokenizer, args.data, seq_len=args.seq_len, max_windows=args.max_windows, stride=args.stride,
        batch_size=args.batch_size, progress=not args.json, split=args.split,
    )
    if args.json:
        print_json({"model": args.model, "data": args.data, **result.to_dict(), "peak_memory_bytes": peak_rss_bytes()})
    else:
        print(f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
              f"({result.windows} windows x {result.seq_len}) in {result.seconds:.1f} s")
    return 0

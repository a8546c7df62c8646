# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe prune MODEL --sparsity 0.5 --strategy wanda --calibration DATA --output DIR`."""

from __future__ import annotations

import dataclasses

from .common import add_model_arguments, peak_rss_bytes, print_json


# Config fields given dedicated spellings on the command line.
_SPECIAL = {"probe", "layerwise", "gradient_checkpointing", "targets", "ignore"}


def _add_config_arguments(parser) -> None:
    from ..config import GradProbeConfig

    group = parser.add_argument_group("pruning (GradProbeConfig fields)")
    for f in dataclasses.fields(GradProbeConfig):
        if f.name in _SPECIAL:
            continue
        kwargs = {"default": None, "help": f"{f.metadata.get('help', '')} (default: {f.default})"}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        kwargs["type"] = {int: int, float: float}.get(type(f.default), float if f.name == "gradient_threshold" else str)
        group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)
    group.add_argument("--no-probe", dest="probe", action="store_false", default=None,
                       help="plain strategy (the baseline), no gradient probing")
    group.add_argument("--layerwise", action="store_true", default=None,
                       help="probe decoder blocks in order, each pruned before the next")
    group.add_argument("--gradient-checkpointing", action="store_true", default=None,
                       help="recompute activations in backward (only when memory demands it)")
    group.add_argument("--targets", nargs="+", default=None, help="regexes of module names to prune")
    group.add_argument("--ignore", nargs="+", default=None, help="regexes of module names to keep dense")
    group.add_argument("--config", default=None, help="a gradprobe_config.json to start from")


def register(subparsers) -> None:
    parser = subparsers.add_parser("prune", help="one-shot pruning (magnitude/Wanda, with gradient probing)")
    add_model_arguments(parser)
    _add_config_arguments(parser)
    parser.add_argument("--calibration", default=None,
                        help="calibration text: local .txt/.raw/.json(l)/.parquet file or a datasets name")
    parser.add_argument("--output", default=None, help="folder to write the pruned model to (loadable, card included)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="push the pruned model to this Hub repo")
    parser.add_argument("--private", action="store_true", default=None, help="create the Hub repo as private")
    parser.add_argument("--eval-data", default=None, help="also report perplexity on this corpus after pruning")
    parser.add_argument("--eval-dense", action="store_true", help="with --eval-data: also the dense perplexity first")
    parser.add_argument("--eval-seq-len", type=int, default=1024)
    parser.add_argument("--eval-max-windows", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object (no progress bars)")
    parser.set_defaults(func=run)


def _config_from_args(args):
    from ..config import GradProbeConfig

    base = GradProbeConfig.from_pretrained(args.config) if args.config else GradProbeConfig()
    names = {f.name for f in dataclasses.fields(GradProbeConfig)}
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return dataclasses.replace(base, **overrides)


def run(args) -> int:
    from ..evaluation import compute_perplexity
    from ..models import load_model
    from ..pruning import prune_pretrained

    config = _config_from_args(args)
    model, tokenizer = load_model(
        args.model, revision=args.revision, dtype=args.dtype, device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
    )
    progress = not args.json
    evaluate = (lambda m: compute_perplexity(m, tokenizer, args.eval_data, seq_len=args.eval_seq_len,
                                             max_windows=args.eval_max_windows, progress=progress))
    before = evaluate(model).perplexity if (args.eval_data and args.eval_dense) else None
    model, report = prune_pretrained(model, config, calibration=args.calibration, tokenizer=tokenizer,
                                     return_report=True, progress=progress)
    after = evaluate(model) if args.eval_data else None
    report.perplexity_before = before
    report.perplexity_after = after.perplexity if after else None
    if after:
        report.extra["perplexity_eval"] = {"data": args.eval_data, "seq_len": args.eval_seq_len, "windows": after.windows}
    from ..card import format_command

    command = format_command(["hf-gradprobe", *args.argv], prefix="hf-gradprobe")  # token values redacted
    metadata = report.to_dict()
    if args.push_to_hub:
        from ..hub import push_to_hub

        # With --output the pushed folder is the one kept there: written once, committed once.
        push_to_hub(model, args.push_to_hub, tokenizer=tokenizer, metadata=metadata, command=command,
                    private=args.private, output_dir=args.output, overwrite=args.overwrite)
    elif args.output:
        from ..hub import save_pruned

        save_pruned(model, args.output, tokenizer=tokenizer, metadata=metadata, command=command, overwrite=args.overwrite)
    summary = {
        "model": args.model,
        "method": report.method,
        "sparsity": report.sparsity,
        "overall_sparsity": report.overall_sparsity,
        "target_sparsity": config.sparsity,
        "pattern": config.pattern,
        "layerwise": config.layerwise,
        "candidates": report.candidates,
        "restored": report.restored,
        "seconds": report.seconds,
        "peak_memory_bytes": report.peak_memory_bytes,
        "extra_memory_bytes": report.extra_memory_bytes,
        "process_peak_rss_bytes": peak_rss_bytes(),
        "perplexity_before": before,
        "perplexity": report.perplexity_after,
        "output": args.output,
    }
    if args.json:
        print_json(summary)
    else:
        print(f"{report.method}: sparsity {report.sparsity:.2%} of {sum(l['numel'] for l in report.layers):,} prunable "
              f"weights ({report.overall_sparsity:.2%} of all parameters) in {report.seconds:.1f} s, "
              f"peak memory {report.peak_memory_bytes / 2**20:.0f} MiB")
        if after:
            dense = f" (dense {before:.3f})" if before is not None else ""
            print(f"perplexity {after.perplexity:.3f}{dense} on {args.eval_data}, {after.windows} x {after.seq_len} tokens")
        if args.output:
            print(f"saved to {args.output}")
    return 0


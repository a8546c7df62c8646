# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe prune MODEL --target_sparsity 0.5 --strategy wanda --calibration DATA --output_dir DIR`.

The pruning flags are the fields of `GradProbeConfig`, the others those of `PruneArguments` and `ModelArguments`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import yaml

from ..core.runtime import peak_resident_memory
from ..oneshot.config import GradProbeConfig
from .common import ModelArguments, add_command, check_data_flag, print_json


@dataclass
class PruneArguments:
    """The flags of `hf-gradprobe prune` that are not `GradProbeConfig` fields."""

    calibration: str | None = field(
        default=None, metadata={"help": "Calibration text: a .txt/.raw/.json(l)/.parquet file or a datasets name."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Folder to save the pruned model to."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --output_dir."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Push the pruned model to this Hub repo.", "metavar": "REPO"}
    )
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    eval_data: str | None = field(default=None, metadata={"help": "Report perplexity on this corpus after pruning."})
    eval_dense: bool = field(
        default=False,
        metadata={
            "help": "With --eval_data: also measure the dense model before pruning (perplexity_before in the "
            "output, pruning_config.json and the card)."
        },
    )
    eval_seq_len: int = field(default=1024, metadata={"help": "Tokens per evaluation window."})
    eval_max_windows: int | None = field(default=None, metadata={"help": "Evaluate only the first N windows."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object (no progress bars)."})
    config: str | None = field(
        default=None,
        metadata={
            "help": "Start from this GradProbeConfig: a JSON/YAML file of its fields, or a pruned model's folder or "
            "pruning_config.json. Flags given override it."
        },
    )


def register(subparsers) -> None:
    add_command(
        subparsers,
        "prune",
        (GradProbeConfig, PruneArguments, ModelArguments),
        run,
        help="one-shot pruning (magnitude or Wanda, with gradient probing)",
        start=_config_file_values,
    )


def _config_file_values(args) -> dict | None:
    if not args.config:
        return None
    try:
        return GradProbeConfig.from_pretrained(args.config).to_dict()
    except (ValueError, OSError, yaml.YAMLError) as err:
        raise ValueError(f"--config {args.config}: {err}") from err


def run(args, config: GradProbeConfig, prune_args: PruneArguments, model_args: ModelArguments) -> int:
    from ..evaluation.perplexity import compute_perplexity
    from ..models import load_model
    from ..oneshot.prune import prune_pretrained
    from ..sharing import push_to_hub, save_pruned
    from ..sharing.redaction import format_command
    from ..sharing.save import check_output_dir

    # Everything cheap first: a bad folder or data path fails in a second, not after loading and pruning.
    if prune_args.output_dir is not None:
        check_output_dir(prune_args.output_dir, prune_args.overwrite, flag="--overwrite", name="--output_dir")
    check_data_flag(prune_args.calibration, "--calibration")
    check_data_flag(prune_args.eval_data, "--eval_data")
    if prune_args.eval_dense and not prune_args.eval_data:
        raise ValueError("`--eval_dense` measures the dense perplexity on `--eval_data`: pass `--eval_data DATA` too.")

    model, tokenizer = load_model(args.model, **asdict(model_args))
    progress = not prune_args.json

    def evaluate(model):
        return compute_perplexity(
            model,
            tokenizer,
            prune_args.eval_data,
            seq_len=prune_args.eval_seq_len,
            max_windows=prune_args.eval_max_windows,
            progress=progress,
        )

    before = evaluate(model).perplexity if (prune_args.eval_data and prune_args.eval_dense) else None
    model, report = prune_pretrained(
        model, config, calibration=prune_args.calibration, tokenizer=tokenizer, return_report=True, progress=progress
    )
    after, eval_error = None, None
    if prune_args.eval_data:
        try:
            after = evaluate(model)
        except Exception as err:  # noqa: BLE001 - the pruned model is saved first, then the error is reported
            eval_error = err
    report.perplexity_before = before
    report.perplexity_after = after.perplexity if after else None
    if after:
        report.extra["perplexity_eval"] = {
            "data": prune_args.eval_data,
            "seq_len": prune_args.eval_seq_len,
            "windows": after.windows,
        }
    command = format_command(["hf-gradprobe", *args.argv], prefix="hf-gradprobe")  # token values redacted
    metadata = report.to_dict()
    if prune_args.push_to_hub:
        # With --output_dir the pushed folder is the one kept there: written once, committed once.
        push_to_hub(
            model,
            prune_args.push_to_hub,
            tokenizer=tokenizer,
            metadata=metadata,
            command=command,
            private=prune_args.private or None,  # None: the Hub's default visibility
            output_dir=prune_args.output_dir,
            overwrite=prune_args.overwrite,
        )
    elif prune_args.output_dir:
        save_pruned(
            model,
            prune_args.output_dir,
            tokenizer=tokenizer,
            metadata=metadata,
            command=command,
            overwrite=prune_args.overwrite,
        )
    if eval_error is not None:
        where = prune_args.output_dir or prune_args.push_to_hub
        message = f"--eval_data {prune_args.eval_data}: evaluating the pruned model failed ({eval_error})" + (
            f"; the pruned model was saved to {where}." if where else "; nothing was saved (no --output_dir)."
        )
        try:
            raised = type(eval_error)(message)
        except Exception:  # noqa: BLE001 - an exception type that takes other arguments
            raised = RuntimeError(message)
        raise raised from eval_error
    summary = {
        "model": args.model,
        "method": report.method,
        "sparsity": report.sparsity,
        "overall_sparsity": report.overall_sparsity,
        "target_sparsity": config.target_sparsity,
        "pattern": config.pattern,
        "layerwise": config.layerwise,
        "candidates": report.candidates,
        "restored": report.restored,
        "seconds": report.seconds,
        "peak_memory_bytes": report.peak_memory_bytes,
        "extra_memory_bytes": report.extra_memory_bytes,
        "process_peak_rss_bytes": peak_resident_memory(),
        "perplexity_before": before,
        "perplexity": report.perplexity_after,
        "output_dir": prune_args.output_dir,
    }
    if prune_args.json:
        print_json(summary)
    else:
        print(
            f"{report.method}: sparsity {report.sparsity:.2%} of {sum(layer['numel'] for layer in report.layers):,} prunable "
            f"weights ({report.overall_sparsity:.2%} of all parameters) in {report.seconds:.1f} s, "
            f"peak memory {report.peak_memory_bytes / 2**20:.0f} MiB"
        )
        if after:
            dense = f" (dense {before:.3f})" if before is not None else ""
            print(
                f"perplexity {after.perplexity:.3f}{dense} on {prune_args.eval_data}, "
                f"{after.windows} x {after.seq_len} tokens"
            )
        if prune_args.output_dir:
            print(f"saved to {prune_args.output_dir}")
    return 0

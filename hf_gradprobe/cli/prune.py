# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`hf-gradprobe prune MODEL --target_sparsity 0.5 --strategy wanda --calibration DATA --output_dir DIR`.

The pruning flags are the fields of `GradProbeConfig`, the others those of `PruneArguments` and `ModelArguments`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import yaml

from ..core.runtime import peak_resident_memory
from ..evaluation.data import check_data_source
from ..oneshot.config import GradProbeConfig
from .common import (
    ModelArguments,
    add_command,
    check_model_source,
    check_window_positions,
    check_writable_output_dir,
    perplexity_problem,
    print_json,
    raise_no_tokenizer,
)
from .eval import check_window_flags


__all__ = ["PruneArguments", "register", "run"]


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

    def __post_init__(self):
        check_window_flags("eval_", self.eval_seq_len, self.eval_max_windows)


def register(subparsers) -> None:
    """Add ``hf-gradprobe prune`` to ``subparsers``."""
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
    except RecursionError:
        raise ValueError(
            f"`--config`={args.config!r} is nested too deeply to be a GradProbeConfig file: pass a flat JSON/YAML "
            "mapping of GradProbeConfig fields (e.g. `target_sparsity: 0.5`), or a pruned model's folder."
        ) from None
    except (ValueError, OSError, yaml.YAMLError) as err:
        raise ValueError(f"--config {args.config}: {err}") from err


def _save_and_push(model, tokenizer, metadata: dict, command: str, prune_args: PruneArguments, token: str):
    """Save the pruned model (to ``--output_dir``, else a temporary folder), then push that folder. A failed push
    never loses the pruning: the error names the folder the model is kept in."""
    from ..sharing import save_pruned
    from ..sharing.push import PushToHubError, push_folder_to_hub

    repo = prune_args.push_to_hub
    holder = None
    if prune_args.output_dir is not None:
        target = prune_args.output_dir
    else:
        holder = tempfile.mkdtemp(prefix="hf_gradprobe-push-")
        target = os.path.join(holder, repo.split("/")[-1])
    try:
        folder = save_pruned(
            model,
            target,
            tokenizer=tokenizer,
            metadata=metadata,
            command=command,
            overwrite=prune_args.overwrite,
            repo_id=repo,
        )
    except BaseException:
        if holder is not None:
            shutil.rmtree(holder, ignore_errors=True)
        raise
    try:
        # With --output_dir the pushed folder is the one kept there: written once, committed once.
        push_folder_to_hub(folder, repo, private=prune_args.private or None, token=token)  # None: Hub default
    except Exception as err:
        kept = (
            f"The pruned model is kept in the temporary folder {os.fspath(folder)!r}: move it somewhere safe, then "
            f"push it with `hf upload {repo} FOLDER`."
            if holder is not None
            else f"The pruned model is saved in {os.fspath(folder)!r}: push it with `hf upload {repo} {folder}`."
        )
        raise PushToHubError(f"{err} {kept}") from err
    if holder is not None:
        shutil.rmtree(holder, ignore_errors=True)
    return folder


def run(args, config: GradProbeConfig, prune_args: PruneArguments, model_args: ModelArguments) -> int:
    """Prune, evaluate, save and push as the flags say; returns the exit code."""
    from ..evaluation.perplexity import compute_perplexity
    from ..models import load_model
    from ..oneshot.prune import prune_pretrained
    from ..sharing import save_pruned
    from ..sharing.push import check_push_target
    from ..sharing.redaction import format_command
    from ..sharing.save import check_output_dir

    # Everything cheap first: a bad flag, folder, repo, token or data path fails in a second, not after loading
    # and pruning (an hour on a 7B model) with nothing saved.
    token = None
    if prune_args.push_to_hub is not None:
        token = check_push_target(prune_args.push_to_hub, name="--push_to_hub")
    if prune_args.output_dir is not None:
        check_output_dir(prune_args.output_dir, prune_args.overwrite, flag="--overwrite", name="--output_dir")
        check_writable_output_dir(prune_args.output_dir, name="--output_dir")
    for flag, value in (("--calibration", prune_args.calibration), ("--eval_data", prune_args.eval_data)):
        if value is not None:
            check_data_source(value, flag)
    if prune_args.eval_dense and not prune_args.eval_data:
        raise ValueError("`--eval_dense` measures the dense perplexity on `--eval_data`: pass `--eval_data DATA` too.")
    needs_calibration = config.needs_calibration
    if needs_calibration and prune_args.calibration is None:
        raise ValueError(
            f"`--calibration` is required for --strategy {config.strategy} with --probe {str(config.probe).lower()} "
            f"and --reconstruction {config.reconstruction}: pass a text/JSON(L)/parquet file or a datasets name "
            "(data-free pruning: --strategy magnitude --probe false --reconstruction none)."
        )
    text_flags = " and ".join(
        flag for flag, value in (("--calibration", needs_calibration), ("--eval_data", prune_args.eval_data)) if value
    )
    why = f"`hf-gradprobe prune {text_flags}`"
    check_model_source(args.model, needs_tokenizer=bool(text_flags), why=why)
    windows = {"calibration_seq_len": config.calibration_seq_len} if needs_calibration else {}
    if prune_args.eval_data:
        windows["eval_seq_len"] = prune_args.eval_seq_len
    check_window_positions(args.model, model_args, windows)

    model, tokenizer = load_model(args.model, **asdict(model_args))
    if text_flags and tokenizer is None:
        raise_no_tokenizer(args.model, why, "none could be loaded")
    progress = not prune_args.json

    def evaluate(model, which: str):
        try:
            result = compute_perplexity(
                model,
                tokenizer,
                prune_args.eval_data,
                seq_len=prune_args.eval_seq_len,
                max_windows=prune_args.eval_max_windows,
                progress=progress,
            )
        except OverflowError:  # exp() of a mean loss above ~709 nats
            raise ValueError(
                f"`--eval_data`={prune_args.eval_data!r}, {which}: {perplexity_problem(None, overflow=True)}"
            ) from None
        problem = perplexity_problem(result.perplexity, result.nll)
        if problem:
            raise ValueError(f"`--eval_data`={prune_args.eval_data!r}, {which}: {problem}")
        return result

    before = (
        evaluate(model, "the dense model").perplexity if (prune_args.eval_data and prune_args.eval_dense) else None
    )
    model, report = prune_pretrained(
        model, config, calibration=prune_args.calibration, tokenizer=tokenizer, return_report=True, progress=progress
    )
    after, eval_error = None, None
    if prune_args.eval_data:
        try:
            after = evaluate(model, "the pruned model")
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
    command = format_command(["hf-gradprobe", *args.argv], prefix="hf-gradprobe")  # secret values redacted
    metadata = report.to_dict()
    if prune_args.push_to_hub:
        _save_and_push(model, tokenizer, metadata, command, prune_args, token)
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

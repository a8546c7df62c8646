# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Prune SmolLM2-135M-Instruct, write its model card, and push it to the Hub.

    # log in once (or set HF_TOKEN), then:
    python examples/prune_and_push.py USER/SmolLM2-135M-Instruct-pruned-50
    python examples/prune_and_push.py USER/SmolLM2-135M-Instruct-2of4 --pattern 2:4 --private

    # offline: write the folder that would be pushed, push nothing
    python examples/prune_and_push.py USER/SmolLM2-135M-Instruct-pruned-50 --dry-run --output ./smollm2-pruned

The folder holds safetensors weights that stock Transformers loads, the tokenizer, README.md (the model
card), pruning_config.json and sparsity_per_layer.png (a per-layer plot, written only when something differs
between layers). Perplexity is measured before and after pruning on
WikiText-2 test windows and goes into the card's model-index.
"""

import argparse
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo_id", help="Hub repo to push to, e.g. 'username/SmolLM2-135M-Instruct-pruned-50'")
    parser.add_argument("--model", default="smollm2-135m", help="model to prune (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--target-sparsity", type=float, default=0.5, help="fraction of prunable weights to zero")
    parser.add_argument("--pattern", default="unstructured", help="'unstructured' or 'N:M', e.g. 2:4")
    parser.add_argument("--strategy", default=None, help="pruning strategy (default: the library's)")
    parser.add_argument("--no-probe", action="store_true", help="plain strategy, no gradient probe")
    parser.add_argument(
        "--calibration",
        default=str(SHARED_DATA / "wikitext-2" / "valid.txt"),
        help="calibration text (file or datasets name)",
    )
    parser.add_argument("--num-calibration-samples", type=int, default=None)
    parser.add_argument("--calibration-seq-len", type=int, default=None)
    parser.add_argument("--num-probe-samples", type=int, default=None, help="calibration windows the probe uses")
    parser.add_argument(
        "--eval-data",
        default=str(SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"),
        help="perplexity data; 'none' to skip the evaluation",
    )
    parser.add_argument("--eval-seq-len", type=int, default=1024)
    parser.add_argument("--eval-windows", type=int, default=32, help="windows scored before and after pruning")
    parser.add_argument("--output", default=None, help="keep the folder here (required with --dry-run)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    parser.add_argument("--dry-run", action="store_true", help="write the folder, do not push")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument(
        "--create-pr", action="store_true", help="open a pull request instead of pushing to the branch"
    )
    parser.add_argument("--license", default=None, help="card license (default: apache-2.0 for SmolLM2)")
    args = parser.parse_args(argv)
    if args.dry_run and not args.output:
        parser.error("--dry-run needs --output: the folder to write instead of pushing.")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_gradprobe import prune_pretrained, push_to_hub, save_pruned
    from hf_gradprobe.evaluation import compute_perplexity
    from hf_gradprobe.models import DEFAULT_MODEL, load_model
    from hf_gradprobe.sharing.redaction import format_command

    command = format_command(
        sys.argv if argv is None else ["prune_and_push.py", *argv], prefix="python examples/prune_and_push.py"
    )
    model, tokenizer = load_model(args.model)

    evaluate = args.eval_data.lower() != "none"

    def perplexity():
        return compute_perplexity(
            model, tokenizer, args.eval_data, seq_len=args.eval_seq_len, max_windows=args.eval_windows
        )

    before = perplexity() if evaluate else None
    overrides = {"target_sparsity": args.target_sparsity, "pattern": args.pattern}
    if args.strategy:
        overrides["strategy"] = args.strategy
    if args.no_probe:
        overrides["probe"] = False
    if args.num_calibration_samples:
        overrides["num_calibration_samples"] = args.num_calibration_samples
    if args.calibration_seq_len:
        overrides["calibration_seq_len"] = args.calibration_seq_len
    if args.num_probe_samples:
        overrides["num_probe_samples"] = args.num_probe_samples
    model = prune_pretrained(model, calibration=args.calibration, tokenizer=tokenizer, **overrides)
    after = perplexity() if evaluate else None

    metadata = model.pruning_report.to_dict()
    if evaluate:
        metadata.update(
            perplexity_before=before.perplexity,
            perplexity_after=after.perplexity,
            # "wikitext-2-raw/wiki.test.raw" rather than a path on this machine; the card maps it to the Hub dataset.
            perplexity_eval={
                "data": "/".join(Path(args.eval_data).parts[-2:]) if Path(args.eval_data).exists() else args.eval_data,
                "seq_len": args.eval_seq_len,
                "windows": after.windows,
            },
        )
        print(f"perplexity {before.perplexity:.2f} -> {after.perplexity:.2f} ({after.windows} windows)")
    license_ = args.license or ("apache-2.0" if args.model == DEFAULT_MODEL else None)
    card_data = {"license": license_, "language": ["en"] if args.model == DEFAULT_MODEL else None}
    card_data = {k: v for k, v in card_data.items() if v}

    if args.dry_run:
        folder = save_pruned(
            model,
            args.output,
            tokenizer=tokenizer,
            metadata=metadata,
            command=command,
            overwrite=args.overwrite,
            repo_id=args.repo_id,
            card_data=card_data,
        )
        print(f"dry run: wrote {folder}; push it later with `hf upload {args.repo_id} {folder} .`")
        return 0
    info = push_to_hub(
        model,
        args.repo_id,
        tokenizer=tokenizer,
        metadata=metadata,
        command=command,
        private=args.private or None,
        revision=args.revision,
        create_pr=args.create_pr,
        output_dir=args.output,
        overwrite=args.overwrite,
        card_data=card_data,
    )
    print(f"pushed: {info.pr_url or info.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Prune a causal LM, recover it with `PruningTrainer`, evaluate it and save it with its model card.

The default recipe (the project's best, measured in `benchmarks/training.py --parts finetune`): one-shot pruning
with the default `GradProbeConfig()` (Wanda candidates + ADMM reconstruction, calibrated on WikiText-2 valid),
then fine-tuning that keeps exactly those zeros (`fixed` masks), then perplexity, then `save_pruned` (weights,
tokenizer, `pruning_config.json`, README.md card)::

    # SmolLM2-135M-Instruct (the packaged GGUF, offline) to 50%, 100 recovery steps, saved to out/recover/pruned
    python examples/train_with_pruning.py --output_dir out/recover --max_steps 100 --target_sparsity 0.5

    # a quick run: 2 steps, 4 calibration windows, 2 evaluation windows
    python examples/train_with_pruning.py --output_dir /tmp/recover --max_steps 2 --num_calibration_samples 4 \
        --eval_windows 2 --per_device_train_batch_size 1 --seq_len 64 --use_cpu

    # pruning while training instead (no one-shot step): bitter7 to 50% with the cubic ramp
    python examples/train_with_pruning.py --output_dir out/bitter7 --max_steps 500 --one_shot false \
        --pruning_method bitter7 --pruning_target_sparsity 0.5

    # 2 CPU processes (gloo; drop the last line on GPUs): the masks are identical on every rank
    torchrun --nproc_per_node 2 examples/train_with_pruning.py --output_dir out/ddp --max_steps 100 \
        --use_cpu --ddp_backend gloo

Every `GradProbeConfig` flag (`--pattern 2:4`, `--strategy magnitude`...) and every
`PruningTrainingArguments` / `TrainingArguments` flag works (`--learning_rate`, `--report_to tensorboard`,
`--resume_from_checkpoint ...`). With `--one_shot` (the default) the recovery keeps the one-shot zeros: the
training method is `fixed` whatever `--pruning_method` says. The pruned model is saved to `--model_dir`
(default `OUTPUT_DIR/pruned`); the Trainer's checkpoints stay in `--output_dir`.
"""

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_gradprobe import (
    GradProbeConfig,
    compute_perplexity,
    load_model,
    measure_sparsity,
    prune_pretrained,
    save_pruned,
)
from hf_gradprobe.evaluation.data import tokenize_corpus
from hf_gradprobe.models import DEFAULT_MODEL
from hf_gradprobe.sharing.redaction import format_command
from hf_gradprobe.training import PruningTrainer, PruningTrainingArguments


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class ScriptArguments:
    model: str = field(default="smollm2-135m", metadata={"help": "Model folder, Hub id or 'smollm2-135m'."})
    one_shot: bool = field(
        default=True,
        metadata={"help": "Prune once with `prune_pretrained` (the GradProbeConfig flags) and keep those zeros."},
    )
    calibration: str = field(
        default=str(SHARED_DATA / "wikitext-2" / "valid.txt"),
        metadata={"help": "Calibration text of the one-shot step (file or dataset)."},
    )
    train_file: str = field(
        default=str(SHARED_DATA / "wikitext-2" / "valid.txt"), metadata={"help": "Training text (file or dataset)."}
    )
    seq_len: int = field(default=256, metadata={"help": "Tokens per training window."})
    eval_file: str = field(
        default=str(SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"),
        metadata={"help": "Held-out text for perplexity ('none' to skip)."},
    )
    eval_seq_len: int = field(default=1024, metadata={"help": "Tokens per evaluation window."})
    eval_windows: int = field(default=32, metadata={"help": "Evaluation windows (the first ones of eval_file)."})
    eval_dense: bool = field(default=False, metadata={"help": "Also evaluate the dense model (the card's 'before')."})
    model_dir: str | None = field(default=None, metadata={"help": "Where the pruned model goes (OUTPUT_DIR/pruned)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a model saved at model_dir before."})


class TokenWindows(torch.utils.data.Dataset):
    """Consecutive windows of a token stream, labels = inputs (the model shifts them)."""

    def __init__(self, ids: torch.Tensor, seq_len: int):
        count = len(ids) // seq_len
        self.windows = ids[: count * seq_len].reshape(count, seq_len)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return {"input_ids": self.windows[i], "labels": self.windows[i]}


def main(argv=None) -> dict:
    parser = HfArgumentParser((ScriptArguments, GradProbeConfig, PruningTrainingArguments))
    script, config, args = parser.parse_args_into_dataclasses(args=argv)
    command = format_command(
        sys.argv if argv is None else ["train_with_pruning.py", *argv], prefix="python examples/train_with_pruning.py"
    )
    model, tokenizer = load_model(script.model, dtype=torch.float32)
    evaluate = script.eval_file.lower() != "none"

    def perplexity():
        return compute_perplexity(
            model, tokenizer, script.eval_file, seq_len=script.eval_seq_len, max_windows=script.eval_windows
        )

    summary = {"dense_perplexity": perplexity().perplexity if evaluate and script.eval_dense else None}
    if script.one_shot:
        # 1. prune: the zeros and the reconstructed kept weights of the one-shot recipe.
        model = prune_pretrained(model, config, calibration=script.calibration, tokenizer=tokenizer)
        summary["one_shot_sparsity"] = model.pruning_report.sparsity
        summary["one_shot_perplexity"] = perplexity().perplexity if evaluate else None
        args.pruning_method = "fixed"  # 2. recover: fine-tune keeping exactly those zeros

    train_ids = tokenize_corpus(tokenizer, script.train_file)
    trainer = PruningTrainer(
        model=model, args=args, train_dataset=TokenWindows(train_ids, script.seq_len), processing_class=tokenizer
    )
    output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return summary
    model = trainer.model
    report = measure_sparsity(model)
    print(report.to_markdown())

    # 3. evaluate.
    after = perplexity() if evaluate else None
    summary.update(sparsity=report.sparsity, perplexity=after.perplexity if after else None)

    # 4. save with the card: the one-shot report (method, config, calibration) plus the recovery and perplexity.
    if script.one_shot:
        metadata = model.pruning_report.to_dict()
    else:
        metadata = {
            "method": args.pruning_method,
            "config": {"target_sparsity": args.pruning_target_sparsity, "pattern": "unstructured"},
        }
    metadata["training"] = {
        "pruning_method": args.pruning_method,
        "max_steps": trainer.state.global_step,
        "train_file": "/".join(Path(script.train_file).parts[-2:]),
        "tokens": trainer.state.global_step * args.per_device_train_batch_size * script.seq_len * args.world_size,
        "learning_rate": args.learning_rate,
        "train_loss": output.training_loss,
        "one_shot_perplexity": summary.get("one_shot_perplexity"),
    }
    if after is not None:
        metadata.update(
            perplexity_before=summary["dense_perplexity"],
            perplexity_after=after.perplexity,
            perplexity_eval={
                "data": "/".join(Path(script.eval_file).parts[-2:])
                if Path(script.eval_file).exists()
                else script.eval_file,
                "seq_len": script.eval_seq_len,
                "windows": after.windows,
            },
        )
    card_data = {"license": "apache-2.0", "language": ["en"]} if script.model == DEFAULT_MODEL else None
    folder = save_pruned(
        model,
        script.model_dir or str(Path(args.output_dir) / "pruned"),
        tokenizer=tokenizer,
        metadata=metadata,
        command=command,
        overwrite=script.overwrite,
        card_data=card_data,
    )
    summary["model_dir"] = str(folder)
    if after is not None and not math.isfinite(after.perplexity):
        print(f"warning: the perplexity is {after.perplexity}", file=sys.stderr)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Train (or fine-tune) a causal LM while pruning it to a target sparsity with `PruningTrainer`.

    # bitter7 to 50% while fine-tuning SmolLM2-135M on WikiText-2 (valid split as training text)
    python examples/train_with_pruning.py --output_dir out/bitter7 --max_steps 500 \
        --pruning_method bitter7 --pruning_target_sparsity 0.5

    # recovery after one-shot pruning: prune once, then fine-tune keeping exactly those zeros
    python examples/train_with_pruning.py --output_dir out/recover --max_steps 200 \
        --one_shot_target_sparsity 0.5 --pruning_method fixed

    # 2 CPU processes (gloo; drop the last line on GPUs): the masks are identical on every rank
    torchrun --nproc_per_node 2 examples/train_with_pruning.py --output_dir out/ddp --max_steps 100 \
        --use_cpu --ddp_backend gloo

Every `PruningTrainingArguments` / `TrainingArguments` flag works (`--pruning_schedule cubic`,
`--pruning_start_step 0.1`, `--report_to tensorboard`, `--resume_from_checkpoint ...`). The held-out
perplexity and the sparsity report are printed at the end and the pruned model is saved to `output_dir`.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_gradprobe import compute_perplexity, load_model, measure_sparsity, prune_pretrained
from hf_gradprobe.evaluation.data import tokenize_corpus
from hf_gradprobe.training import PruningTrainer, PruningTrainingArguments


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class ScriptArguments:
    model: str = field(default="smollm2-135m", metadata={"help": "Model folder, Hub id or 'smollm2-135m'."})
    train_file: str = field(
        default=str(SHARED_DATA / "wikitext-2" / "valid.txt"), metadata={"help": "Training text (file or dataset)."}
    )
    eval_file: str = field(
        default=str(SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"),
        metadata={"help": "Held-out text for perplexity ('none' to skip)."},
    )
    seq_len: int = field(default=256, metadata={"help": "Tokens per training and evaluation window."})
    eval_windows: int = field(default=32, metadata={"help": "Evaluation windows scored at the end."})
    one_shot_target_sparsity: float | None = field(
        default=None, metadata={"help": "Prune once with `prune_pretrained` (magnitude) before training."}
    )


class TokenWindows(torch.utils.data.Dataset):
    """Consecutive windows of a token stream, labels = inputs (the model shifts them)."""

    def __init__(self, ids: torch.Tensor, seq_len: int):
        count = len(ids) // seq_len
        self.windows = ids[: count * seq_len].reshape(count, seq_len)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return {"input_ids": self.windows[i], "labels": self.windows[i]}


def main():
    script, args = HfArgumentParser((ScriptArguments, PruningTrainingArguments)).parse_args_into_dataclasses()
    model, tokenizer = load_model(script.model, dtype=torch.float32)
    if script.one_shot_target_sparsity is not None:
        model = prune_pretrained(
            model,
            target_sparsity=script.one_shot_target_sparsity,
            strategy="magnitude",
            probe=False,
            tokenizer=tokenizer,
            progress=False,
        )
    train_ids = tokenize_corpus(tokenizer, script.train_file)
    trainer = PruningTrainer(
        model=model, args=args, train_dataset=TokenWindows(train_ids, script.seq_len), processing_class=tokenizer
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return
    report = measure_sparsity(trainer.model)
    print(report.to_markdown())
    if script.eval_file != "none":
        result = compute_perplexity(
            trainer.model, tokenizer, script.eval_file, seq_len=script.seq_len, max_windows=script.eval_windows
        )
        print(f"held-out perplexity: {result.perplexity:.3f} over {result.tokens} tokens")
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()

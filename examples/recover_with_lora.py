# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Prune once, recover with LoRA, merge without losing a zero: one-shot pruning -> TRL SFT -> merged sparse model.

    # SmolLM2-135M (packaged, offline) to 50%, 20 LoRA steps on WikiText-2, merged into out/lora-recovered
    python examples/recover_with_lora.py --output_dir out/lora-recovered

    # any local model folder, longer recovery
    python examples/recover_with_lora.py --model path/to/model --max_steps 500 --target_sparsity 0.5

Steps: `hf_gradprobe.prune_pretrained` (GradProbe-Wanda, calibration on the training text) -> LoRA adapters on
every Linear with `peft` -> `trl.SFTTrainer` with `PruningCallback("fixed")` (the frozen base keeps its zeros,
the callback logs `pruning/*` to every `report_to` backend) -> `merge_lora_and_keep_zeros` (a merged LoRA
update is dense: the zeros are restored) -> `measure_sparsity`, which must equal the one-shot sparsity exactly.
Needs `pip install peft trl`.
"""

import argparse
from pathlib import Path

import torch

from hf_gradprobe import load_model, measure_sparsity, prune_pretrained
from hf_gradprobe.training import PruningCallback, merge_lora_and_keep_zeros


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="Model folder, Hub id or 'smollm2-135m'.")
    parser.add_argument("--train_file", default=str(SHARED_DATA / "wikitext-2" / "valid.txt"), help="Training text.")
    parser.add_argument("--output_dir", default="out/lora-recovered", help="Where the merged model is saved.")
    parser.add_argument("--target_sparsity", type=float, default=0.5, help="One-shot sparsity.")
    parser.add_argument("--num_calibration_samples", type=int, default=16, help="Calibration windows.")
    parser.add_argument("--calibration_seq_len", type=int, default=128, help="Tokens per calibration window.")
    parser.add_argument("--no_probe", action="store_true", help="Plain Wanda, without the gradient probe.")
    parser.add_argument("--max_steps", type=int, default=20, help="LoRA optimizer steps (tiny by default).")
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=128, help="Tokens per training example.")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--lora_alpha", type=int, default=32)
    parser.add_argument("--report_to", default="none", help="e.g. tensorboard")
    parser.add_argument("--use_cpu", action="store_true")
    return parser.parse_args(argv)


def text_chunks(path: str, chars: int, count: int) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    return [text[i : i + chars] for i in range(0, min(len(text), chars * count), chars) if text[i : i + chars].strip()]


def main(argv=None):
    args = parse_args(argv)
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_model(args.model, dtype=torch.float32)
    model = prune_pretrained(
        model,
        tokenizer=tokenizer,
        calibration=args.train_file,
        target_sparsity=args.target_sparsity,
        num_calibration_samples=args.num_calibration_samples,
        calibration_seq_len=args.calibration_seq_len,
        num_probe_samples=min(8, args.num_calibration_samples),
        probe=not args.no_probe,
        progress=False,
    )
    pruned = measure_sparsity(model).sparsity
    print(f"one-shot sparsity: {pruned:.4%}")

    peft_model = get_peft_model(
        model,
        LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    texts = text_chunks(args.train_file, chars=4 * args.max_length, count=args.max_steps * args.batch_size)
    trainer = SFTTrainer(
        model=peft_model,
        args=SFTConfig(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            logging_steps=max(1, args.max_steps // 10),
            max_length=args.max_length,
            report_to=args.report_to,
            save_strategy="no",
            use_cpu=args.use_cpu,
        ),
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
        callbacks=[PruningCallback("fixed")],
    )
    trainer.train()

    merged = merge_lora_and_keep_zeros(trainer.model)
    report = measure_sparsity(merged)
    print(report.to_markdown())
    if report.sparsity != pruned:
        raise SystemExit(f"sparsity changed: {pruned:.6%} after one-shot pruning, {report.sparsity:.6%} merged")
    merged.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"merged model with {report.sparsity:.4%} sparsity saved to {args.output_dir}")


if __name__ == "__main__":
    main()

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Launched by test_training_ddp.py on 2 CPU processes (gloo): trains with PruningTrainer and writes, per rank,
the masks, the final weights and how many mask entries the rank chose differently from rank 0."""

import sys
from pathlib import Path

import torch

import hf_gradprobe


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testing_utils import TINY_VOCAB_SIZE, leave_process_group, make_tiny_gpt2

from hf_gradprobe.training import PruningTrainer, PruningTrainingArguments


def main(output_dir: str) -> None:
    torch.set_num_threads(1)
    model = make_tiny_gpt2(seed=0)
    generator = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, TINY_VOCAB_SIZE, (64, 1), generator=generator) + torch.arange(16)) % TINY_VOCAB_SIZE
    train_dataset = [{"input_ids": row, "labels": row} for row in ids]
    args = PruningTrainingArguments(
        output_dir=output_dir,
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        use_cpu=True,
        ddp_backend="gloo",
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=4,
        seed=0,
        pruning_method="bitter7",
        pruning_target_sparsity=0.5,
        pruning_start_step=2,
        pruning_end_step=10,
        pruning_frequency=2,
        pruning_sample_fraction=0.25,  # the seeded sampled threshold, not the exact one
    )
    trainer = PruningTrainer(model=model, args=args, train_dataset=train_dataset)
    trainer.train()
    callback = trainer.pruning_callback
    rank = torch.distributed.get_rank()
    torch.save(
        {
            "world_size": torch.distributed.get_world_size(),
            "masks": [mask.cpu() for mask in callback.masks],
            "weights": {name: p.detach().cpu() for name, p in trainer.model.named_parameters()},
            "rank_disagreements": callback.rank_disagreements,
            "mask_updates": callback.mask_updates,
            "sparsity": callback.sparsity,
            "threshold": callback.threshold,
            "package": hf_gradprobe.__file__,
        },
        f"{output_dir}/rank{rank}.pt",
    )
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Launched by test_training_resume_safety.py on 2 CPU processes (gloo) with FSDP2: refused resumes stop every rank.

``OUT``: a `PruningTrainer` run saves per-rank pruning states at step 4; then, each from a copy of that checkpoint,
(a) rank 1's file is made unreadable and (b) the intact checkpoint is resumed with a lower target than its masks
reached. Each rank writes the error it raised (or "no error") to ``OUT/<case>_rank<r>.txt``; no rank may hang.
"""

import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from testing_utils import TINY_VOCAB_SIZE, leave_process_group
from training_fsdp_script import enable_fsdp_on_cpu, make_model

from hf_gradprobe.training import PruningTrainer, PruningTrainingArguments
from hf_gradprobe.training.state import sharded_state_name


def main(output_dir: str) -> None:
    enable_fsdp_on_cpu()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, TINY_VOCAB_SIZE, (64, 1), generator=generator) + torch.arange(16)) % TINY_VOCAB_SIZE
    train_dataset = [{"input_ids": row, "labels": row} for row in ids]

    def trainer(folder: str, **overrides) -> PruningTrainer:
        options = {
            "output_dir": folder,
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 3e-3,
            "use_cpu": True,
            "ddp_backend": "gloo",
            "report_to": [],
            "save_strategy": "steps",
            "save_steps": 4,
            "disable_tqdm": True,
            "seed": 0,
            "fsdp": "full_shard",
            "fsdp_config": {
                "version": 2,
                "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                "state_dict_type": "SHARDED_STATE_DICT",
            },
            "pruning_method": "magnitude",
            "pruning_target_sparsity": 0.5,
            "pruning_start_step": 2,
            "pruning_end_step": 6,
            "pruning_frequency": 2,
        }
        options.update(overrides)
        return PruningTrainer(
            model=make_model(), args=PruningTrainingArguments(**options), train_dataset=train_dataset
        )

    trainer(f"{output_dir}/first").train()
    rank = dist.get_rank()  # the first Trainer set up the process group
    checkpoint = Path(output_dir) / "first" / "checkpoint-4"

    def attempt(case: str, damage_rank1: bool, **overrides) -> None:
        copy = Path(output_dir) / case / "checkpoint-4"
        if rank == 0:
            shutil.copytree(checkpoint, copy)
        dist.barrier()
        if damage_rank1 and rank == 1:
            (copy / sharded_state_name(1, 2)).write_bytes(b"\x00" * 64)
        dist.barrier()
        try:
            trainer(f"{output_dir}/{case}/resumed", max_steps=8, **overrides).train(resume_from_checkpoint=str(copy))
            outcome = "no error"
        except ValueError as error:
            outcome = str(error)
        Path(f"{output_dir}/{case}_rank{rank}.txt").write_text(outcome)
        dist.barrier()

    attempt("damaged", damage_rank1=True)
    attempt("lower_target", damage_rank1=False, pruning_target_sparsity=0.05)
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

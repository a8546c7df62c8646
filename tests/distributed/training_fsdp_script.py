# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Launched by test_fsdp.py on 2 CPU processes (gloo) with FSDP2 (`fully_shard`). Two modes:

* ``select OUT``: a sharded tiny Llama after two AdamW steps; for every comparison group (exact and sampled
  thresholds, layer-adaptive) `PruningCallback.update_masks` on the shards is compared, on each rank, with the
  single-process selection of the whole weights (`full_tensor`).
* ``trainer OUT METHOD GROUP``: `PruningTrainer` with `fsdp` through Accelerate, a checkpoint at step 4, then a
  second run resuming from it; each rank writes its masks, weights and measurements for the test to compare.

Accelerate (1.15) turns its FSDP plugin on for accelerators only (`AcceleratorState` keeps `MULTI_CPU`, and the
Trainer silently trains with DDP on CPU): `enable_fsdp_on_cpu` makes it take the FSDP path here, which runs
as it does on GPUs (`fully_shard`, DTensor parameters and moments, sharded checkpoints) with gloo.
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from testing_utils import BOS_ID, EOS_ID, PAD_ID, TINY_VOCAB_SIZE, leave_process_group

from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.training import PruningCallback, PruningTrainer, PruningTrainingArguments, get_method
from hf_gradprobe.training.distributed import local_tensor
from hf_gradprobe.training.optimizer import param_state, unwrap_optimizer
from hf_gradprobe.training.selection import select_training_masks, selection_threshold


def make_model(seed: int = 0):
    """Tiny Llama whose MLP has 37 rows: FSDP2 splits gate/up_proj unevenly (19 and 18 rows)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=TINY_VOCAB_SIZE,
        max_position_embeddings=64,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def enable_fsdp_on_cpu() -> None:
    import accelerate.state
    from accelerate.utils import DistributedType

    original = accelerate.state.AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    accelerate.state.AcceleratorState.__init__ = __init__


def full(tensor):
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def select_mode(output_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from transformers import TrainerControl, TrainerState

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = make_model()
    for block in model.model.layers:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(rank)
    for _ in range(2):
        ids = torch.randint(0, TINY_VOCAB_SIZE, (2, 12), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    layers = find_prunable_layers(model)
    # Everything update_masks writes to, to start every configuration from the same weights and moments.
    saved = [
        (
            local_tensor(layer.weight.data).clone(),
            {k: local_tensor(v).clone() for k, v in param_state(optimizer, layer.weight).items()},
        )
        for layer in layers
    ]
    args = SimpleNamespace(output_dir=output_dir, world_size=2, parallel_mode="distributed")
    configs = [
        {"comparison_group": "per_row"},
        {"comparison_group": "per_layer"},
        {"comparison_group": "per_layer", "layer_adaptive": True},
        {"comparison_group": "per_layer", "sample_fraction": 0.3},
        {"comparison_group": "per_layer", "exact_limit": 1100},  # q/o/k/v exact, the 37-row MLP sampled
        {"comparison_group": "global"},
        {"comparison_group": "global", "sample_fraction": 0.25},
        {"comparison_group": "global", "exact_limit": 5000},  # the pool (13,248) is sampled, 2%
    ]
    results = []
    for config in configs:
        for (weight, state), layer in zip(saved, layers, strict=True):
            local_tensor(layer.weight.data).copy_(weight)
            for key, value in param_state(optimizer, layer.weight).items():
                local_tensor(value).copy_(state[key])
        callback = PruningCallback("bitter7", 0.5, start_step=1, end_step=1, frequency=1, seed=3, **config)
        callback.on_train_begin(args, TrainerState(max_steps=4), TrainerControl(), model=model, optimizer=optimizer)
        assert callback.masked.shards is not None
        # The single-process reference: the same selection on the whole weights and moments.
        whole = [
            get_method("bitter7").scores(
                full(layer.weight.data),
                {k: full(v) for k, v in param_state(optimizer, layer.weight).items()},
            )
            for layer in layers
        ]
        reference = select_training_masks(
            whole,
            layers,
            0.5,
            config["comparison_group"],
            layer_adaptive=callback.plan.layer_adaptive,
            exact_limit=callback.plan.exact_limit,
            sample_fraction=callback.plan.sample_fraction,
            seed=callback.plan.seed * 1_000_003 + 1,
        )
        callback.update_masks(1, optimizer)
        own = [callback.masked.shards.own_rows(i, mask) for i, mask in enumerate(reference)]
        results.append(
            {
                "config": config,
                "same_masks": all(torch.equal(a, b) for a, b in zip(callback.masks, own, strict=True)),
                "pruned": callback.masked.pruned,
                "reference_pruned": int(sum(int(mask.sum()) for mask in reference)),
                "threshold": callback.threshold,
                "reference_threshold": selection_threshold(whole, reference),
                "weights_zero_at_masks": all(
                    torch.equal(local_tensor(layer.weight.data) == 0, mask)
                    for layer, mask in zip(layers, callback.masks, strict=True)
                ),
                "moments_zero_at_masks": all(
                    not local_tensor(value)[mask].any()
                    for layer, mask in zip(layers, callback.masks, strict=True)
                    for key, value in param_state(optimizer, layer.weight).items()
                    if key != "step"
                ),
                "rows": [list(callback.masked.shards.row_range(i)) for i in range(len(layers))],
            }
        )
        callback.on_train_end(args, None, None)
    torch.save(results, f"{output_dir}/select_rank{rank}.pt")
    leave_process_group()


def trainer_mode(output_dir: str, method: str, comparison_group: str) -> None:
    from transformers import TrainerCallback

    enable_fsdp_on_cpu()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    ids = (torch.randint(0, TINY_VOCAB_SIZE, (64, 1), generator=generator) + torch.arange(16)) % TINY_VOCAB_SIZE
    train_dataset = [{"input_ids": row, "labels": row} for row in ids]

    class RestoredMasks(TrainerCallback):
        """The masks at the first step of a run: in the resumed run, those restored from the checkpoint."""

        def __init__(self):
            self.masks = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.masks is None:
                self.masks = [mask.clone() for mask in trainer.pruning_callback.masks]

    def run(resume: str | None):
        nonlocal trainer
        args = PruningTrainingArguments(
            output_dir=output_dir,
            max_steps=8,
            per_device_train_batch_size=4,
            learning_rate=3e-3,
            use_cpu=True,
            ddp_backend="gloo",
            report_to=[],
            save_strategy="steps",
            save_steps=4,
            disable_tqdm=True,
            logging_steps=4,
            seed=0,
            fsdp="full_shard",
            # FULL_STATE_DICT checkpoints fail on CPU without pruning too (safetensors: "invalid python storage").
            fsdp_config={
                "version": 2,
                "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                "state_dict_type": "SHARDED_STATE_DICT",
            },
            pruning_method=method,
            pruning_target_sparsity=0.5,
            pruning_start_step=2,
            pruning_end_step=6,
            pruning_frequency=2,
            pruning_comparison_group=comparison_group,
        )
        restored = RestoredMasks()
        trainer = PruningTrainer(model=make_model(), args=args, train_dataset=train_dataset, callbacks=[restored])
        trainer.train(resume_from_checkpoint=resume)
        callback = trainer.pruning_callback
        layers = callback.layers
        optimizer = unwrap_optimizer(trainer.optimizer)
        return {
            "fsdp_enabled": trainer.is_fsdp_enabled,
            "dtensor": type(layers[0].weight).__name__,
            "masks": [mask.clone() for mask in callback.masks],
            "weights": [local_tensor(layer.weight.data).clone() for layer in layers],
            "moments_zero_at_masks": all(
                not local_tensor(value)[mask].any()
                for layer, mask in zip(layers, callback.masks, strict=True)
                for key, value in param_state(optimizer, layer.weight).items()
                if key != "step"
            ),
            # Measured on the gathered weights, as a single process would see the model.
            "zeros": sum(int((full(layer.weight.data) == 0).sum()) for layer in layers),
            "total": callback.masked.total,
            "pruned": callback.masked.pruned,
            "sparsity": callback.sparsity,
            "threshold": callback.threshold,
            "mask_updates": callback.mask_updates,
            "rows": [list(callback.masked.shards.row_range(i)) for i in range(len(layers))],
            "in_features": [layer.weight.shape[1] for layer in layers],
            "names": [layer.name for layer in layers],
            "masks_at_first_step": restored.masks,
        }

    trainer = None
    first = run(None)
    second = run(f"{output_dir}/checkpoint-4")
    rank = dist.get_rank()
    torch.save(
        {"first": first, "resumed": second, "rank": rank},
        f"{output_dir}/trainer_rank{rank}.pt",
    )
    leave_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "select":
        select_mode(sys.argv[2])
    else:
        trainer_mode(sys.argv[2], sys.argv[3], sys.argv[4])

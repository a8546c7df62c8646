# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Pruning while training under FSDP2 (`fully_shard`: DTensor weights and AdamW moments split by rows).

* In one process: `core.masking.select_masks` on row shards (the collectives simulated by threads, uneven and
  empty shards included) decides the masks the whole matrices get; what cannot work is refused naming FSDP.
* Two gloo processes (`distributed` marker, `tests/distributed/training_fsdp_script.py`): the callback on a
  sharded model against the single-process selection, and `PruningTrainer` with `fsdp` through the Trainer
  (sharded checkpoints, resume).
"""

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import make_tiny_llama, run_on_two_gloo_ranks
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_gradprobe.core.masking import RowShards, sampled_threshold, select_masks
from hf_gradprobe.training import PruningCallback
from hf_gradprobe.training.distributed import sharded_training_message
from hf_gradprobe.training.state import sharded_state_name


SCRIPT = Path(__file__).resolve().parent / "distributed" / "training_fsdp_script.py"


# ---- one process: row shards with simulated collectives ---------------------------------------------------------


def run_on_shards(scores, counts, call):
    """``call(local_scores, shards)`` on every simulated rank (one thread each); returns their results in order.

    ``counts[i][r]``: rows of ``scores[i]`` held by rank ``r``. The collectives meet at a barrier, as
    `torch.distributed` would: `gather` returns the whole matrix, `sum_` adds every rank's tensor.
    """
    world = len(counts[0])
    barrier = threading.Barrier(world)
    posted: dict[int, torch.Tensor] = {}
    results: list = [None] * world
    errors: list = []

    def exchange(rank, tensor):
        posted[rank] = tensor.clone()
        barrier.wait()
        everything = [posted[r] for r in range(world)]
        barrier.wait()
        return everything

    def worker(rank):
        def gather(tensor, layer_counts):
            return torch.cat(exchange(rank, tensor))

        def sum_(tensor):
            tensor.copy_(torch.stack(exchange(rank, tensor)).sum(0))
            return tensor

        shards = RowShards(counts=counts, rank=rank, gather=gather, sum_=sum_)
        local = [shards.own_rows(i, score) for i, score in enumerate(scores)]
        try:
            results[rank] = call(local, shards)
        except (AssertionError, RuntimeError, ValueError, threading.BrokenBarrierError) as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


# Three ranks, split as torch.chunk (FSDP2) does: unevenly, and rank 2 holds no row of the first matrix.
COUNTS = [[3, 2, 0], [4, 4, 3], [1, 1, 1]]


def make_scores(seed=0):
    generator = torch.Generator().manual_seed(seed)
    scores = [torch.randn(sum(c), cols, generator=generator) for c, cols in zip(COUNTS, (8, 12, 16), strict=True)]
    scores[1][0, :4] = 0.0  # ties, decided by position as on one process
    scores[2][1, 3] = float("nan")  # never pruned
    return scores


@pytest.mark.parametrize(
    "options",
    [
        {"comparison_group": "per_row"},
        {"comparison_group": "per_layer"},
        {"comparison_group": "per_layer", "sample_fraction": 0.5},
        {"comparison_group": "per_layer", "exact_limit": 60},
        {"comparison_group": "global"},
        {"comparison_group": "global", "sample_fraction": 0.3},
        {"comparison_group": "global", "exact_limit": 100},
        {"comparison_group": "per_row", "pattern": "2:4"},
    ],
)
def test_row_shards_give_the_masks_of_the_whole_matrices(options):
    scores = make_scores()
    options = {"seed": 11, **options}
    sparsity = [0.3, 0.5, 0.7] if options["comparison_group"] != "global" else 0.45
    whole = select_masks(scores, sparsity, **options)
    per_rank = run_on_shards(
        scores, COUNTS, lambda local, shards: select_masks(local, sparsity, shards=shards, **options)
    )
    for index, mask in enumerate(whole):
        assert torch.equal(torch.cat([masks[index] for masks in per_rank]), mask)


def test_sampled_threshold_on_row_shards_is_the_whole_one():
    scores = make_scores(1)
    whole = sampled_threshold(scores, 0.4, 0.5, seed=5)
    thresholds = run_on_shards(
        scores, COUNTS, lambda local, shards: sampled_threshold(local, 0.4, 0.5, 5, shards=shards)
    )
    assert thresholds == [whole] * 3


# ---- one process: what is refused, naming FSDP -------------------------------------------------------------------


def make_args(tmp_path, **overrides):
    args = TrainingArguments(str(tmp_path), max_steps=1, report_to=[], use_cpu=True)
    for key, value in overrides.items():
        object.__setattr__(args, key, value)  # a configuration check: no process group needed
    return args


def test_fsdp1_is_refused_with_the_way_to_fsdp2(tmp_path):
    args = make_args(tmp_path, fsdp=True, fsdp_config={"version": 1}, fsdp_plugin_args={"fsdp_version": 1})
    with pytest.raises(ValueError) as error:
        PruningCallback("magnitude", 0.5).on_train_begin(
            args, TrainerState(max_steps=1), TrainerControl(), model=make_tiny_llama()
        )
    message = str(error.value)
    assert "FSDP1" in message and '{"version": 2}' in message and "single-process, DDP and FSDP2" in message
    assert "\n" not in message


def test_fsdp2_configuration_is_accepted(tmp_path):
    # On CPU Accelerate leaves the model unsharded (DDP): the callback prunes it as such.
    args = make_args(tmp_path, fsdp=True, fsdp_config={"version": 2}, fsdp_plugin_args={"fsdp_version": 2})
    assert sharded_training_message(args, make_tiny_llama()) is None


def test_per_row_of_sharded_conv1d_weights_is_refused():
    from testing_utils import make_tiny_gpt2

    from hf_gradprobe.core.layers import find_prunable_layers
    from hf_gradprobe.training.selection import select_training_masks

    layers = find_prunable_layers(make_tiny_gpt2())
    scores = [layer.weight.detach() for layer in layers]
    shards = RowShards([[len(s), 0] for s in scores], 0, gather=None, sum_=None)
    with pytest.raises(ValueError, match="per_row.*FSDP2.*Conv1D.*'per_layer' or 'global'"):
        select_training_masks(scores, layers, 0.5, "per_row", shards=shards)


def test_a_sharded_state_is_not_resumed_by_a_single_process(tmp_path):
    model = make_tiny_llama()
    callback = PruningCallback("magnitude", 0.5, start_step=1, end_step=2, frequency=1)
    args = make_args(tmp_path)
    callback.on_train_begin(args, TrainerState(max_steps=4), TrainerControl(), model=model)
    callback.update_masks(1)
    state = callback.state_dict()
    # What rank 0 of 2 FSDP2 ranks writes, placed where a single process looks for its state.
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    callback.state_dict = lambda: {**state, "shard": {"rank": 0, "world_size": 2, "rows": []}}
    callback.save(str(folder / "pruning_state.safetensors"))
    resumed = PruningCallback("magnitude", 0.5, start_step=1, end_step=2, frequency=1)
    with pytest.raises(ValueError, match="rank 0 of 2 FSDP2 ranks.*single-process/DDP run.*same number of ranks"):
        resumed.on_train_begin(args, TrainerState(max_steps=4, global_step=1), TrainerControl(), model=model)


# ---- two gloo processes -------------------------------------------------------------------------------------------


def launch(*arguments, timeout=240):
    run_on_two_gloo_ranks(SCRIPT, *arguments, timeout=timeout)


@pytest.mark.distributed
def test_fsdp2_shards_get_the_single_process_masks(tmp_path):
    launch("select", tmp_path)
    ranks = [torch.load(tmp_path / f"select_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(ranks[0]) == 8
    for rank, results in enumerate(ranks):
        for result in results:
            config = result["config"]
            assert result["same_masks"], (rank, config)
            assert result["pruned"] == result["reference_pruned"], (rank, config)
            assert result["threshold"] == result["reference_threshold"], (rank, config)
            assert result["weights_zero_at_masks"] and result["moments_zero_at_masks"], (rank, config)
    # gate_proj/up_proj have 37 rows: FSDP2 splits them 19 + 18.
    assert [0, 19] in ranks[0][0]["rows"] and [19, 37] in ranks[1][0]["rows"]
    for result in ranks[0]:
        if set(result["config"]) == {"comparison_group"}:  # exact: round(0.5 n) of every group
            assert result["pruned"] == EXACT_COUNTS[result["config"]["comparison_group"]]


# The script's model: per block q (32x32), k and v (16x32), o (32x32), gate and up (37x32), down (32x37), all
# (out, in); 6,624 weights per block, 13,248 in all. per_row prunes round(0.5 * 32) = 16 of the 170 rows of
# 32 inputs and round(0.5 * 37) = 19 (half up) of the 32 rows of 37 inputs in each block.
EXACT_COUNTS = {"global": 6624, "per_layer": 6624, "per_row": 2 * (170 * 16 + 32 * 19)}


@pytest.mark.distributed
@pytest.mark.parametrize(("method", "comparison_group"), [("bitter7", "global"), ("movement", "per_row")])
def test_fsdp2_trainer_prunes_exactly_and_resumes_from_sharded_checkpoints(tmp_path, method, comparison_group):
    launch("trainer", tmp_path, method, comparison_group)
    ranks = [torch.load(tmp_path / f"trainer_rank{r}.pt", weights_only=True) for r in (0, 1)]
    first = [data["first"] for data in ranks]
    resumed = [data["resumed"] for data in ranks]
    for rank, (run, again) in enumerate(zip(first, resumed, strict=True)):
        assert run["fsdp_enabled"] and run["dtensor"] == "DTensor"
        assert run["mask_updates"] == 3  # steps 2, 4, 6
        # Shards: every rank holds its rows of every weight.
        assert [mask.shape[0] for mask in run["masks"]] == [stop - start for start, stop in run["rows"]]
        # The masks are exactly the zeros of this rank's rows, and AdamW's moments are 0 there.
        for mask, weight in zip(run["masks"], run["weights"], strict=True):
            assert torch.equal(weight == 0, mask)
        assert run["moments_zero_at_masks"]
        # Resume: the masks restored at the first step are the rank's checkpointed shard, then the run ends
        # with the same masks and weights as the uninterrupted one.
        stored = load_file(tmp_path / "checkpoint-4" / sharded_state_name(rank, 2))
        restored = again["masks_at_first_step"]
        assert len(restored) == len(run["names"]) and sum(int(mask.sum()) for mask in restored) > 0
        for name, mask in zip(run["names"], restored, strict=True):
            assert torch.equal(mask, stored[f"mask.{name}"]), name
        if method == "movement":
            assert all(f"movement.{name}" in stored for name in run["names"])
        for a, b in zip(run["masks"] + run["weights"], again["masks"] + again["weights"], strict=True):
            assert torch.equal(a, b)
    # The whole model, measured on the gathered weights: exactly the target's count of zeros, on both ranks.
    for run in first + resumed:
        assert run["zeros"] == run["pruned"] == EXACT_COUNTS[comparison_group]
        assert run["total"] == 13248 and run["threshold"] == first[0]["threshold"]
    if comparison_group == "global":
        assert first[0]["sparsity"] == 0.5

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Resuming pruning while training: changed schedule options, inconsistent and damaged pruning states.

One uninterrupted run saves checkpoints at steps 4, 8, 12, 16 and 20 (linear ramp to 0.5 from step 2 to 14,
masks every 3 steps: 0.25 at step 8); each test copies one, maybe alters it, and resumes it.
"""

import json
import logging
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from testing_utils import TINY_VOCAB_SIZE, make_tiny_gpt2, make_tiny_llama

from hf_gradprobe import find_prunable_layers
from hf_gradprobe.core.masking import select_masks
from hf_gradprobe.training import PRUNING_STATE_NAME, PruningTrainer, PruningTrainingArguments
from hf_gradprobe.training.state import METADATA_KEY, load_pruning_state, save_pruning_state, sharded_state_name


def dataset(n=64, seq=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, TINY_VOCAB_SIZE, (n, 1), generator=generator)
    ids = (start + torch.arange(seq)) % TINY_VOCAB_SIZE
    return [{"input_ids": row, "labels": row} for row in ids]


def make_args(output_dir, **overrides):
    kwargs = {
        "output_dir": str(output_dir),
        "max_steps": 20,
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "use_cpu": True,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "pruning_method": "bitter7",
        "pruning_schedule": "linear",
        "pruning_target_sparsity": 0.5,
        "pruning_start_step": 2,
        "pruning_end_step": 14,
        "pruning_frequency": 3,
    }
    kwargs.update(overrides)
    return PruningTrainingArguments(**kwargs)


def run(output_dir, model=None, resume=None, **overrides):
    model = model if model is not None else make_tiny_gpt2()
    trainer = PruningTrainer(model=model, args=make_args(output_dir, **overrides), train_dataset=dataset())
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return trainer


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """The uninterrupted run (bitter7, linear, global) with its checkpoints; tests copy, never alter them."""
    folder = tmp_path_factory.mktemp("saved_run")
    trainer = run(folder, save_strategy="steps", save_steps=4)
    return folder, trainer


def copy_checkpoint(saved_run, tmp_path, step):
    source = saved_run[0] / f"checkpoint-{step}"
    target = tmp_path / f"checkpoint-{step}"
    shutil.copytree(source, target)
    return target


def read_state(path):
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    return metadata, load_file(str(path))


def write_state(path, metadata, tensors):
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(metadata)})


def resumed_targets(trainer, after=8):
    """The scheduled sparsity logged at every step after the resumed one (the history before is the checkpoint's)."""
    return [e["pruning/target_sparsity"] for e in trainer.state.log_history if "loss" in e and e["step"] > after]


def masks_of(trainer):
    return [mask.clone() for mask in trainer.pruning_callback.masks]


def refused(tmp_path, checkpoint, match, **overrides):
    """Resuming ``checkpoint`` fails at train begin with one line matching ``match``, before any step."""
    trainer = PruningTrainer(
        model=make_tiny_gpt2(), args=make_args(tmp_path / "resumed", **overrides), train_dataset=dataset()
    )
    with pytest.raises(ValueError, match=match) as error:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "resumed").exists() or not any((tmp_path / "resumed").glob("checkpoint-*"))
    return str(error.value)


# ---- item 10: changed schedule options on resume --------------------------------------------------------------


def test_the_checkpoint_is_what_the_tests_assume(saved_run):
    folder, trainer = saved_run
    metadata, _ = read_state(folder / "checkpoint-8" / PRUNING_STATE_NAME)
    assert (metadata["optimizer_steps"], metadata["mask_updates"], metadata["start"], metadata["end"]) == (8, 3, 2, 14)
    assert trainer.pruning_callback.sparsity == pytest.approx(0.5, abs=1e-4)


def test_a_lower_target_than_the_masks_reached_is_refused(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    message = refused(tmp_path, checkpoint, r"pruning_target_sparsity", pruning_target_sparsity=0.2)
    # The saved and the new value, what the masks reached, and why it cannot be honoured.
    assert "0.2" in message and "0.5" in message and "25.00%" in message and "only grow" in message
    assert PRUNING_STATE_NAME in message


def test_an_end_step_before_the_resumed_step_is_refused(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    message = refused(tmp_path, checkpoint, r"pruning_end_step", pruning_end_step=6)
    assert "step 6" in message and "step 8" in message and "14" in message


def test_an_end_step_at_the_resumed_step_is_refused_too(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    refused(tmp_path, checkpoint, r"pruning_end_step.*step 8", pruning_end_step=8)


@pytest.mark.parametrize(
    ("option", "value"), [("pruning_comparison_group", "per_layer"), ("pruning_method", "magnitude")]
)
def test_a_changed_selection_rule_is_refused_once_masks_prune(saved_run, tmp_path, option, value):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    message = refused(tmp_path, checkpoint, option, **{option: value})
    assert value in message


def test_a_changed_selection_rule_is_fine_before_anything_is_pruned(tmp_path):
    # Saved at step 1, before the ramp starts at step 2: the masks are empty, any rule can follow.
    first = run(tmp_path / "first", save_strategy="steps", save_steps=1, max_steps=1)
    assert first.pruning_callback.masked.pruned == 0
    trainer = run(
        tmp_path / "resumed", resume=tmp_path / "first" / "checkpoint-1", pruning_comparison_group="per_layer"
    )
    callback = trainer.pruning_callback
    for layer, mask in zip(callback.layers, callback.masks, strict=True):
        assert int(mask.sum()) == round(0.5 * mask.numel()), layer.name  # per_layer: exactly half of each


@pytest.mark.parametrize("target", [0.6, 0.4])
def test_a_changed_target_is_replanned_from_the_resumed_step(saved_run, tmp_path, caplog, target):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    at_checkpoint = load_file(str(checkpoint / PRUNING_STATE_NAME))
    with caplog.at_level(logging.WARNING):
        trainer = run(tmp_path / "resumed", resume=checkpoint, pruning_target_sparsity=target)
    callback = trainer.pruning_callback
    assert callback.sparsity == pytest.approx(target, abs=1e-4)  # the new target, at the end step
    assert callback.mask_updates == 5  # 2, 5, 8 saved; 11 and 14 after the resume
    for layer, mask in zip(callback.layers, callback.masks, strict=True):
        assert torch.all(mask[at_checkpoint[f"mask.{layer.name}"]])  # masks only grow
    # The ramp goes on from the sparsity reached (0.25 at step 8), never below it, up to the new target.
    logged = resumed_targets(trainer)
    assert logged == sorted(logged) and logged[0] >= 0.25 - 1e-6 and logged[-1] == pytest.approx(target)
    assert "re-planned" in caplog.text and "0.5" in caplog.text and str(target) in caplog.text


def test_a_later_end_step_and_another_schedule_are_replanned(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    trainer = run(tmp_path / "resumed", resume=checkpoint, pruning_end_step=20, pruning_schedule="cubic")
    callback = trainer.pruning_callback
    assert callback.sparsity == pytest.approx(0.5, abs=1e-4) and callback.ramp.end == 20
    logged = resumed_targets(trainer)
    # cubic from step 2 would say 0.5 * (6/18)**3 = 0.019 at step 8, below what the masks prune already.
    assert logged == sorted(logged) and logged[0] >= 0.25 - 1e-6


def test_a_replanned_run_resumes_again_bit_identically(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    replanned = run(
        tmp_path / "replanned", resume=checkpoint, pruning_target_sparsity=0.6, save_strategy="steps", save_steps=4
    )
    again = run(tmp_path / "again", resume=tmp_path / "replanned" / "checkpoint-12", pruning_target_sparsity=0.6)
    for a, b in zip(masks_of(replanned), masks_of(again), strict=True):
        assert torch.equal(a, b)


def test_a_finished_ramp_stays_finished_when_the_steps_resolve_elsewhere(tmp_path):
    # Ratios: 0.1 / 0.7 of 20 steps are steps 2 / 14; resuming for 30 steps moves them to 3 / 21. The ramp
    # was done at step 16 and the target is the same: the masks stay as they are, no sampled update drifts.
    options = {"pruning_start_step": 0.1, "pruning_end_step": 0.7, "pruning_sample_fraction": 0.5}
    first = run(tmp_path / "first", save_strategy="steps", save_steps=16, **options)
    saved = load_file(str(tmp_path / "first" / "checkpoint-16" / PRUNING_STATE_NAME))
    trainer = run(tmp_path / "resumed", resume=tmp_path / "first" / "checkpoint-16", max_steps=30, **options)
    callback = trainer.pruning_callback
    assert callback.mask_updates == first.pruning_callback.mask_updates
    for layer, mask in zip(callback.layers, callback.masks, strict=True):
        assert torch.equal(mask, saved[f"mask.{layer.name}"]), layer.name


def test_a_state_without_the_newer_fields_still_resumes_bit_identically(saved_run, tmp_path):
    # Files written before `masked`, `nonfinite_updates`, `replan` and `preexisting_zeros` were recorded.
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    for key in ("masked", "nonfinite_updates", "replan", "preexisting_zeros"):
        metadata.pop(key, None)
    write_state(path, metadata, tensors)
    trainer = run(tmp_path / "resumed", resume=checkpoint)
    for a, b in zip(masks_of(saved_run[1]), masks_of(trainer), strict=True):
        assert torch.equal(a, b)


def test_an_unchanged_resume_stays_bit_identical(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    trainer = run(tmp_path / "resumed", resume=checkpoint)
    for a, b in zip(masks_of(saved_run[1]), masks_of(trainer), strict=True):
        assert torch.equal(a, b)


# ---- item 11: a state that disagrees with its metadata, the schedule or the model ------------------------------


def test_all_true_masks_are_refused(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 4)
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    write_state(path, metadata, {key: torch.ones_like(value) for key, value in tensors.items()})
    message = refused(tmp_path, checkpoint, PRUNING_STATE_NAME)
    assert "100.00%" in message


def test_all_true_masks_with_matching_counts_are_refused_by_the_schedule(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 4)
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    masks = {key: torch.ones_like(value) for key, value in tensors.items()}
    metadata.pop("masked", None)  # a file that records no count: the schedule still bounds the masks
    write_state(path, metadata, masks)
    message = refused(tmp_path, checkpoint, r"100\.00%.*schedule")
    assert "step 4" in message


def test_empty_masks_after_the_ramp_are_refused(saved_run, tmp_path):
    # Resumed, all-False masks at step 16 would end the run dense: the ramp was done at step 14.
    checkpoint = copy_checkpoint(saved_run, tmp_path, 16)
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    metadata.pop("masked", None)
    write_state(path, metadata, {key: torch.zeros_like(value) for key, value in tensors.items()})
    refused(tmp_path, checkpoint, r"0\.00%.*50\.00%")


def test_one_extra_masked_weight_disagrees_with_the_recorded_count(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    key = next(key for key in tensors if key.startswith("mask."))
    flat = tensors[key].reshape(-1)
    flat[int((~flat).nonzero()[0])] = True
    write_state(path, metadata, tensors)
    refused(tmp_path, checkpoint, r"masks prune \d+ weights.*records \d+")


def test_a_state_of_another_step_is_refused(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    shutil.copy(saved_run[0] / "checkpoint-4" / PRUNING_STATE_NAME, checkpoint / PRUNING_STATE_NAME)
    refused(tmp_path, checkpoint, r"optimizer step 4.*step 8")


def test_fixed_masks_must_be_zeros_of_the_model(tmp_path):
    model = make_tiny_llama()
    layers = find_prunable_layers(model)
    with torch.no_grad():
        weights = [layer.weight.abs() for layer in layers]
        for layer, mask in zip(layers, select_masks(weights, 0.6, "global"), strict=True):
            layer.weight.masked_fill_(mask, 0)
    run(tmp_path / "first", model=model, pruning_method="fixed", save_strategy="steps", save_steps=8)
    checkpoint = tmp_path / "first" / "checkpoint-8"
    path = checkpoint / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    inverted = {key: ~value for key, value in tensors.items()}
    metadata["masked"] = sum(int(value.sum()) for value in inverted.values())  # the count matches: still refused
    write_state(path, metadata, inverted)
    trainer = PruningTrainer(
        model=make_tiny_llama(), args=make_args(tmp_path / "resumed", pruning_method="fixed"), train_dataset=dataset()
    )
    with pytest.raises(ValueError, match=r"pruning_state.safetensors.*not zero"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


# ---- item 15: damaged files -----------------------------------------------------------------------------------


def _damage(kind, path):
    raw = path.read_bytes()
    metadata, tensors = read_state(path)
    first = next(key for key in tensors if key.startswith("mask."))
    if kind == "random bytes":
        path.write_bytes(
            torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
        )
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header only":
        path.write_bytes(raw[:8])
    elif kind == "metadata not json":
        save_file(tensors, str(path), metadata={METADATA_KEY: "{not json"})
    elif kind == "metadata a list":
        save_file(tensors, str(path), metadata={METADATA_KEY: "[1, 2]"})
    elif kind == "missing layers":
        write_state(path, {k: v for k, v in metadata.items() if k != "layers"}, tensors)
    elif kind == "missing counter":
        write_state(path, {k: v for k, v in metadata.items() if k != "optimizer_steps"}, tensors)
    elif kind == "counter a string":
        write_state(path, {**metadata, "optimizer_steps": "8"}, tensors)
    elif kind == "layers not names":
        write_state(path, {**metadata, "layers": 5}, tensors)
    elif kind == "method not a name":
        write_state(path, {**metadata, "method": ["bitter7"]}, tensors)
    elif kind == "version a string":
        write_state(path, {**metadata, "version": "1"}, tensors)
    elif kind == "missing mask":
        write_state(path, metadata, {k: v for k, v in tensors.items() if k != first})
    elif kind == "float mask":
        write_state(path, metadata, {**tensors, first: tensors[first].float()})
    elif kind == "wrong shape":
        write_state(path, metadata, {**tensors, first: tensors[first].reshape(-1)})
    elif kind == "extra tensor":
        write_state(path, metadata, {**tensors, "mask.no.such.layer": torch.zeros(3, dtype=torch.bool)})
    elif kind == "target out of range":
        write_state(path, {**metadata, "target_sparsity": 7.0}, tensors)
    elif kind == "unknown schedule":
        write_state(path, {**metadata, "schedule": "exp"}, tensors)
    else:  # pragma: no cover
        raise AssertionError(kind)


DAMAGES = {
    "random bytes": "not a readable safetensors file",
    "truncated": "not a readable safetensors file",
    "empty": "not a readable safetensors file",
    "header only": "not a readable safetensors file",
    "metadata not json": "metadata",
    "metadata a list": "holds no pruning state",
    "missing layers": "`layers`",
    "missing counter": "`optimizer_steps`",
    "counter a string": "`optimizer_steps`.*'8'",
    "layers not names": "`layers`",
    "method not a name": "`method`",
    "version a string": "version",
    "missing mask": "no tensor `mask.transformer.h.0",
    "float mask": "float32.*bool",
    "wrong shape": r"shape.*\(\d+,\).*\(\d+, \d+\)",
    "extra tensor": "mask.no.such.layer",
    "target out of range": "`target_sparsity`",
    "unknown schedule": "`schedule`.*'exp'",
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_state_names_the_file_and_what_is_wrong(saved_run, tmp_path, kind):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    path = checkpoint / PRUNING_STATE_NAME
    _damage(kind, path)
    message = refused(tmp_path, checkpoint, DAMAGES[kind])
    assert str(path) in message


def test_a_state_of_another_model_is_refused(saved_run, tmp_path):
    checkpoint = copy_checkpoint(saved_run, tmp_path, 8)
    llama = tmp_path / "llama"
    run(llama, model=make_tiny_llama(), save_strategy="steps", save_steps=8, max_steps=8)
    shutil.copy(llama / "checkpoint-8" / PRUNING_STATE_NAME, checkpoint / PRUNING_STATE_NAME)
    refused(tmp_path, checkpoint, r"layers.*model\.layers\.0.*transformer\.h\.0")


@pytest.mark.parametrize("kind", ["random bytes", "float mask", "missing mask", "wrong shape"])
def test_the_loader_refuses_damage_directly_and_for_per_rank_files(saved_run, tmp_path, kind):
    # FSDP2's per-rank files go through the same loader.
    trainer = saved_run[1]
    names = [layer.name for layer in trainer.pruning_callback.layers]
    shapes = [tuple(layer.weight.shape) for layer in trainer.pruning_callback.layers]
    path = tmp_path / sharded_state_name(1, 2)
    shutil.copy(saved_run[0] / "checkpoint-8" / PRUNING_STATE_NAME, path)
    _damage(kind, path)
    with pytest.raises(ValueError, match=str(path)) as error:
        load_pruning_state(str(path), names, "bitter7", [torch.device("cpu")] * len(names), shapes=shapes)
    assert "\n" not in str(error.value)


def test_the_loader_still_reads_a_minimal_file(tmp_path):
    names = ["h.0.attn"]
    path = str(tmp_path / PRUNING_STATE_NAME)
    save_pruning_state(
        path, names, [torch.zeros(2, 3, dtype=torch.bool)], None, {"method": "magnitude", "layers": names}
    )
    meta, masks, movement = load_pruning_state(path, names, "magnitude", [torch.device("cpu")])
    assert meta["method"] == "magnitude" and masks[0].shape == (2, 3) and movement is None


def test_movement_scores_are_checked_too(tmp_path):
    first = run(tmp_path / "first", pruning_method="movement", save_strategy="steps", save_steps=8, max_steps=8)
    path = tmp_path / "first" / "checkpoint-8" / PRUNING_STATE_NAME
    metadata, tensors = read_state(path)
    key = next(key for key in tensors if key.startswith("movement."))
    write_state(path, metadata, {k: v for k, v in tensors.items() if k != key})
    assert first.pruning_callback.movement is not None
    refused(tmp_path, tmp_path / "first" / "checkpoint-8", rf"no tensor `{key}`", pruning_method="movement")


# ---- FSDP2: per-rank files, every rank stops together ----------------------------------------------------------


@pytest.mark.distributed
def test_fsdp2_ranks_refuse_a_damaged_or_changed_resume_together(tmp_path):
    from pathlib import Path

    from testing_utils import run_on_two_gloo_ranks

    script = Path(__file__).resolve().parent / "distributed" / "resume_safety_fsdp_script.py"
    run_on_two_gloo_ranks(script, tmp_path, timeout=300)
    damaged = [(tmp_path / f"damaged_rank{rank}.txt").read_text() for rank in (0, 1)]
    assert sharded_state_name(1, 2) in damaged[1] and "not a readable safetensors file" in damaged[1]
    assert "ranks [1] refused" in damaged[0]
    lower = [(tmp_path / f"lower_target_rank{rank}.txt").read_text() for rank in (0, 1)]
    for rank, message in enumerate(lower):
        assert "pruning_target_sparsity" in message and "only grow" in message, message
        assert sharded_state_name(rank, 2) in message

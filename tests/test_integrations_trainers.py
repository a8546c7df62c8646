# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""PruningCallback inside other Trainers, through public mechanisms only: the order callbacks run in (real
TensorBoard and TRL), the checkpoint a plain Trainer resumes, sharded training."""

import logging
import shutil

import pytest
import torch
from test_training_trainer import dataset, make_args
from testing_utils import make_tiny_llama, make_tiny_tokenizer, sample_text
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from hf_gradprobe.training import PRUNING_STATE_NAME, PruningCallback


def tensorboard_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            values += [event.value for event in accumulator.Scalars(tag)]
    return values


def pruning_callback(**options):
    return PruningCallback("magnitude", 0.5, schedule="linear", start_step=1, end_step=4, frequency=1, **options)


def capture_warnings(caplog):
    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    return handler_logger


# ---- where the metrics go: the order callbacks run in (see `hf_gradprobe.training.integration`) --------------


def test_transformers_runs_report_to_integrations_before_the_callbacks_given(tmp_path, caplog):
    # The documented order this package relies on: `Trainer(callbacks=...)` appends after the `report_to`
    # integrations and `on_log` runs in list order. If Transformers changes it, this test fails: update the
    # advice of `integration.CALLBACK_ORDER_ADVICE`, the README and the tests below.
    pytest.importorskip("tensorboard")
    from transformers.integrations import TensorBoardCallback

    callback = pruning_callback()
    args = make_args(tmp_path, TrainingArguments, max_steps=4, report_to="tensorboard")
    trainer = Trainer(model=make_tiny_llama(), args=args, train_dataset=dataset(32), callbacks=[callback])
    order = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert order.index(TensorBoardCallback) < order.index(PruningCallback)
    handler_logger = capture_warnings(caplog)
    try:
        trainer.train()
    finally:
        handler_logger.removeHandler(caplog.handler)
    # The callback neither moves itself nor reaches the integration before it; it says so, once.
    assert [type(cb) for cb in trainer.callback_handler.callbacks] == order
    assert tensorboard_scalars(tmp_path, "train/pruning/sparsity") == []
    assert "run before the callbacks passed in `callbacks=`" in caplog.text
    assert "report_to='none'" in caplog.text and "TensorBoardCallback()" in caplog.text
    assert [e["pruning/sparsity"] for e in trainer.state.log_history if "loss" in e][-1] == pytest.approx(0.5)


def test_metrics_reach_tensorboard_with_a_plain_trainer(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    from transformers.integrations import TensorBoardCallback

    callback = pruning_callback()
    args = make_args(tmp_path, TrainingArguments, max_steps=4, report_to="none")
    trainer = Trainer(
        model=make_tiny_llama(), args=args, train_dataset=dataset(32), callbacks=[callback, TensorBoardCallback()]
    )
    handler_logger = capture_warnings(caplog)
    try:
        trainer.train()
    finally:
        handler_logger.removeHandler(caplog.handler)
    sparsity = tensorboard_scalars(tmp_path, "train/pruning/sparsity")
    assert len(sparsity) >= 4 and sparsity[-1] == pytest.approx(0.5, abs=1e-3)
    assert "run before the callbacks" not in caplog.text


def test_metrics_reach_tensorboard_with_trl_sft_trainer(tmp_path):
    pytest.importorskip("tensorboard")
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers.integrations import TensorBoardCallback

    callback = pruning_callback()
    train = Dataset.from_dict({"text": [sample_text(40, seed=i) for i in range(16)]})
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        max_length=32,
    )
    trainer = trl.SFTTrainer(
        model=make_tiny_llama(),
        args=args,
        train_dataset=train,
        processing_class=make_tiny_tokenizer(),
        callbacks=[callback, TensorBoardCallback()],
    )
    trainer.train()
    sparsity = tensorboard_scalars(tmp_path, "train/pruning/sparsity")
    assert len(sparsity) >= 4 and sparsity[-1] == pytest.approx(0.5, abs=1e-3)
    assert tensorboard_scalars(tmp_path, "train/pruning/target_sparsity")


# ---- which checkpoint is resumed, with a Trainer that does not say ------------------------------------------------


def run_plain(output_dir, method, resume=None, **options):
    callback = PruningCallback(method, 0.5, start_step=2, end_step=14, frequency=3, **options)
    args = make_args(output_dir, TrainingArguments, save_strategy="steps", save_steps=8)
    trainer = Trainer(model=make_tiny_llama(), args=args, train_dataset=dataset(), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


def assert_same_run(full, resumed):
    assert resumed.optimizer_steps == 20 and resumed.mask_updates == full.mask_updates
    for mask_a, mask_b in zip(full.masks, resumed.masks, strict=True):
        assert torch.equal(mask_a, mask_b)


@pytest.mark.parametrize("method", ["movement", "bitter7"])
def test_plain_trainer_resumes_a_moved_checkpoint_it_is_told_of(tmp_path, caplog, method):
    _, full = run_plain(tmp_path / "full", method)
    moved = tmp_path / "elsewhere" / "my-checkpoint"
    shutil.copytree(tmp_path / "full" / "checkpoint-8", moved)
    shutil.rmtree(tmp_path / "full")  # the guess `output_dir/checkpoint-8` would find nothing
    assert (moved / PRUNING_STATE_NAME).is_file()

    from hf_gradprobe.training import callback as callback_module

    saved = {}

    def remember_restored(path, masked, *rest, _restore=callback_module.restore_pruning_state):
        restored = _restore(path, masked, *rest)
        saved["path"] = path
        saved["movement"] = [score.clone() for score in masked.movement] if masked.movement is not None else None
        return restored

    handler_logger = capture_warnings(caplog)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(callback_module, "restore_pruning_state", remember_restored)
            _, resumed = run_plain(tmp_path / "fresh", method, resume=str(moved), resume_from_checkpoint=str(moved))
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "rebuilt" not in caplog.text
    assert saved["path"] == str(moved / PRUNING_STATE_NAME)
    assert_same_run(full, resumed)
    if method == "movement":
        # The restored scores are the ones saved at step 8, not zeros.
        from safetensors.torch import load_file

        stored = load_file(str(moved / PRUNING_STATE_NAME))
        for layer, score in zip(resumed.layers, saved["movement"], strict=True):
            assert torch.equal(score, stored[f"movement.{layer.name}"]) and score.abs().sum() > 0
        for score_a, score_b in zip(full.movement, resumed.movement, strict=True):
            torch.testing.assert_close(score_a, score_b)


def test_plain_trainer_resumes_a_checkpoint_left_in_place(tmp_path, caplog):
    # `train(resume_from_checkpoint=True)` resumes `output_dir/checkpoint-{global_step}`, where the callback looks.
    _, full = run_plain(tmp_path / "full", "bitter7")
    for later in ("checkpoint-16", "checkpoint-20"):
        shutil.rmtree(tmp_path / "full" / later)
    handler_logger = capture_warnings(caplog)
    try:
        _, resumed = run_plain(tmp_path / "full", "bitter7", resume=True)
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "rebuilt" not in caplog.text
    assert_same_run(full, resumed)


def test_plain_trainer_not_told_of_a_moved_checkpoint_rebuilds_the_masks_and_says_how_to_tell_it(tmp_path, caplog):
    run_plain(tmp_path / "full", "bitter7")
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "full" / "checkpoint-8", moved)
    handler_logger = capture_warnings(caplog)
    try:
        _, resumed = run_plain(tmp_path / "fresh", "bitter7", resume=str(moved))
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "the masks are rebuilt from the weights that are exactly zero" in caplog.text
    assert "PruningCallback(..., resume_from_checkpoint=...)" in caplog.text
    assert resumed.optimizer_steps == 20 and resumed.sparsity == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"fsdp": True, "fsdp_plugin_args": {"fsdp_version": 1}}, "FSDP1"),
        ({"deepspeed": {"train_batch_size": 8}}, "DeepSpeed"),
    ],
)
def test_sharded_training_is_refused_at_train_begin(tmp_path, overrides, name):
    # FSDP2 is supported (tests/test_fsdp.py); FSDP1 and DeepSpeed are refused in one line naming them.
    args = make_args(tmp_path, TrainingArguments, max_steps=1)
    for key, value in overrides.items():
        object.__setattr__(args, key, value)  # a configuration check: no process group or DeepSpeed needed
    callback = PruningCallback("magnitude", 0.5)
    with pytest.raises(ValueError, match=f"does not support {name}.*single-process, DDP and FSDP2"):
        callback.on_train_begin(args, TrainerState(max_steps=1), TrainerControl(), model=make_tiny_llama())


def test_dtensor_parameters_are_refused(tmp_path, monkeypatch):
    from torch.distributed import tensor as dtensor

    class FakeDTensor(torch.Tensor):
        pass

    monkeypatch.setattr(dtensor, "DTensor", FakeDTensor)
    model = make_tiny_llama()
    layer = model.model.layers[0].mlp.up_proj
    layer.weight = torch.nn.Parameter(layer.weight.detach().as_subclass(FakeDTensor))
    args = make_args(tmp_path, TrainingArguments, max_steps=1)
    with pytest.raises(
        ValueError,
        match="DTensor parameters such as model.layers.0.mlp.up_proj.weight.*tensor parallelism or HSDP.*FSDP2",
    ):
        PruningCallback("magnitude", 0.5).on_train_begin(
            args, TrainerState(max_steps=1), TrainerControl(), model=model
        )

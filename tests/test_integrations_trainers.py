# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""PruningCallback inside other Trainers: `report_to` backends, resuming a moved checkpoint, sharded training."""

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


def pruning_callback():
    return PruningCallback("magnitude", 0.5, schedule="linear", start_step=1, end_step=4, frequency=1)


def test_metrics_reach_tensorboard_with_a_plain_trainer(tmp_path):
    pytest.importorskip("tensorboard")
    callback = pruning_callback()
    args = make_args(tmp_path, TrainingArguments, max_steps=4, report_to="tensorboard")
    trainer = Trainer(model=make_tiny_llama(), args=args, train_dataset=dataset(32), callbacks=[callback])
    trainer.train()
    assert trainer.callback_handler.callbacks[0] is callback
    sparsity = tensorboard_scalars(tmp_path, "train/pruning/sparsity")
    assert len(sparsity) >= 4 and sparsity[-1] == pytest.approx(0.5, abs=1e-3)


def test_metrics_reach_tensorboard_with_trl_sft_trainer(tmp_path):
    pytest.importorskip("tensorboard")
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    callback = pruning_callback()
    train = Dataset.from_dict({"text": [sample_text(40, seed=i) for i in range(16)]})
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="tensorboard",
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
        callbacks=[callback],
    )
    trainer.train()
    sparsity = tensorboard_scalars(tmp_path, "train/pruning/sparsity")
    assert len(sparsity) >= 4 and sparsity[-1] == pytest.approx(0.5, abs=1e-3)
    assert tensorboard_scalars(tmp_path, "train/pruning/target_sparsity")


@pytest.mark.parametrize("method", ["movement", "bitter7"])
def test_plain_trainer_resumes_a_moved_checkpoint(tmp_path, caplog, method):
    def run(output_dir, resume=None):
        callback = PruningCallback(method, 0.5, start_step=2, end_step=14, frequency=3)
        args = make_args(output_dir, TrainingArguments, save_strategy="steps", save_steps=8)
        trainer = Trainer(model=make_tiny_llama(), args=args, train_dataset=dataset(), callbacks=[callback])
        trainer.train(resume_from_checkpoint=resume)
        return trainer, callback

    _, full = run(tmp_path / "full")
    moved = tmp_path / "elsewhere" / "my-checkpoint"
    shutil.copytree(tmp_path / "full" / "checkpoint-8", moved)
    shutil.rmtree(tmp_path / "full")  # the guess `output_dir/checkpoint-8` would find nothing
    assert (moved / PRUNING_STATE_NAME).is_file()

    saved = {}

    def remember_restored(self, path, _load=PruningCallback._load):
        _load(self, path)
        saved["path"] = path
        saved["movement"] = [score.clone() for score in self.movement] if self.movement is not None else None

    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PruningCallback, "_load", remember_restored)
            _, resumed = run(tmp_path / "fresh", resume=str(moved))
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "rebuilt" not in caplog.text
    assert saved["path"] == str(moved / PRUNING_STATE_NAME)
    assert resumed.optimizer_steps == 20 and resumed.mask_updates == full.mask_updates
    for mask_a, mask_b in zip(full.masks, resumed.masks, strict=True):
        assert torch.equal(mask_a, mask_b)
    if method == "movement":
        # The restored scores are the ones saved at step 8, not zeros.
        from safetensors.torch import load_file

        stored = load_file(str(moved / PRUNING_STATE_NAME))
        for layer, score in zip(resumed.layers, saved["movement"], strict=True):
            assert torch.equal(score, stored[f"movement.{layer.name}"]) and score.abs().sum() > 0
        for score_a, score_b in zip(full.movement, resumed.movement, strict=True):
            torch.testing.assert_close(score_a, score_b)


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

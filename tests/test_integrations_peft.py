# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""LoRA recovery of a one-shot pruned model with real `peft` and `trl` (tiny Llama, CPU, a few seconds)."""

import logging

import pytest
import torch
from test_training_trainer import make_args
from testing_utils import make_tiny_llama, make_tiny_tokenizer, sample_text
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_gradprobe import GradProbeConfig, find_prunable_layers, measure_sparsity, prune_pretrained
from hf_gradprobe.training import PruningCallback, merge_lora_and_keep_zeros


peft = pytest.importorskip("peft")

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def pruned_tiny_llama(sparsity=0.5):
    windows = torch.randint(4, 200, (6, 24), generator=torch.Generator().manual_seed(0))
    config = GradProbeConfig(
        target_sparsity=sparsity, num_calibration_samples=6, calibration_seq_len=24, num_probe_samples=3
    )
    return prune_pretrained(make_tiny_llama(), config, calibration=windows, progress=False)


def lora(model):
    return peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGET_MODULES))


def test_layers_of_a_peft_model_are_the_base_layers():
    peft_model = lora(make_tiny_llama())
    names = [layer.name for layer in find_prunable_layers(peft_model)]
    assert len(names) == 14 and all(name.endswith(".base_layer") for name in names)
    assert not any("lora_" in name for name in names)
    plain = [layer.name for layer in find_prunable_layers(make_tiny_llama())]
    assert [name.removeprefix("base_model.model.").removesuffix(".base_layer") for name in names] == plain


def test_bitter_and_movement_are_refused_on_frozen_base_layers(tmp_path):
    args = make_args(tmp_path, TrainingArguments, max_steps=1)
    peft_model = lora(make_tiny_llama())
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad])
    for method in ("bitter7", "movement"):
        with pytest.raises(ValueError, match="frozen.*'fixed'.*'magnitude'"):
            PruningCallback(method, 0.5).on_train_begin(
                args, TrainerState(max_steps=1), TrainerControl(), model=peft_model, optimizer=optimizer
            )


def test_fixed_warns_on_an_all_zero_trainable_layer(tmp_path, caplog):
    # Adapters are never prunable; any other trainable layer that is all zeros (e.g. zero-initialised) is warned.
    args = make_args(tmp_path, TrainingArguments, max_steps=1)
    model = pruned_tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.zero_()
    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    try:
        PruningCallback("fixed").on_train_begin(args, TrainerState(max_steps=1), TrainerControl(), model=model)
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "all zeros" in caplog.text and "layers.1.mlp.up_proj" in caplog.text


def test_lora_sft_recovery_keeps_exact_sparsity(tmp_path, caplog):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    model = pruned_tiny_llama(0.5)
    assert measure_sparsity(model).sparsity == pytest.approx(0.5, abs=1e-6)
    before = {layer.name: layer.weight.detach().clone() for layer in find_prunable_layers(model)}

    peft_model = lora(model)
    callback = PruningCallback("fixed")
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        max_length=32,
    )
    trainer = trl.SFTTrainer(
        model=peft_model,
        args=args,
        train_dataset=Dataset.from_dict({"text": [sample_text(40, seed=i) for i in range(16)]}),
        processing_class=make_tiny_tokenizer(),
        callbacks=[callback],
    )
    trainer.train()
    assert len(callback.layers) == 14 and callback.sparsity == pytest.approx(0.5, abs=1e-6)

    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    try:
        merged = merge_lora_and_keep_zeros(trainer.model)
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "of the LoRA update" in caplog.text
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert measure_sparsity(merged).sparsity == pytest.approx(0.5, abs=1e-6)  # exact: same zeros as before
    changed = 0
    for layer in find_prunable_layers(merged):
        old = before[layer.name]
        assert torch.equal(layer.weight == 0, old == 0), layer.name
        changed += int((layer.weight != old).sum())
    assert changed > 0  # the adapter did change the kept weights

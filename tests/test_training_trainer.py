# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""PruningTrainer / PruningCallback end to end on tiny models (CPU, a few seconds each)."""

import json
import os

import pytest
import torch
from testing_utils import TINY_VOCAB_SIZE, make_tiny_gpt2, make_tiny_llama
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_gradprobe import find_prunable_layers, measure_sparsity
from hf_gradprobe.core.masking import num_to_prune, select_masks
from hf_gradprobe.training import PRUNING_STATE_NAME, PruningCallback, PruningTrainer, PruningTrainingArguments
from hf_gradprobe.training.state import STATE_VERSION, load_pruning_state, save_pruning_state


VOCAB = TINY_VOCAB_SIZE
tiny_gpt2, tiny_llama = make_tiny_gpt2, make_tiny_llama
# `gradient_checkpointing` was renamed `activation_checkpointing` in transformers 5.2x.
CHECKPOINTING = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)


def dataset(n=64, seq=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # A learnable pattern (next token = token + 1 mod VOCAB, with noise) so the moments carry signal.
    start = torch.randint(0, VOCAB, (n, 1), generator=generator)
    ids = (start + torch.arange(seq)) % VOCAB
    noise = torch.rand(n, seq, generator=generator) < 0.2
    ids = torch.where(noise, torch.randint(0, VOCAB, (n, seq), generator=generator), ids)
    return [{"input_ids": row, "labels": row} for row in ids]


def make_args(tmp_path, args_cls=PruningTrainingArguments, **overrides):
    kwargs = {
        "output_dir": str(tmp_path),
        "max_steps": 20,
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "use_cpu": True,
        "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "max_grad_norm": 1.0,
    }
    if args_cls is PruningTrainingArguments:
        kwargs.update(
            pruning_method="bitter7",
            pruning_target_sparsity=0.5,
            pruning_start_step=2,
            pruning_end_step=14,
            pruning_frequency=3,
        )
    kwargs.update(overrides)
    return args_cls(**kwargs)


class InvariantProbe(TrainerCallback):
    """Checks, at every optimizer step, what the pruning callback promises."""

    def __init__(self, pruning: PruningCallback):
        self.pruning = pruning
        self.previous = None
        self.grad_norms = {}
        self.checked_steps = 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        grads = [layer.weight.grad for layer in self.pruning.layers]
        for grad, mask in zip(grads, self.pruning.masks, strict=True):
            assert not grad[mask].any(), "pruned weights received a gradient"

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        inner = optimizer.optimizer
        for layer, mask in zip(self.pruning.layers, self.pruning.masks, strict=True):
            assert not layer.weight[mask].any(), "a pruned weight is not exactly zero"
            for key, value in inner.state[layer.weight].items():
                if key != "step":
                    assert not value[mask].any(), f"{key} of a pruned weight is not zero"
        masks = [mask.clone() for mask in self.pruning.masks]
        if self.previous is not None:
            for before, after in zip(self.previous, masks, strict=True):
                assert torch.all(after[before]), "a pruned weight came back"
        self.previous = masks
        self.checked_steps += 1


def train(tmp_path, model=None, **overrides):
    model = model if model is not None else tiny_gpt2()
    trainer = PruningTrainer(model=model, args=make_args(tmp_path, **overrides), train_dataset=dataset())
    probe = InvariantProbe(trainer.pruning_callback)
    trainer.add_callback(probe)
    trainer.train()
    return trainer, probe


@pytest.mark.parametrize("method", ["bitter7", "bitter5", "magnitude", "movement", "bitter4"])
def test_reaches_target_with_invariants(tmp_path, method):
    trainer, probe = train(tmp_path, pruning_method=method)
    callback = trainer.pruning_callback
    assert probe.checked_steps == 20
    assert callback.optimizer_steps == 20 and callback.mask_updates == 5  # steps 2, 5, 8, 11, 14
    report = measure_sparsity(trainer.model)
    assert callback.sparsity == pytest.approx(0.5, abs=1e-4)  # exact threshold on a small pool
    assert report.sparsity >= callback.sparsity
    if method == "bitter4":  # 0.7x -> 1.3x from the first block to the last
        first, last = report.layers[0].sparsity, report.layers[-1].sparsity
        assert first == pytest.approx(0.5 * 0.7, abs=0.01) and last == pytest.approx(0.5 * 1.3, abs=0.01)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["pruning/sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert logs[-1]["pruning/target_sparsity"] == 0.5
    assert {"pruning/threshold", "pruning/mask_update_seconds"} <= set(logs[5])
    targets = [entry["pruning/target_sparsity"] for entry in logs]
    assert targets == sorted(targets)


def test_per_row_prunes_every_output_row(tmp_path):
    # GPT-2's Conv1D stores (in, out): rows are output units whatever the storage orientation.
    trainer, probe = train(tmp_path, pruning_method="magnitude", pruning_comparison_group="per_row")
    callback = trainer.pruning_callback
    assert probe.checked_steps == 20 and callback.mask_updates == 5
    assert any(layer.transposed and layer.weight.shape[0] != layer.weight.shape[1] for layer in callback.layers)
    for layer, mask in zip(callback.layers, callback.masks, strict=True):
        rows = layer.out_in(mask)
        assert torch.all(rows.sum(dim=1) == num_to_prune(rows.shape[1], 0.5)), layer.name
    assert callback.sparsity == pytest.approx(0.5, abs=1e-4)


def test_state_file_round_trip_and_version_check(tmp_path):
    names = ["h.0.attn", "h.0.mlp"]
    masks = [torch.rand(4, 6) < 0.5, torch.rand(6, 4) < 0.5]
    movement = [torch.randn(4, 6), torch.randn(6, 4)]
    path = str(tmp_path / PRUNING_STATE_NAME)
    save_pruning_state(path, names, masks, movement, {"method": "movement", "layers": names, "mask_updates": 3})
    meta, loaded, scores = load_pruning_state(path, names, "movement", [torch.device("cpu")] * 2)
    assert meta["version"] == STATE_VERSION and meta["mask_updates"] == 3
    assert all(torch.equal(a, b) for a, b in zip(masks, loaded, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(movement, scores, strict=True))
    with pytest.raises(ValueError, match="same pruning arguments"):
        load_pruning_state(path, names, "magnitude", [torch.device("cpu")] * 2)

    from safetensors.torch import save_file

    newer = {"version": STATE_VERSION + 1, "method": "movement", "layers": names}
    save_file({"mask.h.0.attn": masks[0]}, path, metadata={"pruning_state": json.dumps(newer)})
    with pytest.raises(ValueError, match=rf"version {STATE_VERSION + 1}.*up to {STATE_VERSION}.*Upgrade hf_gradprobe"):
        load_pruning_state(path, names, "movement", [torch.device("cpu")] * 2)
    save_file({"mask.h.0.attn": masks[0]}, path)
    with pytest.raises(ValueError, match="holds no pruning state"):
        load_pruning_state(path, names, "movement", [torch.device("cpu")] * 2)


def test_resume_refuses_a_newer_state_version(tmp_path):
    train(tmp_path / "full", save_strategy="steps", save_steps=8)
    checkpoint = tmp_path / "full" / "checkpoint-8"
    state_file = str(checkpoint / PRUNING_STATE_NAME)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(state_file)
    with safe_open(state_file, framework="pt") as handle:
        meta = json.loads(handle.metadata()["pruning_state"])
    save_file(tensors, state_file, metadata={"pruning_state": json.dumps({**meta, "version": STATE_VERSION + 1})})
    resumed = PruningTrainer(model=tiny_gpt2(), args=make_args(tmp_path / "resumed"), train_dataset=dataset())
    with pytest.raises(ValueError, match="Upgrade hf_gradprobe"):
        resumed.train(resume_from_checkpoint=str(checkpoint))


def test_gradient_clipping_sees_masked_gradients(tmp_path):
    # Hooks mask gradients during backward, so the norm the Trainer clips with (and logs) is the masked one.
    norms = []

    class NormProbe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

    model = tiny_gpt2()
    trainer = PruningTrainer(model=model, args=make_args(tmp_path, max_grad_norm=1e6), train_dataset=dataset())
    trainer.add_callback(NormProbe())
    trainer.train()
    logged = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    assert logged == pytest.approx(norms, rel=1e-5)


def test_an_optimizer_that_moves_zeros_still_ends_every_step_with_them(tmp_path):
    # AdamW keeps masked weights at 0 by itself (zero gradient and moments); an optimizer with its own update
    # path (here, a drift added to every weight) gets its pruned weights zeroed again after each step.
    from hf_gradprobe.training.optimizer import keeps_zeros

    class DriftingSGD(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            loss = super().step(closure)
            for group in self.param_groups:
                for param in group["params"]:
                    param.add_(1e-3)
            return loss

    model = tiny_gpt2()
    optimizer = DriftingSGD(model.parameters(), lr=1e-2)
    assert not keeps_zeros(optimizer) and keeps_zeros(torch.optim.AdamW(model.parameters()))
    args = make_args(tmp_path, pruning_method="magnitude")
    trainer = PruningTrainer(model=model, args=args, train_dataset=dataset(), optimizers=(optimizer, None))
    probe = InvariantProbe(trainer.pruning_callback)
    trainer.add_callback(probe)
    trainer.train()
    assert probe.checked_steps == 20 and trainer.pruning_callback.sparsity == pytest.approx(0.5, abs=1e-4)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    trainer, _ = train(
        tmp_path,
        max_steps=10,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=4,
        pruning_start_step=1,
        pruning_end_step=9,
        pruning_frequency=2,
    )
    callback = trainer.pruning_callback
    assert callback.optimizer_steps == 10 and callback.mask_updates == 5  # steps 1, 3, 5, 7, 9
    assert callback.sparsity == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("method", ["bitter7", "movement"])
def test_resume_gives_bit_identical_masks(tmp_path, method):
    full, _ = train(tmp_path / "full", pruning_method=method, save_strategy="steps", save_steps=8)
    checkpoint = tmp_path / "full" / "checkpoint-8"
    assert (checkpoint / PRUNING_STATE_NAME).is_file()
    resumed = PruningTrainer(
        model=tiny_gpt2(), args=make_args(tmp_path / "resumed", pruning_method=method), train_dataset=dataset()
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = full.pruning_callback, resumed.pruning_callback
    assert b.optimizer_steps == 20 and b.mask_updates == a.mask_updates
    for mask_a, mask_b in zip(a.masks, b.masks, strict=True):
        assert torch.equal(mask_a, mask_b)
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_fixed_keeps_one_shot_zeros(tmp_path):
    model = tiny_llama()
    layers = find_prunable_layers(model)
    with torch.no_grad():
        for layer, mask in zip(
            layers, select_masks([layer.weight.abs() for layer in layers], 0.6, "global"), strict=True
        ):
            layer.weight.masked_fill_(mask, 0)
    zeros_before = [(layer.weight == 0).clone() for layer in layers]
    trainer, _ = train(tmp_path, model=model, pruning_method="fixed")
    for layer, before in zip(layers, zeros_before, strict=True):
        assert torch.equal(layer.weight == 0, before)  # same zeros, and every other weight kept training
    assert trainer.pruning_callback.mask_updates == 0
    assert measure_sparsity(model).sparsity == pytest.approx(0.6, abs=1e-4)


def test_plain_trainer_with_callback_and_sampled_threshold(tmp_path):
    callback = PruningCallback(
        "bitter3", 0.5, schedule="linear", start_step=2, end_step=14, frequency=4, sample_fraction=0.5, exact_limit=0
    )
    trainer = Trainer(
        model=tiny_llama(), args=make_args(tmp_path, TrainingArguments), train_dataset=dataset(), callbacks=[callback]
    )
    trainer.train()
    assert callback.sparsity == pytest.approx(0.5, abs=0.02)  # sampled: within a few standard deviations
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["pruning/sparsity"] == pytest.approx(callback.sparsity)


def test_bf16_and_gradient_checkpointing(tmp_path):
    trainer, probe = train(tmp_path, model=tiny_llama(), bf16=True, **{CHECKPOINTING: True})
    assert probe.checked_steps == 20
    assert trainer.pruning_callback.sparsity == pytest.approx(0.5, abs=1e-4)


def test_skipped_fp16_steps_do_not_advance_the_schedule():
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    class Wrapped:  # what Accelerate hands callbacks: the torch optimizer plus `step_was_skipped`
        def __init__(self, optimizer):
            self.optimizer, self.step_was_skipped = optimizer, False

    wrapped = Wrapped(optimizer)
    callback = PruningCallback("bitter7", 0.5, schedule="linear", start_step=2, end_step=6, frequency=2)
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 10
    callback.on_train_begin(args, state, control, model=model, optimizer=wrapped)
    batch = torch.randint(0, VOCAB, (4, 8))
    skipped = {1, 3, 4}
    for i in range(9):
        model(input_ids=batch, labels=batch).loss.backward()
        if i in skipped:
            wrapped.step_was_skipped = True  # overflow: the scaler did not call optimizer.step()
        else:
            wrapped.step_was_skipped = False
            optimizer.step()
        callback.on_optimizer_step(args, state, control, optimizer=wrapped)
        optimizer.zero_grad()
    assert callback.skipped_steps == 3 and callback.optimizer_steps == 6
    assert callback.mask_updates == 3  # real steps 2, 4, 6
    assert callback.sparsity == pytest.approx(0.5, abs=1e-4)
    callback.on_train_end(args, state, control)


def test_bitter_with_sgd_fails_at_train_start(tmp_path):
    trainer = PruningTrainer(model=tiny_gpt2(), args=make_args(tmp_path, optim="sgd"), train_dataset=dataset())
    with pytest.raises(ValueError, match=r"bitter7.*SGD.*adamw_torch.*magnitude"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_nothing_to_prune_fails_at_init(tmp_path):
    with pytest.raises(ValueError, match="Nothing to prune"):
        PruningTrainer(model=tiny_gpt2(), args=make_args(tmp_path, pruning_targets=["no_such_module"]))


def test_end_before_start_once_resolved(tmp_path):
    # 15 (absolute) vs 0.5 of 20 steps = 10: only detectable once max_steps is known.
    trainer = PruningTrainer(
        model=tiny_gpt2(),
        args=make_args(tmp_path, pruning_start_step=15, pruning_end_step=0.5),
        train_dataset=dataset(),
    )
    with pytest.raises(ValueError, match=r"pruning_end_step.*before.*pruning_start_step"):
        trainer.train()


def test_plain_training_arguments_rejected(tmp_path):
    with pytest.raises(TypeError, match="PruningTrainingArguments"):
        PruningTrainer(model=tiny_gpt2(), args=make_args(tmp_path, TrainingArguments))


def test_step_budget_through_trainer_and_refused_silently_elsewhere(tmp_path):
    trainer = PruningTrainer(
        model=tiny_gpt2(),
        args=make_args(tmp_path, max_steps=10, pruning_method="bitter3", pruning_adjust_step_budget=True),
        train_dataset=dataset(),
    )
    assert trainer.args.max_steps == 13
    args = make_args(tmp_path, max_steps=10, pruning_method="bitter3", pruning_adjust_step_budget=True)
    plain = Trainer(model=tiny_gpt2(), args=args, train_dataset=dataset(), callbacks=[PruningCallback.from_args(args)])
    with pytest.raises(ValueError, match="pruning_adjust_step_budget"):
        plain.train()
    assert not os.path.exists(tmp_path / "checkpoint-1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs a GPU")
@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_fp16_overflow_steps_are_skipped_by_the_schedule(tmp_path, optim):
    class OverflowAt(PruningTrainer):
        # Blow the loss up on two steps: the scaled fp16 gradients overflow and the scaler skips the step.
        def compute_loss(self, model, inputs, *pargs, **kwargs):
            loss = super().compute_loss(model, inputs, *pargs, **kwargs)
            return loss * 1e35 if self.state.global_step in (3, 4) else loss

    args = make_args(
        tmp_path, use_cpu=False, fp16=True, optim=optim, pruning_start_step=2, pruning_end_step=14, pruning_frequency=3
    )
    trainer = OverflowAt(model=tiny_gpt2(), args=args, train_dataset=dataset())
    probe = InvariantProbe(trainer.pruning_callback)
    trainer.add_callback(probe)
    trainer.train()
    callback = trainer.pruning_callback
    assert callback.skipped_steps == 2 and callback.optimizer_steps == 18
    assert callback.mask_updates == 5 and callback.sparsity == pytest.approx(0.5, abs=1e-4)


class _PoisonWeights(TrainerCallback):
    """Writes a NaN into a weight after optimizer step ``at``: the loss, gradients and weights diverge."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            with torch.no_grad():
                model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")


@pytest.mark.parametrize("sample_fraction", [None, 0.5])
def test_nonfinite_scores_skip_the_mask_update_and_never_overshoot(tmp_path, caplog, sample_fraction):
    model = tiny_gpt2()
    args = make_args(tmp_path, pruning_method="magnitude", pruning_sample_fraction=sample_fraction)
    trainer = PruningTrainer(model=model, args=args, train_dataset=dataset())
    trainer.add_callback(_PoisonWeights(at=6))
    callback = trainer.pruning_callback
    with caplog.at_level("WARNING"):
        trainer.train()
    assert callback.mask_updates == 2 and callback.nonfinite_updates == 3  # steps 2, 5 ran; 8, 11, 14 skipped
    assert callback.sparsity <= callback.target_at(5) + 0.01 < 0.5  # sampled thresholds are within 1%
    assert "hold NaN or inf" in caplog.text and "update is skipped" in caplog.text


def test_nonfinite_scores_can_raise(tmp_path):
    args = make_args(tmp_path, pruning_method="magnitude", pruning_on_nonfinite="raise")
    trainer = PruningTrainer(model=tiny_gpt2(), args=args, train_dataset=dataset())
    trainer.add_callback(_PoisonWeights(at=6))
    with pytest.raises(FloatingPointError, match="step 8.*NaN or inf"):
        trainer.train()
    with pytest.raises(ValueError, match="pruning_on_nonfinite"):
        make_args(tmp_path, pruning_on_nonfinite="ignore")
    with pytest.raises(ValueError, match="on_nonfinite"):
        PruningCallback("magnitude", 0.5, on_nonfinite="warn")


def test_warns_when_processes_are_distributed_but_the_trainer_is_not(tmp_path, monkeypatch, caplog):
    import logging

    from hf_gradprobe.training import distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda *a, **k: 2)
    args = make_args(tmp_path, max_steps=1, pruning_method="magnitude")
    assert distributed.ddp_inactive_message(args) is not None
    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    try:
        callback = PruningCallback("magnitude", 0.5)
        callback.on_train_begin(args, TrainerState(max_steps=1), TrainerControl(), model=tiny_gpt2())
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert "DDP is NOT active" in caplog.text and "drift apart" in caplog.text
    monkeypatch.setattr(distributed, "is_distributed", lambda: False)
    assert distributed.ddp_inactive_message(args) is None


def test_a_ramp_the_masks_cannot_follow_is_warned_about_at_train_begin(tmp_path, caplog):
    # Issue 20, item 13: 75 steps with the default frequency (50): the cubic ramp from step 8 to 53 is one jump at
    # step 53, and the logs show the target rising while the masks stay empty. The warning comes before any step.
    steps = []

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps.append(caplog.text.count("is longer than the cubic ramp"))

    args = make_args(
        tmp_path,
        max_steps=75,
        per_device_train_batch_size=2,
        logging_steps=5,
        pruning_start_step=0.1,
        pruning_end_step=0.7,
        pruning_frequency=50,
    )
    trainer = PruningTrainer(model=tiny_gpt2(), args=args, train_dataset=dataset(n=16, seq=8), callbacks=[FirstStep()])
    import logging

    handler_logger = logging.getLogger("hf_gradprobe")
    handler_logger.addHandler(caplog.handler)
    try:
        trainer.train()
    finally:
        handler_logger.removeHandler(caplog.handler)
    assert steps[0] >= 1  # warned at train begin
    assert "steps [8, 53] only" in caplog.text and "one jump at step 53" in caplog.text
    logs = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    assert logs[50]["pruning/target_sparsity"] > 0.4 and logs[50]["pruning/sparsity"] == 0
    assert logs[55]["pruning/sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert trainer.pruning_callback.mask_updates == 2


def test_the_trainer_builds_the_plan_once_and_hands_it_to_its_callback(tmp_path):
    from hf_gradprobe.training import PruningPlan

    args = make_args(tmp_path, pruning_method="bitter4")
    trainer = PruningTrainer(model=tiny_gpt2(), args=args, train_dataset=dataset())
    plan = trainer.pruning_callback.plan
    assert plan == PruningPlan.from_args(args) and plan.layer_adaptive and plan.comparison_group == "per_layer"
    assert args.pruning_layer_adaptive is None and args.pruning_comparison_group is None  # nothing written back

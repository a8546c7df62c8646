# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Sparsity schedules, update steps, layer-adaptive ramp, the ramp's warnings and argument validation."""

import math

import pytest
import torch
from transformers import HfArgumentParser

from hf_gradprobe.core.masking import COMPARISON_GROUPS, sampled_threshold
from hf_gradprobe.oneshot.config import GradProbeConfig
from hf_gradprobe.training import (
    PruningCallback,
    PruningPlan,
    PruningTrainingArguments,
    Ramp,
    apply_step_budget,
)
from hf_gradprobe.training.schedule import (
    is_update_step,
    layer_adaptive_scales,
    layer_sparsities,
    resolve_step,
    resolve_steps,
    schedule_progress,
    scheduled_sparsity,
    validate_step,
)


def test_schedule_values():
    # start 100, end 300, target 0.5; p = 0.5 at step 200.
    assert scheduled_sparsity(50, 0.5, 100, 300, "linear") == 0.0
    assert scheduled_sparsity(200, 0.5, 100, 300, "linear") == pytest.approx(0.25)
    assert scheduled_sparsity(200, 0.5, 100, 300, "cubic") == pytest.approx(0.0625)
    assert scheduled_sparsity(200, 0.5, 100, 300, "zhu_gupta") == pytest.approx(0.4375)
    for schedule in ("linear", "cubic", "zhu_gupta"):
        assert scheduled_sparsity(300, 0.5, 100, 300, schedule) == 0.5
        assert scheduled_sparsity(10_000, 0.5, 100, 300, schedule) == 0.5
        values = [scheduled_sparsity(t, 0.5, 100, 300, schedule) for t in range(400)]
        assert values == sorted(values)  # non-decreasing: masks can only grow
    # The reference table (warmup 100, ramp end 3000, p^3): 0.0149 at 1000, 0.2834 at 2500.
    assert scheduled_sparsity(1000, 0.5, 100, 3000, "cubic") == pytest.approx(0.0149, abs=1e-4)
    assert scheduled_sparsity(2500, 0.5, 100, 3000, "cubic") == pytest.approx(0.2834, abs=1e-4)
    assert schedule_progress(5, 5, 5) == 1.0  # one-shot when start == end
    with pytest.raises(ValueError, match="before the start"):
        schedule_progress(1, 10, 5)
    with pytest.raises(ValueError, match="linear"):
        scheduled_sparsity(1, 0.5, 0, 10, "exponential")


def test_update_steps():
    steps = [t for t in range(40) if is_update_step(t, 10, 32, 5)]
    assert steps == [10, 15, 20, 25, 30, 32]  # every 5 from the start, always the end, nothing after
    assert [t for t in range(5) if is_update_step(t, 0, 3, 1)] == [1, 2, 3]  # step 0 is before any update
    with pytest.raises(ValueError, match="pruning_frequency"):
        is_update_step(1, 0, 3, 0)


def test_resolve_step():
    assert resolve_step(0.1, 1000) == 100
    assert resolve_step(250, 1000) == 250
    assert resolve_step(0, 1000) == 0
    with pytest.raises(ValueError, match="whole number"):
        resolve_step(2.5, 1000, "pruning_end_step")
    with pytest.raises(ValueError, match="pruning_start_step"):
        resolve_step(-1, 1000, "pruning_start_step")
    assert resolve_steps(0.1, 0.7, 1000) == (100, 700)
    with pytest.raises(ValueError, match=r"pruning_end_step.*before.*pruning_start_step.*step 10 < step 15"):
        resolve_steps(15, 0.5, 20)


@pytest.mark.parametrize("value", [2.5, -1, float("nan"), True, "3"])
def test_one_step_check_everywhere(value, tmp_path):
    # The arguments, the callback and resolve_step reject a step value with the same message.
    with pytest.raises(ValueError) as direct:
        validate_step(value, "pruning_start_step")
    message = str(direct.value)
    with pytest.raises(ValueError) as callback:
        PruningCallback("magnitude", 0.5, start_step=value, end_step=0.9)
    with pytest.raises(ValueError) as arguments:
        PruningTrainingArguments(output_dir=str(tmp_path), report_to=[], pruning_start_step=value)
    with pytest.raises(ValueError) as resolved:
        resolve_step(value, 100, "pruning_start_step")
    assert str(callback.value) == str(arguments.value) == str(resolved.value) == message


def test_layer_adaptive_ramp_keeps_global_target():
    positions = [0.0, 0.5, 1.0]
    scales = layer_adaptive_scales(positions, [100, 100, 100])
    assert scales == pytest.approx([0.7, 1.0, 1.3])
    sparsities = layer_sparsities(0.5, scales, [100, 100, 100])
    assert sparsities == pytest.approx([0.35, 0.5, 0.65])
    # Unequal sizes: renormalised so the size-weighted mean is the target (unnormalised, it would overshoot).
    numels = [10, 10, 1000]
    sparsities = layer_sparsities(0.5, layer_adaptive_scales(positions, numels), numels)
    assert sum(s * n for s, n in zip(sparsities, numels, strict=True)) / sum(numels) == pytest.approx(0.5)
    assert sparsities[0] < sparsities[1] < sparsities[2]
    # A capped layer hands its excess to the others.
    sparsities = layer_sparsities(0.9, [0.5, 1.5], [100, 100], cap=0.95)
    assert max(sparsities) <= 0.95 and sum(sparsities) / 2 == pytest.approx(0.9)


def test_options_defaults_per_method():
    bitter4 = PruningPlan("bitter4", 0.5)
    assert (bitter4.schedule, bitter4.comparison_group, bitter4.layer_adaptive) == ("cubic", "per_layer", True)
    magnitude = PruningPlan("magnitude", 0.5)
    assert (magnitude.schedule, magnitude.comparison_group, magnitude.layer_adaptive) == ("linear", "global", False)
    assert PruningPlan().method.name == "bitter7" and PruningPlan().schedule == "cubic"


def test_the_arguments_are_validated_once_and_keep_the_values_given(tmp_path):
    # The per-method defaults live in the plan; `args` keeps what the user set (None included).
    args = PruningTrainingArguments(output_dir=str(tmp_path), report_to=[], pruning_method="bitter4")
    assert (args.pruning_schedule, args.pruning_comparison_group, args.pruning_layer_adaptive) == (None, None, None)
    plan = PruningPlan.from_args(args)
    assert (plan.method.name, plan.schedule, plan.comparison_group, plan.layer_adaptive) == (
        "bitter4",
        "cubic",
        "per_layer",
        True,
    )
    callback = PruningCallback.from_args(args)
    assert callback.plan == plan
    with pytest.raises(TypeError, match="either `plan=`"):
        PruningCallback("magnitude", plan=plan)
    with pytest.raises(TypeError, match="frequncy"):
        PruningCallback("magnitude", 0.5, frequncy=3)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.frequency = 3


def test_update_steps_of_a_ramp_are_those_of_is_update_step():
    for start, end, frequency in [(0, 3, 1), (10, 32, 5), (8, 53, 50), (2, 14, 3), (5, 5, 2), (0, 40, 7)]:
        ramp = Ramp(0.5, "linear", start, end, frequency)
        for after, until in [(0, 60), (9, 31), (0, end), (end, 60), (3, 4)]:
            expected = [t for t in range(after + 1, until + 1) if is_update_step(t, start, end, frequency)]
            assert ramp.update_steps(after, until) == expected, (start, end, frequency, after, until)


def test_a_ramp_shorter_than_the_frequency_is_warned_about():
    # Issue 20, item 13: 75 steps with the defaults (start 0.1, end 0.7, frequency 50) update at steps 8 and 53
    # only; the cubic ramp is one jump at step 53.
    ramp = PruningPlan("bitter7", 0.5).ramp(75)
    assert (ramp.start, ramp.end, ramp.update_steps(0, 75)) == (8, 53, [8, 53])
    (message,) = ramp.warnings(75)
    assert "`pruning_frequency`=50 is longer than the cubic ramp" in message and "steps [8, 53]" in message
    assert "one jump at step 53" in message and "at most 4" in message


def test_too_few_updates_and_an_end_after_the_run_are_warned_about():
    # 100 steps: updates at 10, 60 and 70; before step 60 the schedule asks 27% while the masks hold none.
    (message,) = PruningPlan("bitter7", 0.5).ramp(100).warnings(100)
    assert "gets 3 mask updates (steps [10, 60, 70])" in message and "at step 59" in message
    assert "the masks hold 0.00%" in message
    late = Ramp(0.5, "linear", 2, 30, 3)
    messages = late.warnings(20)
    assert len(messages) == 1 and "resolves to optimizer step 30, after the last training step (20)" in messages[0]
    # Cubic, every 10 of 28 steps: before step 30 the schedule asks 44.8% while the masks hold 18.2% (step 22).
    (message,) = Ramp(0.5, "cubic", 2, 30, 10).warnings(40)
    assert "too few to follow it" in message and "at step 29" in message and "18.22%" in message
    assert Ramp(0.5, "linear", 2, 30, 10).warnings(40) == []  # linear: each update prunes a third at most


@pytest.mark.parametrize(
    "ramp,max_steps",
    [
        (PruningPlan("bitter7", 0.5).ramp(2000), 2000),  # the README's run: 25 updates
        (Ramp(0.5, "linear", 2, 14, 3), 20),  # the tests' linear ramp: 5 updates, a quarter of the target each
        (Ramp(0.5, "linear", 0, 1, 1), 1),  # one update on purpose: the masks follow the ramp at every step
        (Ramp(0.5, "cubic", 7, 7, 50), 20),  # start == end: a one-shot prune at step 7
    ],
)
def test_ramps_the_masks_can_follow_are_not_warned_about(ramp, max_steps):
    assert ramp.warnings(max_steps) == []


def test_a_resumed_ramp_is_checked_from_the_resumed_step():
    ramp = Ramp(0.5, "linear", 2, 40, 10)
    assert ramp.warnings(40, step=0) == []
    # Re-planned at step 35 from 30%: the 5 steps left get one update, at the end.
    replanned = ramp.with_steps(2, 40, (35, 0.3))
    (message,) = replanned.warnings(40, step=35)
    assert "steps [40]" in message


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pruning_target_sparsity": 1.0}, r"pruning_target_sparsity.*\[0, 1\)"),
        ({"pruning_target_sparsity": -0.1}, r"pruning_target_sparsity"),
        ({"pruning_start_step": 100, "pruning_end_step": 50}, r"pruning_end_step.*before.*pruning_start_step"),
        ({"pruning_start_step": 0.5, "pruning_end_step": 0.2}, r"pruning_end_step.*before"),
        ({"pruning_method": "bitter10"}, r"pruning_method.*bitter0"),
        ({"pruning_schedule": "exp"}, r"pruning_schedule.*linear"),
        ({"pruning_frequency": 0}, r"pruning_frequency"),
        ({"pruning_sample_fraction": 0.0}, r"pruning_sample_fraction"),
        ({"pruning_comparison_group": "per_column"}, r"pruning_comparison_group.*per_row.*per_layer.*global"),
        ({"pruning_method": "bitter4", "pruning_comparison_group": "global"}, r"per_layer"),
    ],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        PruningTrainingArguments(output_dir=str(tmp_path), report_to=[], **kwargs)


@pytest.mark.parametrize("group", COMPARISON_GROUPS)
def test_every_core_comparison_group_is_accepted(group, tmp_path):
    args = PruningTrainingArguments(
        output_dir=str(tmp_path), report_to=[], pruning_method="magnitude", pruning_comparison_group=group
    )
    assert args.pruning_comparison_group == group
    assert PruningCallback.from_args(args).plan.comparison_group == group


def test_parses_with_the_one_shot_config(tmp_path):
    # One command line for one-shot pruning then training: no field of the two dataclasses clashes.
    parser = HfArgumentParser((GradProbeConfig, PruningTrainingArguments))
    config, args = parser.parse_args_into_dataclasses(
        [
            "--target_sparsity",
            "0.4",
            "--calibration_seed",
            "5",
            "--pruning_method",
            "magnitude",
            "--pruning_target_sparsity",
            "0.6",
            "--pruning_comparison_group",
            "per_row",
            "--output_dir",
            str(tmp_path),
            "--seed",
            "3",
            "--report_to",
            "none",
        ]
    )
    assert (config.target_sparsity, config.calibration_seed) == (0.4, 5)
    assert (args.pruning_method, args.pruning_target_sparsity, args.pruning_comparison_group) == (
        "magnitude",
        0.6,
        "per_row",
    )
    assert args.seed == 3 and args.output_dir == str(tmp_path)


def test_no_probe_ignores_probe_only_limits(tmp_path):
    # Without the probe, `num_probe_samples` may exceed the calibration samples: the limit is the probe's alone.
    config = GradProbeConfig(probe=False, num_probe_samples=16, num_calibration_samples=4)
    assert config.probe is False
    parser = HfArgumentParser((GradProbeConfig, PruningTrainingArguments))
    config, _ = parser.parse_args_into_dataclasses(
        ["--probe", "false", "--num_calibration_samples", "4", "--output_dir", str(tmp_path), "--report_to", "none"]
    )
    assert config.probe is False and config.num_calibration_samples == 4


def test_step_budget_is_opt_in_and_logged(tmp_path, caplog):
    args = PruningTrainingArguments(output_dir=str(tmp_path), report_to=[], max_steps=100, pruning_method="bitter3")
    assert apply_step_budget(args).max_steps == 100  # off by default
    args = PruningTrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        max_steps=100,
        pruning_method="bitter3",
        pruning_adjust_step_budget=True,
    )
    from transformers.utils import logging

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            assert apply_step_budget(args).max_steps == 130
            assert apply_step_budget(args).max_steps == 130  # applied once
    finally:
        logging.disable_propagation()
    assert "max_steps` 100 -> 130" in caplog.text
    args = PruningTrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        max_steps=100,
        pruning_method="bitter2",
        pruning_adjust_step_budget=True,
    )
    assert apply_step_budget(args).max_steps == 121


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU"))]
)
def test_sampled_threshold_on_the_scores_device(device):
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(300, 200, generator=generator).to(device), torch.rand(5000, generator=generator).to(device)]
    threshold = sampled_threshold(scores, 0.3, 0.2, seed=7)
    assert threshold == sampled_threshold(scores, 0.3, 0.2, seed=7)  # seeded: the same on every rank
    achieved = sum(int((s <= threshold).sum()) for s in scores) / sum(s.numel() for s in scores)
    assert achieved == pytest.approx(0.3, abs=0.01)
    assert sampled_threshold(scores, 0.0, 0.2) == -math.inf

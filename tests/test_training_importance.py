# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Per-variant importance scores on a hand-made AdamW state (expected values written out element by element), and
the registered method objects: what each reads, accumulates and defaults to."""

import math

import pytest
import torch

from hf_gradprobe.core.masking import magnitude_scores
from hf_gradprobe.training import METHODS, PruningMethod, get_method
from hf_gradprobe.training.importance import (
    EPS,
    accumulate_movement_,
    bitter5_scores,
    bitter7_scores,
    bitter8_scores,
    movement_to_zero,
)


W = [[-2.0, 1.0], [0.5, -0.25]]
M = [[0.1, -0.2], [0.0, 0.3]]  # exp_avg
V = [[0.04, 0.01], [1e-10, 0.09]]  # exp_avg_sq
STEP = 3.0
BETA1 = 0.9


def sign(x):
    return (x > 0) - (x < 0)


def z(w, m, v):  # movement to zero: > 0 when Adam pushes w towards 0
    return sign(w) * m / (math.sqrt(v) + EPS)


EXPECTED = {
    "bitter0": lambda w, m, v: w * w * abs(m) / (math.sqrt(v) + EPS),
    "bitter1": lambda w, m, v: abs(w),
    "bitter2": lambda w, m, v: abs(w),
    "bitter3": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS),
    "bitter4": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS),
    "bitter5": lambda w, m, v: -z(w, m, v) + 0.1 * abs(w),
    "bitter6": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS) * math.sqrt(m * m / (v + EPS)),
    "bitter7": lambda w, m, v: abs(w) * (abs(v) + EPS) ** 0.25,
    "bitter8": lambda w, m, v: abs(w) * math.sqrt(abs(m / (1 - BETA1**STEP)) + EPS),
    "bitter9": lambda w, m, v: abs(w) * math.sqrt(abs(m) + EPS) - 0.1 * z(w, m, v),
}


def state(dtype=torch.float32):
    return {
        "exp_avg": torch.tensor(M, dtype=dtype),
        "exp_avg_sq": torch.tensor(V, dtype=dtype),
        "step": torch.tensor(STEP),
    }


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_variant_matches_hand_computed_values(method):
    scores = get_method(method).scores(torch.tensor(W), state(), beta1=BETA1)
    assert scores.dtype == torch.float32 and scores.shape == (2, 2)
    expected = torch.tensor([[EXPECTED[method](W[i][j], M[i][j], V[i][j]) for j in range(2)] for i in range(2)])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-9)


def test_bitter5_prunes_weights_adam_drives_to_zero():
    # Same |w|, m and v; only the direction differs. w=+1 with m>0 gets update -lr*m/sqrt(v) < 0: towards 0.
    w = torch.tensor([1.0, 1.0])
    m = torch.tensor([0.1, -0.1])
    v = torch.tensor([0.01, 0.01])
    assert movement_to_zero(w, m, v)[0] > 0 > movement_to_zero(w, m, v)[1]
    scores = bitter5_scores(w, m, v)
    assert scores[0] < scores[1]  # the one shrinking towards zero is pruned first


def test_bitter8_applies_bias_correction():
    w, m = torch.tensor([1.0]), torch.tensor([1e-4])
    early = bitter8_scores(w, m, step=1, beta1=0.9)  # m_hat = m / 0.1
    torch.testing.assert_close(early, torch.tensor([math.sqrt(1e-3 + EPS)]))
    late = bitter8_scores(w, m, step=10_000, beta1=0.9)  # correction ~1
    torch.testing.assert_close(late, torch.tensor([math.sqrt(1e-4 + EPS)]))
    with pytest.raises(ValueError, match="step"):
        bitter8_scores(w, m, step=0)


@pytest.mark.parametrize(
    "weight_dtype,state_dtype", [(torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)]
)
def test_low_precision_does_not_collapse_to_magnitude(weight_dtype, state_dtype):
    # In fp16, v ~ 1e-8 underflows to 0 and (v + 1e-5)^0.25 is nearly constant, so the ranking would become
    # |w|. Computed in fp32, v still orders weights of equal |w|.
    w = torch.full((4,), 0.02, dtype=weight_dtype)
    v = torch.tensor([1e-8, 4e-8, 1e-7, 1e-6]).to(state_dtype)
    scores = bitter7_scores(w, v)
    assert scores.dtype == torch.float32
    assert torch.all(scores[1:] > scores[:-1])
    assert scores[-1] / scores[0] > 2.5  # (1e-6 + 1e-8)^.25 / (2e-8)^.25 ~ 2.7; fp16 would give ~1.02


def test_movement_accumulates_minus_w_times_grad():
    scores = torch.zeros(3)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)
    accumulate_movement_(scores, w, torch.tensor([0.5, 0.5, -1.0], dtype=torch.bfloat16))
    accumulate_movement_(scores, w, torch.tensor([0.5, 0.5, -1.0], dtype=torch.bfloat16))
    torch.testing.assert_close(scores, torch.tensor([-1.0, 2.0, 1.0]))


def test_missing_state_names_the_key_and_the_fix():
    with pytest.raises(KeyError, match="exp_avg_sq.*adamw_torch"):
        get_method("bitter7").scores(torch.ones(2), {"momentum_buffer": torch.ones(2)})
    with pytest.raises(ValueError, match=r"pruning_method.*bitter0.*fixed"):
        get_method("bitter10")
    assert set(EXPECTED) | {"magnitude", "movement", "fixed"} == set(METHODS)


# What the AdamWPrune recipe and the methods' formulas say about each method (the tables the registry replaces).
READS = {
    "bitter0": ("exp_avg", "exp_avg_sq"),
    "bitter1": (),
    "bitter2": (),
    "bitter3": ("exp_avg",),
    "bitter4": ("exp_avg",),
    "bitter5": ("exp_avg", "exp_avg_sq"),
    "bitter6": ("exp_avg", "exp_avg_sq"),
    "bitter7": ("exp_avg_sq",),
    "bitter8": ("exp_avg", "step"),
    "bitter9": ("exp_avg", "exp_avg_sq"),
    "magnitude": (),
    "movement": (),
    "fixed": (),
}
LINEAR = {"bitter0", "bitter1", "bitter2", "magnitude", "movement", "fixed"}
BUDGET = {"bitter2": 1.21, **{f"bitter{i}": 1.30 for i in (3, 4, 5, 6, 8, 9)}}


@pytest.mark.parametrize("name", list(READS))
def test_every_method_declares_what_it_reads_and_its_defaults(name):
    method = METHODS.get(name)
    assert isinstance(method, PruningMethod) and method.name == name and get_method(method) is method
    assert method.optimizer_state == READS[name] and method.reads_optimizer_state == bool(READS[name])
    assert method.reads_gradients == method.accumulates == (name == "movement")
    assert method.updates_masks == (name != "fixed")
    assert method.bias_corrects == (name == "bitter8")
    assert method.default_schedule == ("linear" if name in LINEAR else "cubic")
    assert method.layer_adaptive_default == (name == "bitter4")
    assert method.step_budget_factor == BUDGET.get(name, 1.0)


def test_magnitude_methods_use_the_one_magnitude_score():
    weight = torch.tensor(W, dtype=torch.bfloat16)
    for name in ("magnitude", "bitter1", "bitter2"):
        assert torch.equal(get_method(name).scores(weight, {}), magnitude_scores(weight))


def test_movement_scores_are_a_copy_of_the_accumulated_ones_and_fixed_has_none():
    movement = get_method("movement")
    accumulated = torch.tensor([1.0, -2.0])
    scores = movement.scores(torch.ones(2), {}, movement=accumulated)
    assert torch.equal(scores, accumulated) and scores.data_ptr() != accumulated.data_ptr()
    with pytest.raises(ValueError, match="accumulated movement"):
        movement.scores(torch.ones(2), {})
    with pytest.raises(NotImplementedError):
        get_method("fixed").scores(torch.ones(2), {})


def test_a_method_must_declare_consistent_inputs():
    from hf_gradprobe.training.methods import MagnitudeMethod

    with pytest.raises(ValueError, match="reads"):
        MagnitudeMethod(name="odd", reads=("weight", "hessian"))
    with pytest.raises(ValueError, match="state_tensor"):
        MagnitudeMethod(name="odd", accumulates=True)

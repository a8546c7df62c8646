# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Property-based: any values of the `pruning_*` fields of `PruningTrainingArguments` (and of `PruningCallback`'s
arguments) either build a valid `PruningPlan` or raise one `ValueError`, on one line, naming a field at fault.

The oracle below says, field by field, what is allowed (independently of the package's checks); the property is
that construction agrees with it.
"""

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_gradprobe.core.masking import COMPARISON_GROUPS
from hf_gradprobe.training import METHODS, SCHEDULES, PruningCallback, PruningPlan, PruningTrainingArguments


BOUNDED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Step options count optimizer steps in 64-bit counters; seeds go to `torch.Generator.manual_seed`.
INT_MAX = 2**63 - 1

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.integers(min_value=-3, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-0.5, max_value=1.5),
    st.text(max_size=6),
    st.sampled_from(["", "(", "[a-", "bitter7", "linear", "per_layer", "skip", "0.5", "nan", "True"]),
    st.lists(st.integers(min_value=0, max_value=3), max_size=2),
    st.lists(st.text(max_size=3), max_size=2),
    st.tuples(st.sampled_from(["attn", "("])),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


def is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_real(value):
    if not is_real(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_choice(value, choices, allow_none=False):
    if value is None:
        return allow_none
    return isinstance(value, str) and value in choices


def is_step(value):
    return is_finite_real(value) and 0 <= value <= INT_MAX and (value < 1 or float(value).is_integer())


def is_patterns(value):
    if value is None:
        return True
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        return False
    try:
        for pattern in patterns:
            re.compile(pattern)
    except re.error:
        return False
    return True


# Field of the shared options -> (what the oracle allows, valid values to draw from).
SHARED = {
    "method": (lambda v: is_choice(v, METHODS), st.sampled_from(list(METHODS))),
    "target_sparsity": (lambda v: is_finite_real(v) and 0 <= v < 1, st.floats(0, 0.99) | st.just(0)),
    "schedule": (lambda v: is_choice(v, SCHEDULES, True), st.sampled_from([None, *SCHEDULES])),
    "start_step": (is_step, st.sampled_from([0, 0.1, 0.5, 2, 10, 2.0])),
    "end_step": (is_step, st.sampled_from([0.7, 0.9, 14, 100, 100.0])),
    "frequency": (lambda v: is_real(v) and isinstance(v, int) and 1 <= v <= INT_MAX, st.integers(1, 1000)),
    "comparison_group": (
        lambda v: is_choice(v, COMPARISON_GROUPS, True),
        st.sampled_from([None, *COMPARISON_GROUPS]),
    ),
    "layer_adaptive": (lambda v: v is None or isinstance(v, bool), st.sampled_from([None, True, False])),
    "sample_fraction": (
        lambda v: v is None or (is_finite_real(v) and 0 < v <= 1),
        st.none() | st.floats(0.01, 1.0),
    ),
    "targets": (is_patterns, st.sampled_from([None, "attn", ["mlp", "attn"], []])),
    "ignore": (is_patterns, st.sampled_from([None, "c_proj", ["lm_head"]])),
    "on_nonfinite": (lambda v: is_choice(v, ("skip", "raise")), st.sampled_from(["skip", "raise"])),
}
ARGUMENTS_ONLY = {
    "adjust_step_budget": (lambda v: isinstance(v, bool), st.booleans()),
}
CALLBACK_ONLY = {
    "seed": (lambda v: is_real(v) and isinstance(v, int) and 0 <= v <= INT_MAX, st.integers(0, 2**40)),
    "exact_limit": (lambda v: is_real(v) and isinstance(v, int) and 0 <= v <= INT_MAX, st.integers(0, 2**24)),
    "sync_masks": (lambda v: isinstance(v, bool), st.booleans()),
}


def values_for(fields):
    """Each field left out, valid, or anything at all."""
    return st.fixed_dictionaries(
        {},
        optional={name: st.one_of(valid, junk) for name, (_, valid) in fields.items()},
    )


def expected_faults(values, fields, method_default):
    """The fields an error may name: those the oracle refuses alone, then those refused together."""
    faults = {name for name, value in values.items() if not fields[name][0](value)}
    start, end = values.get("start_step", 0.1), values.get("end_step", 0.7)
    if not faults & {"start_step", "end_step"} and (start >= 1) == (end >= 1) and end < start:
        faults |= {"start_step", "end_step"}
    if not faults & {"method", "layer_adaptive", "comparison_group"}:
        adaptive = values.get("layer_adaptive")
        adaptive = values.get("method", method_default) == "bitter4" if adaptive is None else adaptive
        group = values.get("comparison_group")
        if adaptive and group not in (None, "per_layer"):
            faults |= {"layer_adaptive", "comparison_group"}
    return faults


def names_a_fault(message, faults, spelled):
    return any(re.search(rf"`{re.escape(spelled(name))}[`=]", message) for name in faults)


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("properties"))


@BOUNDED
@given(values=values_for({**SHARED, **ARGUMENTS_ONLY}))
def test_pruning_training_arguments_are_valid_or_refused_naming_the_field(output_dir, values):
    faults = expected_faults(values, {**SHARED, **ARGUMENTS_ONLY}, "bitter7")
    kwargs = {f"pruning_{name}": value for name, value in values.items()}
    if faults:
        with pytest.raises(ValueError) as error:
            PruningTrainingArguments(output_dir=output_dir, report_to="none", **kwargs)
        message = str(error.value)
        assert "\n" not in message
        assert names_a_fault(message, faults, lambda name: f"pruning_{name}"), (faults, message)
        return
    args = PruningTrainingArguments(output_dir=output_dir, report_to="none", **kwargs)
    for key, value in kwargs.items():  # validated, not rewritten: the defaults are the plan's
        assert getattr(args, key) is value, key
    plan = PruningPlan.from_args(args)
    assert plan.schedule in SCHEDULES and plan.comparison_group in COMPARISON_GROUPS
    assert isinstance(plan.layer_adaptive, bool)
    assert not plan.layer_adaptive or plan.comparison_group == "per_layer"
    assert 0 <= plan.target_sparsity < 1 and isinstance(plan.target_sparsity, float)
    callback = PruningCallback.from_args(args)
    assert callback.plan == plan and callback.plan.method.name == args.pruning_method


CALLBACK_NAMES = {name: f"pruning_{name}" for name in SHARED if name not in ("targets", "ignore", "on_nonfinite")}


@BOUNDED
@given(values=values_for({**SHARED, **CALLBACK_ONLY}))
def test_pruning_callback_arguments_are_valid_or_refused_naming_the_argument(values):
    # The options shared with PruningTrainingArguments are named as there (`pruning_...`, one message for both);
    # the callback's own arguments by their name.
    faults = expected_faults(values, {**SHARED, **CALLBACK_ONLY}, "bitter7")
    if faults:
        with pytest.raises(ValueError) as error:
            PruningCallback(**values)
        message = str(error.value)
        assert "\n" not in message
        assert names_a_fault(message, faults, lambda name: CALLBACK_NAMES.get(name, name)), (faults, message)
        return
    plan = PruningCallback(**values).plan
    assert plan.schedule in SCHEDULES and plan.comparison_group in COMPARISON_GROUPS
    assert isinstance(plan.layer_adaptive, bool) and isinstance(plan.sync_masks, bool)
    assert isinstance(plan.seed, int) and isinstance(plan.target_sparsity, float)
    assert PruningPlan(**values) == plan  # the callback's options are the plan's

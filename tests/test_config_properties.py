# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Property-based: any field values given to `GradProbeConfig` either make a valid config or raise one
`ValueError`, on one line, naming a field that was given."""

import dataclasses
import json
import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_gradprobe import GradProbeConfig
from hf_gradprobe.core.masking import COMPARISON_GROUPS
from hf_gradprobe.oneshot.allocation import ALLOCATIONS
from hf_gradprobe.oneshot.config import (
    FLOAT_BOUNDS,
    GRADIENT_DTYPES,
    INT_BOUNDS,
    PROBE_LOSSES,
    RECONSTRUCTION_ORDERS,
)
from hf_gradprobe.oneshot.probing import GRADIENT_STATISTICS
from hf_gradprobe.oneshot.reconstructors import RECONSTRUCTORS
from hf_gradprobe.oneshot.refinement import REFINE_TARGETS
from hf_gradprobe.oneshot.strategies import STRATEGIES


BOOL_FIELDS = ("probe", "layerwise", "probe_gradient_checkpointing")
CHOICES = {
    "strategy": STRATEGIES.names(),
    "comparison_group": COMPARISON_GROUPS,
    "gradient_statistic": GRADIENT_STATISTICS,
    "probe_loss": PROBE_LOSSES,
    "reconstruction": RECONSTRUCTORS.names(),
    "reconstruction_order": RECONSTRUCTION_ORDERS,
    "gradient_dtype": GRADIENT_DTYPES,
    "refine_target": REFINE_TARGETS,
    "allocation": ALLOCATIONS,
}
FIELDS = [f.name for f in dataclasses.fields(GradProbeConfig)]

# Values of the wrong kind for any field: every one of them must either be refused or be a valid value.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**400, -(10**400), 2**63, 2**63 - 1, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e-320, 5e-324, 1e6, 1e7]),
    st.text(max_size=8),
    st.sampled_from(["", " ", "inf", "nan", "0.5", "64", "2:4", "true"]),
    st.lists(st.one_of(st.text(max_size=4), st.integers(), st.none()), max_size=3),
    st.just([]),
    st.just({}),
    st.just(()),
    st.just(b"2:4"),
    st.just(object()),
)


def _valid_values(name):
    if name in FLOAT_BOUNDS:
        low, high = FLOAT_BOUNDS[name]
        return st.one_of(st.floats(min_value=low, max_value=high), st.integers(min_value=0, max_value=3))
    if name in INT_BOUNDS:
        return st.integers(min_value=INT_BOUNDS[name][0], max_value=INT_BOUNDS[name][0] + 64)
    if name in BOOL_FIELDS:
        return st.booleans()
    if name in CHOICES:
        return st.sampled_from(list(CHOICES[name]))
    if name == "pattern":
        return st.sampled_from(["unstructured", "2:4", "4:8", " 1:2 ", "02:04", "0:4", "4:2", "a:b", "2:4:8", "2:"])
    if name in ("targets", "ignore"):
        return st.one_of(
            st.none(),
            st.sampled_from(["q_proj", "mlp", "(", "", "[a-", ".*"]),
            st.lists(st.sampled_from(["q_proj", "k_proj", "", "(", "mlp$"]), max_size=3),
        )
    raise AssertionError(f"no strategy for {name}")


values_by_field = st.sampled_from(FIELDS).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(_valid_values(name), junk))
)


def _check_valid(config: GradProbeConfig) -> None:
    for name, (low, high) in FLOAT_BOUNDS.items():
        value = getattr(config, name)
        if name == "gradient_threshold" and value is None:
            continue
        assert type(value) is float and math.isfinite(value), (name, value)
        assert low <= value <= high, (name, value)
        if name in ("target_sparsity", "reduction_factor"):
            assert value < 1.0
    for name, (low, high) in INT_BOUNDS.items():
        value = getattr(config, name)
        assert type(value) is int and low <= value <= high, (name, value)
    for name in BOOL_FIELDS:
        assert type(getattr(config, name)) is bool
    for name, choices in CHOICES.items():
        assert getattr(config, name) in choices, name
    pattern = config.pattern
    assert type(pattern) is str
    if pattern != "unstructured":
        n, m = (int(part) for part in pattern.split(":"))
        assert 0 < n < m and pattern == f"{n}:{m}"
    for name in ("targets", "ignore"):
        value = getattr(config, name)
        assert value is None or (type(value) is list and all(type(p) is str and p for p in value)), (name, value)
        for regex in value or []:
            re.compile(regex)
    if config.probe:
        assert config.num_probe_samples <= config.num_calibration_samples
    # What is valid stays valid: saved as JSON and read back, the same config.
    again = GradProbeConfig.from_dict(json.loads(config.to_json_string()))
    assert again == config


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values_by_field, min_size=1, max_size=3))
def test_any_field_values_give_a_valid_config_or_one_value_error_naming_a_field(items):
    given_values = dict(items)
    try:
        config = GradProbeConfig(**given_values)
    except ValueError as err:
        message = str(err)
        assert "\n" not in message, message
        assert any(f"`{name}`" in message for name in given_values), (given_values, message)
        return
    _check_valid(config)


@settings(max_examples=150, deadline=None)
@given(values_by_field)
def test_one_bad_field_is_named_in_the_message(item):
    name, value = item
    try:
        config = GradProbeConfig(**{name: value})
    except ValueError as err:
        assert f"`{name}`" in str(err) and "\n" not in str(err), str(err)
        return
    _check_valid(config)

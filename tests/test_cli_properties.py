# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Property: whatever values are typed for the flags of `prune` and `eval`, the command either gets as far as
loading the model with valid settings, or exits 2 with one line naming a flag typed. No model is loaded."""

import contextlib
import dataclasses
import io
import math
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testing_utils import make_tiny_llama, sample_text, save_tiny_model
from transformers import HfArgumentParser

import hf_gradprobe.models as models_module
from hf_gradprobe.cli import main
from hf_gradprobe.cli.common import ModelArguments
from hf_gradprobe.cli.eval import EvalArguments
from hf_gradprobe.cli.prune import PruneArguments
from hf_gradprobe.oneshot.config import GradProbeConfig


# Flags naming files, folders or Hub repos: their checks touch the filesystem or the network, tested elsewhere.
PATH_FLAGS = {"calibration", "eval_data", "output_dir", "config", "push_to_hub", "data"}


def _flags(*dataclass_types) -> list[str]:
    return [f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init and f.name not in PATH_FLAGS]


PRUNE_TYPES = (GradProbeConfig, PruneArguments, ModelArguments)
EVAL_TYPES = (EvalArguments, ModelArguments)
PRUNE_FLAGS = _flags(*PRUNE_TYPES)
EVAL_FLAGS = _flags(*EVAL_TYPES)

NASTY = st.sampled_from(
    [
        "",
        " ",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "+Infinity",
        "1e400",
        "-1e400",
        "1e308",
        "1e-320",
        "-0",
        "0",
        "-1",
        "1",
        "2",
        "0.5",
        "1.0",
        "64.0",
        "true",
        "false",
        "yes",
        "None",
        "null",
        "2:4",
        "4:2",
        "0:4",
        "cuda:0",
        "cuda:99",
        "cpu",
        "auto",
        "meta",
        "-",
        "--",
        "-x",
        "=",
        "[",
        "x" * 300,
        str(2**70),
        str(-(2**63)),
    ]
)
VALUES = st.one_of(
    NASTY,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


class _Reached(KeyboardInterrupt):
    """Raised in place of loading the model: every check before it passed (``main`` returns 130)."""


def _refuse_to_load(*args, **kwargs):
    raise _Reached


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli_properties")
    model = make_tiny_llama()
    # Positions for every default window length (1024 for eval, 512 for calibration): those are checked from
    # config.json before loading, and a default is no flag typed.
    model.config.max_position_embeddings = 4096
    model_dir = save_tiny_model(model, tiny_tokenizer, root / "tiny")
    data = root / "corpus.txt"
    data.write_text(sample_text(200) + "\n", encoding="utf-8")
    return model_dir, str(data)


def _argv(pairs) -> list[str]:
    argv = []
    for flag, value, joined in pairs:
        argv += [f"--{flag}={value}"] if joined else [f"--{flag}", value]
    return argv


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(models_module, "load_model", _refuse_to_load),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def _check_valid(instances) -> None:
    for instance in instances:
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), f"{type(instance).__name__}.{f.name}={value!r} accepted"
        # The accepted settings build the same config again: nothing was valid only on the way in.
        assert type(instance)(**dataclasses.asdict(instance)) == instance


def _check_outcome(command, fixed, pairs, dataclass_types):
    argv = [command, *fixed, *_argv(pairs)]
    code, out, err = _run(argv)
    flags = {flag for flag, _, _ in pairs}
    if code == 130:  # reached model loading: the typed values make a valid configuration
        flag_argv = argv[2:]
        instances = HfArgumentParser(dataclass_types).parse_args_into_dataclasses(flag_argv)
        _check_valid(instances)
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{argv!r}: exit {code}, {err!r}"
    assert out == "" and len(lines) == 1, f"{argv!r}: {err!r}"
    assert "error:" in lines[0] and "internal error" not in lines[0], f"{argv!r}: {err!r}"
    named = {flag for flag in flags if flag in lines[0] or flag.replace("_", "-") in lines[0]}
    assert named, f"{argv!r}: the error names none of {sorted(flags)}: {lines[0]!r}"


EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(data=st.data())
def test_prune_flags_either_parse_to_a_valid_config_or_exit_2_naming_the_flag(files, data):
    model_dir, corpus = files
    pairs = data.draw(
        st.lists(st.tuples(st.sampled_from(PRUNE_FLAGS), VALUES, st.booleans()), min_size=1, max_size=2),
        label="flags",
    )
    _check_outcome("prune", [model_dir, "--calibration", corpus], pairs, PRUNE_TYPES)


@EXAMPLES
@given(data=st.data())
def test_eval_flags_either_parse_to_valid_settings_or_exit_2_naming_the_flag(files, data):
    model_dir, corpus = files
    pairs = data.draw(
        st.lists(st.tuples(st.sampled_from(EVAL_FLAGS), VALUES, st.booleans()), min_size=1, max_size=2),
        label="flags",
    )
    _check_outcome("eval", [model_dir, "--data", corpus], pairs, EVAL_TYPES)


@pytest.mark.parametrize(
    "command,flag,value",
    [
        ("prune", "target_sparsity", "inf"),
        ("prune", "gradient_weight", "nan"),
        ("prune", "eval_max_windows", "-1"),
        ("prune", "eval_seq_len", "1"),
        ("prune", "device_map", "cuda:99"),
        ("prune", "device_map", "bogus"),
        ("eval", "seq_len", "nan"),
        ("eval", "stride", "0"),
        ("eval", "max_windows", "0"),
        ("eval", "batch_size", "-1"),
        ("eval", "device_map", "meta"),
    ],
)
@pytest.mark.parametrize("joined", [True, False])
def test_known_bad_values_exit_2_naming_the_flag(files, command, flag, value, joined):
    # Fixed cases of the property above that must fail, so that a regression shows without hypothesis' search.
    model_dir, corpus = files
    fixed = [model_dir, "--calibration" if command == "prune" else "--data", corpus]
    code, out, err = _run([command, *fixed, *_argv([(flag, value, joined)])])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and flag in lines[0], err

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The training package's layout rules: method names live in the registry, every module declares `__all__`, no
module is over 500 lines and the callback keeps the lifecycle only (under 300), and no private mechanism of
Transformers is used to find the Trainer."""

import ast
import re
from pathlib import Path

import pytest

import hf_gradprobe.training


PACKAGE = Path(hf_gradprobe.training.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
# A method name in quotes, as `grep '"fixed"\|"movement"\|"bitter'` finds it.
METHOD_NAME = re.compile(r'"fixed"|"movement"|"bitter')


def test_method_names_are_compared_nowhere_outside_the_registry():
    found = []
    for module in MODULES:
        if module.name == "methods.py":
            continue
        for number, line in enumerate(module.read_text().splitlines(), 1):
            # importance.py's `__all__` lists its score functions, named after the variants they compute.
            if METHOD_NAME.search(line) and not re.fullmatch(r'\s*"bitter\d_scores",', line):
                found.append(f"{module.name}:{number}: {line.strip()}")
    assert not found, found


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.name)
def test_every_module_declares_all_and_stays_small(module):
    tree = ast.parse(module.read_text())
    names = [target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets]
    assert "__all__" in names, module.name
    lines = len(module.read_text().splitlines())
    assert lines <= (300 if module.name == "callback.py" else 500), (module.name, lines)


def test_no_stack_frames_or_private_trainer_attributes():
    for module in MODULES:
        text = module.read_text()
        assert "inspect.currentframe" not in text and "f_locals" not in text, module.name
        assert "callback_handler" not in text and "_inner_training_loop" not in text, module.name

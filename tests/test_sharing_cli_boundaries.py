# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What `sharing`, `cli`, `evaluation` and `models` may import, and what their modules and CLI help hold.

The layering is core -> evaluation, models -> sharing -> oneshot, training -> cli: a module imports only from
the layers before it. No module imports another module's private (``_``) names, each declares ``__all__``, and
none is over 500 lines. The sub-commands' flags are the fields of dataclasses as ``HfArgumentParser`` makes
them: these tests fail loudly when Transformers changes what that gives.
"""

import ast
import dataclasses
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from hf_gradprobe.cli import COMMANDS, build_parser


PACKAGE = Path(__file__).resolve().parents[1] / "hf_gradprobe"
# Each checked part of the package, and the parts it must not import.
FORBIDDEN = {
    "evaluation": ("sharing", "oneshot", "training", "cli"),
    "models.py": ("evaluation", "sharing", "oneshot", "training", "cli"),
    "sharing": ("oneshot", "training", "cli"),
    "cli": (),
}
MAX_LINES = 500


def _modules(part: str) -> list[Path]:
    path = PACKAGE / part
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` for every import in ``path``, relative ones resolved."""
    package = ["hf_gradprobe", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_the_layers_before_it(part):
    for path in _modules(part):
        for module, names in _imports(path):
            targets = [module] + [f"{module}.{name}" for name in names] if module == "hf_gradprobe" else [module]
            for target in targets:
                for forbidden in FORBIDDEN[part]:
                    assert not (
                        target == f"hf_gradprobe.{forbidden}" or target.startswith(f"hf_gradprobe.{forbidden}.")
                    ), f"{path.relative_to(PACKAGE)} imports {target}"


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_private_names_across_modules_all_declared_and_short(part):
    for path in _modules(part):
        shown = path.relative_to(PACKAGE)
        text = path.read_text(encoding="utf-8")
        for module, names in _imports(path):
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            assert not private, f"{shown} imports {private} from {module}"
        tree = ast.parse(text)
        declared = any(
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(
                getattr(t, "id", None) == "__all__" for t in getattr(node, "targets", [getattr(node, "target", None)])
            )
            for node in tree.body
        )
        assert declared, f"{shown} has no __all__"
        assert len(text.splitlines()) <= MAX_LINES, f"{shown} has {len(text.splitlines())} lines"


@pytest.mark.parametrize("command", ["eval", "prune", "inspect"])
def test_every_sub_command_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--trust_remote_code" in out and "--trust-remote-code" in out


def test_flags_are_the_fields_as_hf_argument_parser_makes_them():
    # argparse formats help with `%`: no field's help may hold one. A boolean field defaulting to True would get a
    # `--no_x` flag repeating its help with a misleading default, so none does.
    import hf_gradprobe.cli.eval as eval_command
    import hf_gradprobe.cli.inspect as inspect_command
    import hf_gradprobe.cli.prune as prune_command
    from hf_gradprobe.cli.common import ModelArguments
    from hf_gradprobe.oneshot.config import GradProbeConfig

    assert [module.__name__.rsplit(".", 1)[-1] for module in COMMANDS] == ["eval", "prune", "inspect"]
    types = (
        GradProbeConfig,
        prune_command.PruneArguments,
        ModelArguments,
        eval_command.EvalArguments,
        inspect_command.InspectArguments,
    )
    for cls in types:
        for f in dataclasses.fields(cls):
            assert "%" not in f.metadata.get("help", ""), f"{cls.__name__}.{f.name}"
            assert f.default is not True, f"{cls.__name__}.{f.name} defaults to True"
    # What the sub-commands rely on: both spellings, and a bare boolean flag meaning true.
    parser = HfArgumentParser((inspect_command.InspectArguments,))
    (args,) = parser.parse_args_into_dataclasses(["--json", "--targets", "q_proj", "v_proj"])
    assert args.json is True and args.targets == ["q_proj", "v_proj"]
    (args,) = parser.parse_args_into_dataclasses(["--json", "false"])
    assert args.json is False
    with pytest.raises(ValueError, match="not used"):
        parser.parse_args_into_dataclasses(["--no_json"])  # no negated flags: `--json false` is the spelling

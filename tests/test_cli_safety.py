# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The CLI never prints a secret, checks every flag before loading a model, and turns each user fault into one
line naming the argument (exit 2); ``--json`` output is strict JSON."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from testing_utils import make_tiny_llama, sample_text, save_tiny_model

import hf_gradprobe.models as models_module
import hf_gradprobe.sharing.push as push_module
from hf_gradprobe.cli import main
from hf_gradprobe.cli.common import print_json


TOKEN = "hf_FakeTokenForTests0123456789abcdefGH"
# Data-free pruning: the tests that get past pruning take a second.
FAST = ["--probe", "false", "--strategy", "magnitude", "--reconstruction", "none"]


class NotATensor:
    """Pickled by reference to this module: `torch.load(weights_only=True)` refuses it."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("cli_safety")
    model = make_tiny_llama()
    # Positions for the default window lengths (checked from config.json before loading): the errors tested here
    # are those of loading and of the flags typed.
    model.config.max_position_embeddings = 4096
    model_dir = save_tiny_model(model, tiny_tokenizer, root / "tiny")
    data = root / "corpus.txt"
    data.write_text(sample_text(300, seed=2) + "\n", encoding="utf-8")
    return model_dir, str(data), root


@pytest.fixture
def no_loading(monkeypatch):
    """Record any attempt to load a model: the checks below must all happen before one."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("the model was loaded before the flags were checked")

    monkeypatch.setattr(models_module, "load_model", refuse)
    return calls


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of ``hf-gradprobe argv``; argparse's own exits count as exit codes."""
    capsys.readouterr()  # what the test printed before (e.g. progress bars of a save) is not the command's
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, progress: bool = False) -> str:
    """The one line of a failed command; ``progress`` allows progress bars (loading, saving) before it."""
    lines = [line for line in err.splitlines() if line.strip()]
    if progress:
        lines = [line for line in lines if line.startswith("hf-gradprobe")]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "internal error" not in lines[0] and "Traceback" not in err, err
    return lines[0]


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return json.loads(lines[0], parse_constant=refuse)


# ------------------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    "argv,secret,flag",
    [
        (["prune", "{model}", "--hub_token", TOKEN], TOKEN, "--hub_token"),
        (["prune", "{model}", "--token=s3cr3tvalue"], "s3cr3tvalue", "--token"),
        (["eval", "{model}", "--data", "{data}", "--api-key", "k3yvalue"], "k3yvalue", "--api-key"),
        ([f"--token={TOKEN}", "eval", "{model}", "--data", "{data}"], TOKEN, "--token"),
        (["inspect", "{model}", "--password", "pw-value"], "pw-value", "--password"),
        (["prune", "{model}", "--dtype", TOKEN], TOKEN, "--dtype"),
        (["eval", "{model}", "--data", "{data}", "--seq_len", TOKEN], TOKEN, "--seq_len"),
    ],
)
def test_unknown_or_bad_flags_never_echo_a_secret(saved, capsys, no_loading, argv, secret, flag):
    model_dir, data, _ = saved
    argv = [arg.format(model=model_dir, data=data) for arg in argv]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert secret not in err and flag in one_error_line(err)
    assert not no_loading


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "{model}", "--calibration", "https://user:hunter2@host.example/d.txt"],
        ["prune", "{model}", "--calibration", "https://user:hunter2@host.example/d"],
        ["eval", "{model}", "--data", "https://user:hunter2@host.example/wiki.raw"],
    ],
)
def test_url_credentials_are_never_printed(saved, capsys, no_loading, argv):
    model_dir, _, _ = saved
    code, _, err = run_cli([arg.format(model=model_dir) for arg in argv], capsys)
    assert code == 2 and "hunter2" not in err and "host.example" in one_error_line(err)


def test_debug_traceback_is_redacted_throughout(saved, capsys, monkeypatch):
    model_dir, data, _ = saved

    def fail(*args, **kwargs):
        try:
            raise OSError(f"server said: Authorization: Bearer {TOKEN}")
        except OSError as err:
            raise ValueError(f"cannot fetch https://user:hunter2@host/x with {TOKEN}") from err

    monkeypatch.setattr(models_module, "load_model", fail)
    code, _, err = run_cli(["eval", model_dir, "--data", data, "--debug"], capsys)
    assert code == 2 and "Traceback" in err and "direct cause" in err
    assert TOKEN not in err and "hunter2" not in err
    assert err.rstrip().splitlines()[-1].startswith("hf-gradprobe eval: error:")


# ------------------------------------------------------------------------------------ checked before loading


def test_device_map_without_cuda_is_refused_before_loading(saved, capsys, no_loading, monkeypatch):
    model_dir, data, _ = saved
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for command in (["eval", model_dir, "--data", data], ["prune", model_dir, *FAST]):
        code, _, err = run_cli([*command, "--device_map", "cuda:0"], capsys)
        line = one_error_line(err)
        assert code == 2 and "device_map" in line and "'cuda:0'" in line and "CUDA" in line and "cpu" in line
    code, _, err = run_cli(["eval", model_dir, "--data", data, "--device_map", "bogus"], capsys)
    assert code == 2 and "'bogus'" in one_error_line(err) and "auto" in err
    code, _, err = run_cli(["eval", model_dir, "--data", data, "--device_map", "meta"], capsys)
    assert code == 2 and "'meta'" in one_error_line(err)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, _, err = run_cli(["eval", model_dir, "--data", data, "--device_map", "cuda:3"], capsys)
    assert code == 2 and "'cuda:3'" in one_error_line(err) and "1 CUDA device" in err
    assert not no_loading


def test_load_model_checks_device_map(saved, monkeypatch):
    model_dir, _, _ = saved
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="`device_map`='cuda'.*CUDA"):
        models_module.load_model(model_dir, device_map="cuda")
    with pytest.raises(ValueError, match="`device_map`"):
        models_module.load_model(model_dir, device_map=3.5)


def test_bad_push_repo_id_or_no_token_is_refused_before_loading(saved, capsys, no_loading, monkeypatch, tmp_path):
    model_dir, _, _ = saved
    monkeypatch.setattr(push_module, "get_token", lambda: TOKEN)
    code, _, err = run_cli(["prune", model_dir, *FAST, "--push_to_hub", "not a repo"], capsys)
    line = one_error_line(err)
    assert code == 2 and "--push_to_hub" in line and "'not a repo'" in line and "username/model-name" in line
    monkeypatch.setattr(push_module, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "out"
    code, _, err = run_cli(["prune", model_dir, *FAST, "--push_to_hub", "me/tiny", "--output_dir", str(out)], capsys)
    line = one_error_line(err)
    assert code == 2 and "--push_to_hub" in line and "hf auth login" in line and "HF_TOKEN" in line
    assert not no_loading and not out.exists()


def _chattr(flag: str, path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], check=False, capture_output=True).returncode == 0


def _writable(folder) -> bool:
    try:
        tempfile.mkdtemp(dir=folder)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("how", ["immutable", "read-only"])
def test_unwritable_output_dir_is_refused_before_loading(saved, capsys, no_loading, tmp_path, how):
    model_dir, _, _ = saved
    parent = tmp_path / "parent"
    parent.mkdir()
    if how == "immutable" and not _chattr("+i", parent):
        pytest.skip("chattr +i is not available here")
    if how == "read-only":
        parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if how == "read-only" and _writable(parent):
            pytest.skip("this user writes into read-only folders (root)")
        for target in (parent / "out", parent / "new" / "out"):
            code, _, err = run_cli(["prune", model_dir, *FAST, "--output_dir", str(target)], capsys)
            line = one_error_line(err)
            assert code == 2 and "--output_dir" in line and str(target) in line and "writ" in line
    finally:
        if how == "immutable":
            _chattr("-i", parent)
        parent.chmod(stat.S_IRWXU)
    assert not no_loading


def test_immutable_saved_folder_with_overwrite_is_refused_before_loading(saved, capsys, no_loading, tmp_path):
    model_dir, _, _ = saved
    folder = tmp_path / "old"
    shutil.copytree(model_dir, folder)
    if not _chattr("+i", folder):
        pytest.skip("chattr +i is not available here")
    try:
        code, _, err = run_cli(["prune", model_dir, *FAST, "--output_dir", str(folder), "--overwrite"], capsys)
    finally:
        _chattr("-i", folder)
    line = one_error_line(err)
    assert code == 2 and "--output_dir" in line and "writ" in line
    assert not no_loading


@pytest.mark.parametrize(
    "extra,flag",
    [
        (["--eval_data", "{data}", "--eval_max_windows", "-1"], "eval_max_windows"),
        (["--eval_data", "{data}", "--eval_max_windows", "0"], "eval_max_windows"),
        (["--eval_data", "{data}", "--eval_seq_len", "1"], "eval_seq_len"),
        (["--strategy", "wanda"], "--calibration"),  # Wanda needs calibration data
    ],
)
def test_prune_flags_are_checked_before_loading(saved, capsys, no_loading, extra, flag):
    model_dir, data, _ = saved
    argv = ["prune", model_dir, *[arg.format(data=data) for arg in extra]]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and flag in one_error_line(err)
    assert not no_loading


@pytest.mark.parametrize(
    "extra,flag",
    [
        (["--max_windows", "-1"], "max_windows"),
        (["--stride", "0"], "stride"),
        (["--batch_size", "-3"], "batch_size"),
        (["--seq_len", "0"], "seq_len"),
    ],
)
def test_eval_flags_are_checked_before_loading(saved, capsys, no_loading, extra, flag):
    model_dir, data, _ = saved
    code, _, err = run_cli(["eval", model_dir, "--data", data, *extra], capsys)
    assert code == 2 and flag in one_error_line(err)
    assert not no_loading


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["eval", "{model}", "--data", "{data}", "--seq_len", "8192"], "seq_len"),
        (["prune", "{model}", "--calibration", "{data}", "--calibration_seq_len", "8192"], "calibration_seq_len"),
        (["prune", "{model}", *FAST, "--eval_data", "{data}", "--eval_seq_len", "8192"], "eval_seq_len"),
    ],
)
def test_windows_longer_than_the_positions_are_refused_before_loading(saved, capsys, no_loading, argv, flag):
    model_dir, data, _ = saved
    code, _, err = run_cli([arg.format(model=model_dir, data=data) for arg in argv], capsys)
    line = one_error_line(err)
    assert code == 2 and f"`{flag}`=8192" in line and "max_position_embeddings=4096" in line
    assert not no_loading


@pytest.mark.parametrize(
    "extra,flag",
    [
        (["--batch_size", str(2**70)], "batch_size"),
        (["--max_windows", str(2**70)], "max_windows"),
        (["--stride", str(2**31)], "stride"),
        (["--seq_len", str(2**40)], "seq_len"),
    ],
)
def test_huge_counts_are_refused_before_loading(saved, capsys, no_loading, extra, flag):
    model_dir, data, _ = saved
    code, _, err = run_cli(["eval", model_dir, "--data", data, *extra], capsys)
    line = one_error_line(err)
    assert code == 2 and f"`{flag}` must be" in line and "at most 2147483647" in line
    if flag in ("seq_len", "max_windows"):  # the window flags prune has too
        code, _, err = run_cli(["prune", model_dir, *FAST, "--eval_data", data, f"--eval_{flag}", extra[1]], capsys)
        assert code == 2 and f"`eval_{flag}` must be" in one_error_line(err)
    assert not no_loading


class _FailingApi:
    def __init__(self, token=None):
        self.token = token

    def create_repo(self, *args, **kwargs):
        raise RuntimeError(f"500 Internal Error while handling Bearer {self.token}")


@pytest.mark.parametrize("keep", ["output_dir", "temporary"])
def test_a_failed_push_after_pruning_keeps_the_pruned_model(saved, capsys, monkeypatch, tmp_path, keep):
    model_dir, _, _ = saved
    monkeypatch.setattr(push_module, "get_token", lambda: TOKEN)
    monkeypatch.setattr(push_module, "HfApi", _FailingApi)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    extra = ["--output_dir", str(tmp_path / "out")] if keep == "output_dir" else []
    code, _, err = run_cli(["prune", model_dir, *FAST, "--push_to_hub", "me/tiny-pruned", *extra], capsys)
    line = one_error_line(err, progress=True)
    assert code == 2 and TOKEN not in err and "me/tiny-pruned" in line
    kept = [Path(p) for p in re.findall(r"'([^']+)'", line) if os.path.isdir(p)]
    assert kept, line
    assert (kept[0] / "model.safetensors").is_file() and (kept[0] / "pruning_config.json").is_file()
    if keep == "output_dir":
        assert kept[0] == tmp_path / "out"
    else:
        assert tmp_path / "tmp" in kept[0].parents


def test_a_successful_push_without_output_dir_leaves_no_temporary_folder(saved, capsys, monkeypatch, tmp_path):
    model_dir, _, _ = saved
    pushed = []
    monkeypatch.setattr(push_module, "get_token", lambda: TOKEN)
    monkeypatch.setattr(
        push_module, "push_folder_to_hub", lambda folder, repo_id, **kw: pushed.append(sorted(os.listdir(folder)))
    )
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    code, _, err = run_cli(["prune", model_dir, *FAST, "--push_to_hub", "me/tiny-pruned", "--json"], capsys)
    assert code == 0, err
    assert pushed and "model.safetensors" in pushed[0] and not list((tmp_path / "tmp").iterdir())


# ------------------------------------------------------------------------------------------- clear messages


def test_pickle_only_model_is_refused_with_how_to_convert(saved, capsys, tmp_path):
    model_dir, data, _ = saved
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": NotATensor()}, folder / "pytorch_model.bin")
    for argv in (["eval", str(folder), "--data", data], ["inspect", str(folder)]):
        code, _, err = run_cli(argv, capsys)
        line = one_error_line(err)
        assert code == 2 and "pytorch_model.bin" in line and "refused" in line and "safetensors" in line


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_deeply_nested_config_file_is_one_line(saved, capsys, no_loading, tmp_path, kind):
    model_dir, _, _ = saved
    path = tmp_path / f"deep.{kind}"
    depth = 100_000
    path.write_text('{"a": ' * depth + "1" + "}" * depth if kind == "json" else "a: " + "[" * depth)
    code, _, err = run_cli(["prune", model_dir, *FAST, "--config", str(path)], capsys)
    line = one_error_line(err)
    assert code == 2 and "--config" in line and str(path) in line and "nested" in line


def _damage(folder, how):
    weights = folder / "model.safetensors"
    if how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return weights.name
    if how == "garbage":
        weights.write_bytes(b"\x13\x37" * 5000)
        return weights.name
    if how == "huge header":
        weights.write_bytes((2**40).to_bytes(8, "little") + b"{}")
        return weights.name
    if how == "empty":
        weights.write_bytes(b"")
        return weights.name
    index = folder / "model.safetensors.index.json"
    index.write_text({"no weight_map": '{"metadata": {}}', "not json": "{oops", "missing shard": None}[how] or "")
    if how == "missing shard":
        index.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
        return "model-00002-of-00002.safetensors"
    return index.name


@pytest.mark.parametrize(
    "how", ["truncated", "garbage", "huge header", "empty", "no weight_map", "not json", "missing shard"]
)
def test_inspect_of_a_damaged_checkpoint_names_the_file(saved, capsys, tmp_path, how):
    model_dir, _, _ = saved
    folder = tmp_path / "damaged"
    shutil.copytree(model_dir, folder)
    name = _damage(folder, how)
    code, _, err = run_cli(["inspect", str(folder)], capsys)
    assert code == 2 and name in one_error_line(err)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_eval_of_a_damaged_checkpoint_names_the_file(saved, capsys, tmp_path, how):
    model_dir, data, _ = saved
    folder = tmp_path / "damaged"
    shutil.copytree(model_dir, folder)
    name = _damage(folder, how)
    code, _, err = run_cli(["eval", str(folder), "--data", data], capsys)
    assert code == 2 and name in one_error_line(err)


@pytest.fixture(scope="module")
def broken_models(saved, tiny_tokenizer):
    _, _, root = saved
    folders = {}
    for kind, value in (("overflow", 1e30), ("nan", float("nan"))):
        model = make_tiny_llama()
        with torch.no_grad():
            model.lm_head.weight.fill_(value)
            if kind == "overflow":
                model.lm_head.weight[1::2] *= -1  # logits of +-huge: a finite but enormous loss
        folders[kind] = save_tiny_model(model, tiny_tokenizer, root / kind)
    return folders


@pytest.mark.parametrize("kind", ["overflow", "nan"])
def test_eval_of_a_model_without_a_finite_perplexity(saved, broken_models, capsys, kind):
    _, data, _ = saved
    argv = ["eval", broken_models[kind], "--data", data, "--seq_len", "16"]
    code, out, err = run_cli([*argv, "--json"], capsys)
    result = strict_json(out)
    assert code == 2 and result["perplexity"] is None and result["error"]
    assert "finite" in result["error"] and ("overflow" in result["error"]) == (kind == "overflow")
    assert "perplexity" in one_error_line(err, progress=True)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "finite" in one_error_line(err, progress=True)


def test_print_json_is_strict(capsys):
    print_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2.5})
    result = strict_json(capsys.readouterr().out)
    assert result["a"] is None and result["b"] == [1.0, None] and result["c"]["d"] is None and result["e"] == 2.5
    assert set(result["non_finite"]) == {"a", "b[1]", "c.d"}


def _special_files(tmp_path):
    fifo = tmp_path / "calibration.txt"
    os.mkfifo(fifo)
    files = [(str(fifo), "named pipe")]
    if os.path.exists("/dev/null"):
        files.append(("/dev/null", "character device"))
    return files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_special_files_as_data_are_named_as_such(saved, capsys, no_loading, tmp_path):
    model_dir, _, _ = saved
    for path, kind in _special_files(tmp_path):
        for argv in (
            ["prune", model_dir, "--calibration", path],
            ["prune", model_dir, *FAST, "--eval_data", path],
            ["eval", model_dir, "--data", path],
        ):
            code, _, err = run_cli(argv, capsys)
            line = one_error_line(err)
            assert code == 2 and kind in line and path in line
            assert "Hub" not in line and "no such file" not in line
    assert not no_loading


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_load_text_names_special_files(tmp_path):
    from hf_gradprobe.evaluation.data import load_text

    for path, kind in _special_files(tmp_path):
        with pytest.raises(ValueError, match=kind):
            load_text(path, argument="calibration")
    link = tmp_path / "dangling.txt"
    link.symlink_to(tmp_path / "gone.txt")
    with pytest.raises(FileNotFoundError, match="broken symbolic link"):
        load_text(str(link), argument="calibration")


def test_a_folder_without_a_tokenizer_says_so_on_the_command_line(saved, capsys, tmp_path, no_loading):
    _, data, _ = saved
    folder = tmp_path / "no_tokenizer"
    make_tiny_llama().save_pretrained(folder)
    for argv in (["eval", str(folder), "--data", data], ["prune", str(folder), "--calibration", data]):
        code, _, err = run_cli(argv, capsys)
        line = one_error_line(err)
        assert code == 2 and "no tokenizer" in line and str(folder) in line and "save_pretrained" in line
        assert "`tokenizer=`" not in line
    assert not no_loading


def test_data_free_pruning_needs_no_tokenizer(capsys, tmp_path):
    folder = tmp_path / "no_tokenizer"
    make_tiny_llama().save_pretrained(folder)
    code, _, err = run_cli(["prune", str(folder), *FAST, "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 0, err

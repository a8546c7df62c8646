# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Saving never deletes what is not its own: overwrite by exact names, recovery after a crash mid-swap,
concurrent saves to one folder, and arguments refused before anything is written."""

import contextlib
import copy
import errno
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from testing_utils import make_tiny_llama, sample_text, save_tiny_model

from hf_gradprobe.cli import main
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import apply_mask_, lowest_k_mask
from hf_gradprobe.sharing import save as save_module
from hf_gradprobe.sharing import swap as swap_module
from hf_gradprobe.sharing.metadata import PRUNING_CONFIG_NAME, build_pruning_metadata, load_pruning_metadata
from hf_gradprobe.sharing.save import check_output_dir, save_pruned


FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefGH"


def prune_(model, sparsity=0.5):
    for layer in find_prunable_layers(model):
        apply_mask_(layer.weight, lowest_k_mask(layer.weight.abs(), sparsity))
    return model


@pytest.fixture
def pruned():
    return prune_(make_tiny_llama())


def folder_state(folder):
    """Every entry under ``folder`` with the hash of its bytes (folders as ``None``)."""
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
        for p in sorted(Path(folder).rglob("*"))
    }


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def saved_files(folder):
    return json.loads((Path(folder) / PRUNING_CONFIG_NAME).read_text())["saved_files"]


def fail(*args, **kwargs):  # the card is rendered after the weights and the tokenizer are written
    raise RuntimeError("disk full")


# ------------------------------------------------------------------------------- 1. overwrite replaces only its own


def test_overwrite_keeps_a_users_safetensors_file_beside_a_saved_model(pruned, tiny_tokenizer, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model", tokenizer=tiny_tokenizer)
    (model_dir / "my_lora_adapter.safetensors").write_bytes(b"the user's adapter")
    state = folder_state(model_dir)
    with pytest.raises(FileExistsError) as raised:
        save_pruned(pruned, model_dir, tokenizer=tiny_tokenizer, overwrite=True)
    message = str(raised.value)
    assert "\n" not in message and "`output_dir`=" in message and "(my_lora_adapter.safetensors)" in message
    assert folder_state(model_dir) == state  # nothing moved, nothing deleted
    assert listing(tmp_path) == ["model"]  # no temporary folder or lock left beside it


def test_overwrite_keeps_a_chat_template_the_tokenizer_does_not_write(pruned, tiny_tokenizer, tmp_path):
    assert tiny_tokenizer.chat_template is None  # it writes no chat_template.jinja
    model_dir = save_pruned(pruned, tmp_path / "model", tokenizer=tiny_tokenizer)
    (model_dir / "chat_template.jinja").write_text("{{ my template }}")
    state = folder_state(model_dir)
    with pytest.raises(FileExistsError, match=r"\(chat_template\.jinja\)"):
        save_pruned(pruned, model_dir, tokenizer=tiny_tokenizer, overwrite=True)
    assert folder_state(model_dir) == state
    assert listing(tmp_path) == ["model"]


def test_a_chat_template_the_previous_save_wrote_is_replaced(pruned, tiny_tokenizer, tmp_path):
    templated = copy.deepcopy(tiny_tokenizer)
    templated.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    model_dir = save_pruned(pruned, tmp_path / "model", tokenizer=templated)
    assert "chat_template.jinja" in saved_files(model_dir)
    save_pruned(pruned, model_dir, tokenizer=tiny_tokenizer, overwrite=True)  # recorded: the old save's own
    assert not (model_dir / "chat_template.jinja").exists()
    assert sorted(saved_files(model_dir)) == listing(model_dir)


def test_resaving_with_another_shard_count_replaces_the_old_shards(pruned, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model", max_shard_size="40KB")
    shards = [name for name in listing(model_dir) if name.startswith("model-0")]
    assert len(shards) > 1 and sorted(saved_files(model_dir)) == listing(model_dir)
    save_pruned(pruned, model_dir, overwrite=True)  # one file now: the recorded shards are the old save's
    assert "model.safetensors" in listing(model_dir) and not any((model_dir / name).exists() for name in shards)
    assert not (model_dir / "model.safetensors.index.json").exists()
    assert sorted(saved_files(model_dir)) == listing(model_dir)
    save_pruned(pruned, model_dir, overwrite=True, max_shard_size="40KB")  # and back
    assert not (model_dir / "model.safetensors").exists() and (model_dir / "model.safetensors.index.json").exists()
    assert listing(tmp_path) == ["model"]


def test_a_shard_the_previous_save_did_not_write_is_kept(pruned, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model")
    (model_dir / "model-00003-of-00003.safetensors").write_bytes(b"not from this save")
    state = folder_state(model_dir)
    with pytest.raises(FileExistsError, match=r"\(model-00003-of-00003\.safetensors\)"):
        save_pruned(pruned, model_dir, overwrite=True)
    assert folder_state(model_dir) == state


def test_a_plain_save_pretrained_folder_allows_only_the_new_saves_names(pruned, tiny_tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    pruned.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    state = folder_state(model_dir)
    # no record of what wrote the tokenizer files, and this save writes none: they are not its to delete
    with pytest.raises(FileExistsError, match=r"\(tokenizer\.json, tokenizer_config\.json\)"):
        save_pruned(pruned, model_dir, overwrite=True)
    assert folder_state(model_dir) == state
    save_pruned(pruned, model_dir, tokenizer=tiny_tokenizer, overwrite=True)  # it writes them all
    assert (model_dir / PRUNING_CONFIG_NAME).is_file() and sorted(saved_files(model_dir)) == listing(model_dir)


def test_a_record_without_saved_files_or_with_bad_names_allows_only_the_new_names(pruned, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model")
    (model_dir / "notes").mkdir()
    (model_dir / "extra.txt").write_text("mine")
    meta = json.loads((model_dir / PRUNING_CONFIG_NAME).read_text())
    for record in (None, ["notes/", "../extra.txt", "./extra.txt", "", 7, "extra.txt/"]):
        if record is None:
            meta.pop("saved_files", None)  # as an earlier hf_gradprobe wrote it
        else:
            meta["saved_files"] = meta.get("saved_files", []) + record
        (model_dir / PRUNING_CONFIG_NAME).write_text(json.dumps(meta))
        state = folder_state(model_dir)
        with pytest.raises(FileExistsError, match=r"\(extra\.txt, notes/\)"):
            save_pruned(pruned, model_dir, overwrite=True)
        assert folder_state(model_dir) == state


def test_a_link_named_like_a_saved_file_is_not_replaced(pruned, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model")
    (tmp_path / "elsewhere.json").write_text("{}")
    (model_dir / "generation_config.json").unlink()
    (model_dir / "generation_config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileExistsError, match="generation_config.json"):
        save_pruned(pruned, model_dir, overwrite=True)
    assert (model_dir / "generation_config.json").is_symlink()


def test_push_to_hub_with_output_dir_keeps_the_users_file(pruned, tmp_path, monkeypatch):
    from hf_gradprobe.sharing import push

    def no_push(*args, **kwargs):
        raise AssertionError("pushed although the save was refused")

    monkeypatch.setattr(push, "push_folder_to_hub", no_push)
    model_dir = save_pruned(pruned, tmp_path / "model")
    (model_dir / "my_lora_adapter.safetensors").write_bytes(b"mine")
    state = folder_state(model_dir)
    with pytest.raises(FileExistsError, match=r"my_lora_adapter\.safetensors"):
        push.push_to_hub(pruned, "someone/tiny", token=FAKE_TOKEN, output_dir=model_dir, overwrite=True)
    assert folder_state(model_dir) == state


@pytest.fixture
def cli_source(tmp_path, tiny_tokenizer):
    model_dir = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "source" / "tiny")
    data = tmp_path / "source" / "corpus.txt"
    data.write_text(sample_text(600, seed=1) + "\n", encoding="utf-8")
    return ["prune", model_dir, "--calibration", str(data), "--num_calibration_samples", "4"] + [
        "--calibration-seq-len",
        "32",
        "--num_probe_samples",
        "2",
    ]


@pytest.mark.parametrize("user_file", ["my_lora_adapter.safetensors", "chat_template.jinja"])
def test_cli_overwrite_keeps_the_users_file(pruned, tiny_tokenizer, cli_source, tmp_path, capsys, user_file):
    model_dir = save_pruned(pruned, tmp_path / "out" / "model", tokenizer=tiny_tokenizer)
    (model_dir / user_file).write_text("the user's")
    state = folder_state(model_dir)
    assert main([*cli_source, "--output_dir", str(model_dir), "--overwrite"]) == 2
    err = capsys.readouterr().err  # progress bars, then the error
    last = err.strip().splitlines()[-1]
    assert last.startswith("hf-gradprobe prune: error: Refusing to overwrite `") and "Traceback" not in err
    assert f"({user_file})" in last
    assert folder_state(model_dir) == state
    assert listing(tmp_path / "out") == ["model"]


# ------------------------------------------------------------------------------- 2. a crash between the two renames


def test_a_save_killed_mid_swap_is_restored_never_deleted(pruned, tmp_path, monkeypatch):
    old = save_pruned(pruned, tmp_path / "model", metadata={"method": "old"})
    state = folder_state(old)
    pid = dead_pid()
    # What a writer killed between "move the old folder aside" and "move the new one in" leaves.
    os.rename(old, tmp_path / f".model.replaced-{pid}-abc123")
    partial = tmp_path / f".model.incomplete-{pid}-def456"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")

    monkeypatch.setattr(save_module, "build_model_card", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pruned(pruned, tmp_path / "model", overwrite=True)  # fails after writing: the old copy survives
    assert folder_state(tmp_path / "model") == state
    assert listing(tmp_path) == ["model"]  # put back; the dead writer's partial folder is gone
    monkeypatch.undo()

    new = save_pruned(pruned, tmp_path / "model", metadata={"method": "new"}, overwrite=True)
    assert load_pruning_metadata(new)["method"] == "new" and listing(tmp_path) == ["model"]


def test_the_check_restores_a_replaced_copy_before_answering(pruned, tmp_path):
    old = save_pruned(pruned, tmp_path / "model", metadata={"method": "old"})
    state = folder_state(old)
    os.rename(old, tmp_path / f".model.replaced-{dead_pid()}-abc123")
    # Without overwrite a missing folder would be written from scratch; the old model is there first.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        check_output_dir(tmp_path / "model", overwrite=False)
    assert folder_state(tmp_path / "model") == state and listing(tmp_path) == ["model"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pruned(pruned, tmp_path / "model")


def test_a_failed_swap_whose_rollback_fails_is_restored_by_the_next_save(pruned, tmp_path, monkeypatch):
    old = save_pruned(pruned, tmp_path / "model", metadata={"method": "old"})
    state = folder_state(old)
    # The two-rename swap (where no atomic exchange exists), with the move-in and the rollback failing.
    monkeypatch.setattr(swap_module, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def flaky_rename(src, dst):
        if Path(dst).name == "model" and Path(src).name.startswith(".model."):
            raise OSError(errno.EIO, "simulated crash")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated crash"):
        save_pruned(pruned, tmp_path / "model", metadata={"method": "new"}, overwrite=True)
    monkeypatch.undo()
    assert not (tmp_path / "model").exists()  # the old copy is aside, under a hidden name
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pruned(pruned, tmp_path / "model", metadata={"method": "newer"})
    assert folder_state(tmp_path / "model") == state and listing(tmp_path) == ["model"]


def test_the_two_rename_swap_replaces_and_leaves_nothing(pruned, tmp_path, monkeypatch):
    monkeypatch.setattr(swap_module, "_exchange", lambda a, b: False)
    save_pruned(pruned, tmp_path / "model", metadata={"method": "old"})
    new = save_pruned(pruned, tmp_path / "model", metadata={"method": "new"}, overwrite=True)
    assert load_pruning_metadata(new)["method"] == "new" and listing(tmp_path) == ["model"]


def test_leftovers_beside_a_complete_folder_are_removed_live_ones_kept(pruned, tmp_path):
    save_pruned(pruned, tmp_path / "model", metadata={"method": "current"})
    pid = dead_pid()
    for name in (f".model.replaced-{pid}-abc123", f".model.incomplete-{pid}-abc123"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    live = tmp_path / f".model.incomplete-{os.getpid()}-def456"
    live.mkdir()
    save_pruned(pruned, tmp_path / "model", overwrite=True)
    assert listing(tmp_path) == [live.name, "model"]


# ------------------------------------------------------------------------------- 3. concurrent saves to one folder


def _save_repeatedly(model, output_dir, worker, saves, start, errors):
    try:
        start.wait(timeout=60)
        for i in range(saves):
            save_pruned(model, output_dir, metadata={"method": f"w{worker}-{i}"}, overwrite=True, plot=False)
    except BaseException as err:  # reported to the test, which fails on it
        errors.put(f"worker {worker}: {type(err).__name__}: {err}")
        raise


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_concurrent_saves_all_succeed_and_the_folder_is_always_complete(pruned, tmp_path, monkeypatch, exchange):
    if not exchange:  # as where renameat2 is unavailable; the forked workers inherit it
        monkeypatch.setattr(swap_module, "_exchange", lambda a, b: False)
    out = tmp_path / "model"
    save_pruned(pruned, out, metadata={"method": "first"}, plot=False)
    expected = set(saved_files(out))
    context = multiprocessing.get_context("fork")
    start, errors = context.Event(), context.Queue()
    workers = [
        context.Process(target=_save_repeatedly, args=(pruned, out, worker, 25, start, errors)) for worker in range(3)
    ]
    for process in workers:
        process.start()
    start.set()
    # missing: no folder at the path; lookup_failed: a file of the save not found through the path;
    # incomplete: the same folder (inode) before and after, yet a file of the save absent: half-written.
    seen = {"missing": 0, "lookup_failed": 0, "incomplete": 0, "looks": 0}
    deadline = time.monotonic() + 120
    while any(process.is_alive() for process in workers) and time.monotonic() < deadline:
        seen["looks"] += 1
        try:
            before = os.stat(out).st_ino
        except FileNotFoundError:
            seen["missing"] += 1
            continue
        if not all(os.path.isfile(out / name) for name in expected):
            seen["lookup_failed"] += 1
            with contextlib.suppress(FileNotFoundError):
                seen["incomplete"] += os.stat(out).st_ino == before
    for process in workers:
        process.join(timeout=60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures and [process.exitcode for process in workers] == [0, 0, 0]
    assert seen["looks"] > 100
    if exchange and swap_module._exchange_supported(tmp_path):
        assert seen["missing"] == seen["lookup_failed"] == seen["incomplete"] == 0, seen
    else:  # two renames: the folder is absent for an instant, never half-written
        assert seen["incomplete"] == 0, seen
    assert load_pruning_metadata(out)["method"].endswith("-24") and listing(tmp_path) == ["model"]


def test_a_save_waits_for_the_lock_and_the_lock_stays_outside(pruned, tmp_path):
    out = save_pruned(pruned, tmp_path / "model")
    lock = swap_module._lock_path(out)
    assert lock.parent == tmp_path and lock.name.startswith(".model.") and not lock.exists()
    done = threading.Event()

    def save():
        save_pruned(pruned, out, metadata={"method": "waited"}, overwrite=True, plot=False)
        done.set()

    with swap_module.save_lock(out):
        thread = threading.Thread(target=save)
        thread.start()
        assert not done.wait(0.5)  # held: the save waits
    thread.join(timeout=30)
    assert done.is_set() and load_pruning_metadata(out)["method"] == "waited"
    assert listing(tmp_path) == ["model"] and lock.name not in saved_files(out)


def test_a_lock_file_left_by_a_killed_save_does_not_block(pruned, tmp_path):
    out = save_pruned(pruned, tmp_path / "model")
    swap_module._lock_path(out).write_text("")
    save_pruned(pruned, out, overwrite=True)
    assert listing(tmp_path) == ["model"]


# ------------------------------------------------------------------------------- 4. arguments refused before writing


@pytest.mark.parametrize("bad", [None, 3, b"model"])
def test_output_dir_must_be_a_path(pruned, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError) as raised:
        save_pruned(pruned, bad)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("`output_dir` must be a folder path") and repr(bad) in message
    with pytest.raises(TypeError, match="`output_dir` must be a folder path"):
        check_output_dir(bad, True)
    assert listing(tmp_path) == []


def test_output_dir_must_not_be_empty(pruned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="`output_dir` must be a folder path.*got ''"):
        save_pruned(pruned, "")
    assert listing(tmp_path) == []


def test_overwrite_must_be_a_bool(pruned, tmp_path):
    model_dir = save_pruned(pruned, tmp_path / "model")
    state = folder_state(model_dir)
    with pytest.raises(ValueError, match="`overwrite` must be true or false"):
        save_pruned(pruned, model_dir, overwrite="no")
    assert folder_state(model_dir) == state


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"x": torch.ones(3)}, "metadata['x']"),
        ({"calibration": {"stats": [1, torch.zeros(2, 2)]}}, "metadata['calibration']['stats'][1]"),
        ({"scores": np.arange(4.0)}, "metadata['scores']"),
    ],
)
def test_metadata_holding_a_tensor_is_refused_naming_the_key(pruned, tmp_path, metadata, where):
    with pytest.raises(TypeError) as raised:
        save_pruned(pruned, tmp_path / "out", metadata=metadata)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"`{where}` is") and ".tolist()" in message
    assert listing(tmp_path) == []
    with pytest.raises(TypeError, match="is an array of shape"):
        build_pruning_metadata(pruned, metadata)


def test_metadata_scalars_from_tensors_and_arrays_are_numbers(pruned):
    meta = build_pruning_metadata(
        pruned, {"loss": torch.tensor(2.5), "steps": np.int64(7), "inf": torch.tensor(float("inf"))}
    )
    assert meta["loss"] == 2.5 and meta["steps"] == 7 and meta["inf"] is None

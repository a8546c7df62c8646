# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``save_pruned``: write a pruned model as a shareable folder (weights, tokenizer, card, plot, metadata), atomically.

The folder holds stock safetensors and ``config.json`` (no ``hf_gradprobe`` needed to load them), plus
``pruning_config.json``, the README.md model card and the per-layer sparsity plot; it is exactly what
``push_to_hub`` commits.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from .card import build_model_card, is_pruned
from .metadata import PRUNING_CONFIG_NAME, build_pruning_metadata, config_value
from .plot import PLOT_FILE, PLOT_KINDS, plot_kind, plot_layer_sparsity
from .redaction import redact_tokens


logger = logging.get_logger(__name__)

CARD_NAME = "README.md"


def check_repo_id(repo_id) -> None:
    """Raise a ``ValueError`` that says how to spell a Hub repo id, unless ``repo_id`` is one."""
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` must be a string like 'username/model-name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"`repo_id`={repo_id!r} is not a valid Hub repo id: {err} Use 'username/model-name' or "
            "'organization/model-name' (letters, digits, '-', '_', '.'; at most 96 characters)."
        ) from None


# What a save writes (save_pretrained, the tokenizer, the card, the plot, the metadata): a folder holding only
# these (with config.json and safetensors weights) is recognisably a saved model, and only such a folder may be
# replaced by ``overwrite``.
_SAVED_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        PRUNING_CONFIG_NAME,
        "README.md",
        PLOT_FILE,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "chat_template.jinja",
        "chat_template.json",
    }
)
_MAX_LISTED = 5
# Hidden siblings a save makes next to output_dir: ".<name>.incomplete-<pid>-<random>" while writing, and
# ".<name>.replaced-<pid>-<random>" while swapping; a killed writer leaves them behind.
_LEFTOVER_KINDS = ("incomplete", "replaced")
_STALE_AFTER_S = 3600.0


def _is_saved_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (path.name in _SAVED_FILES or path.suffix == ".safetensors")


def _unknown_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` a save does not write (subfolders, ``.git``, the user's files), sorted."""
    return sorted(
        entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir() if not _is_saved_file(entry)
    )


def _looks_like_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and not _unknown_entries(path)


def check_output_dir(output_dir, overwrite: bool, *, flag: str = "overwrite=True", name: str = "output_dir") -> Path:
    """Refuse an ``output_dir`` a save may not write, before any work; return its absolute path.

    It may be missing or empty; a non-empty folder needs ``overwrite`` and must be recognisably a saved model
    (``config.json``, safetensors weights and only the files a save writes): anything else in it (``.git``,
    subfolders, other files) is never deleted. The current folder and its parents are never replaced. ``flag``
    and ``name`` spell the option and the argument in the messages (``--overwrite``/``--output_dir`` on the CLI).
    """
    shown = os.fspath(output_dir)
    output_dir = Path(output_dir).expanduser().resolve()
    for parent in output_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"`{name}`={shown!r} is under {str(parent)!r}, which is a file, not a folder.")
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"`{name}`={shown!r} is a file; pass a folder path.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return output_dir
    if not overwrite:
        raise FileExistsError(
            f"`{name}`={shown!r} exists and is not empty. Pass `{flag}` to replace a saved model there, or choose "
            "another folder."
        )
    cwd = Path.cwd().resolve()
    if output_dir == cwd or output_dir in cwd.parents:
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it is the current folder or a parent of it. Choose a new "
            "folder."
        )
    unknown = _unknown_entries(output_dir)
    if unknown:
        listed = ", ".join(unknown[:_MAX_LISTED]) + (
            f" (+{len(unknown) - _MAX_LISTED} more)" if len(unknown) > _MAX_LISTED else ""
        )
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it holds entries a saved model does not ({listed}), and "
            f"`{flag}` would delete them. Move them away or choose another folder."
        )
    if not _looks_like_model_folder(output_dir):
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it does not look like a saved model (no config.json with "
            "safetensors weights). Choose another folder."
        )
    return output_dir


def _writer_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _remove_stale_leftovers(output_dir: Path) -> None:
    """Remove the hidden folders a killed save to ``output_dir`` left: only ours, only stale ones."""
    pattern = re.compile(rf"^\.{re.escape(output_dir.name)}\.(?:{'|'.join(_LEFTOVER_KINDS)})-(\d+)-[A-Za-z0-9_]+$")
    try:
        siblings = list(output_dir.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        match = pattern.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if not _writer_is_alive(int(match.group(1))) or age > _STALE_AFTER_S:
            logger.info("Removing %s, left by an interrupted save.", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _write_folder(model, folder: Path, tokenizer, meta: dict, repo_id, model_name, card_data, plot, save_kwargs):
    # save_pretrained writes `dtype`/`architectures` into the config it is given: hand it a copy so the
    # caller's model.config is left exactly as it was.
    original_config = model.config
    model.config = copy.deepcopy(original_config)
    try:
        model.save_pretrained(folder, **save_kwargs)
    finally:
        model.config = original_config
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    meta["checkpoint_bytes"] = sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    plot_file = None
    kind = plot_kind(meta.get("layers") or [])  # None: nothing differs between layers, no plot
    if plot and kind:
        try:
            plot_layer_sparsity(
                meta["layers"],
                folder / PLOT_FILE,
                target=config_value(meta, "target_sparsity"),
                title=f"{PLOT_KINDS[kind][0]}: {model_name}",
                kind=kind,
            )
            plot_file = PLOT_FILE
        except ImportError as err:
            logger.warning("%s The card will have no plot.", err)

    with open(folder / PRUNING_CONFIG_NAME, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, allow_nan=False)
        f.write("\n")
    card = build_model_card(meta, repo_id=repo_id, model_name=model_name, plot_file=plot_file, card_data=card_data)
    card.content = redact_tokens(card.content)  # e.g. a token pasted into card_data
    card.save(folder / CARD_NAME)


def _move_into_place(tmp: Path, output_dir: Path) -> None:
    if output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if not output_dir.exists():
        os.rename(tmp, output_dir)
        return
    # Swap with the old folder so that output_dir always holds one complete save, never a mix.
    backup = output_dir.parent / f".{output_dir.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(output_dir, backup)
    try:
        os.rename(tmp, output_dir)
    except BaseException:
        os.rename(backup, output_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def save_with_metadata(
    model, output_dir, tokenizer, meta: dict, overwrite: bool, repo_id, card_data, plot: bool, save_kwargs
) -> Path:
    """Write the folder for metadata already built by ``build_pruning_metadata``; see :func:`save_pruned`."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"`model` must be a transformers PreTrainedModel, got {type(model).__name__}.")
    output_dir = check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_leftovers(output_dir)
    model_name = repo_id.split("/")[-1] if repo_id else output_dir.name
    # A hidden sibling on the same filesystem: the final rename is atomic, and a crash leaves only this
    # ".incomplete" folder behind, never a half-written output_dir.
    # The writer's pid is in the name, so that a later save can tell a killed writer's leftovers from a live one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.incomplete-{os.getpid()}-", dir=output_dir.parent))
    try:
        os.chmod(tmp, _default_dir_mode())  # mkdtemp makes it 0o700; a saved folder gets save_pretrained's mode
        _write_folder(model, tmp, tokenizer, meta, repo_id, model_name, card_data, plot, save_kwargs)
        check_output_dir(output_dir, overwrite)  # again: someone may have written there meanwhile
        _move_into_place(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Saved the pruned model, its card and %s to %s", PRUNING_CONFIG_NAME, output_dir)
    return output_dir


def save_pruned(
    model,
    output_dir: str | os.PathLike,
    tokenizer=None,
    metadata: dict | None = None,
    command: str | None = None,
    overwrite: bool = False,
    *,
    repo_id: str | None = None,
    card_data: Mapping | None = None,
    plot: bool = True,
    **save_kwargs,
) -> Path:
    """Write a pruned model as a folder ready to share, atomically.

    The folder holds the safetensors weights and config (``save_pretrained``; loads with stock Transformers,
    zeros intact), the tokenizer when given, ``pruning_config.json`` (see ``build_pruning_metadata``), the
    README.md model card and ``sparsity_per_layer.png``. It is written to a hidden sibling folder first and
    renamed into place only once complete. ``model`` is not modified.

    Args:
        model: the pruned ``PreTrainedModel``.
        output_dir: the folder to create. If it exists and is not empty, ``overwrite=True`` is needed, and it
            must hold a saved model and nothing else (see :func:`check_output_dir`).
        tokenizer: saved beside the model when given.
        metadata: pruning metadata; default ``model.pruning_report`` when present, else only measured figures.
        command: the command or code that produced the model, shown in the card (token values redacted).
        overwrite: replace an existing saved model at ``output_dir``.
        repo_id: the Hub repo the folder is meant for (used in the card's code snippet and title).
        card_data: extra ``ModelCardData`` fields, e.g. ``{"license": "apache-2.0", "language": "en"}``.
        plot: write the per-layer sparsity plot (needs matplotlib).
        save_kwargs: passed to ``model.save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        The absolute path of the folder.
    """
    if repo_id is not None:
        check_repo_id(repo_id)
    meta = build_pruning_metadata(model, metadata, command)
    if not is_pruned(meta):
        warnings.warn(
            f"Saving a model that was not pruned (no pruning recorded, {100 * (meta.get('sparsity') or 0):.2f}% zeros "
            "in its prunable weights): its card says so and is not tagged `pruned`. Prune it first (e.g. "
            "`hf_gradprobe.prune_pretrained`) if that was not intended.",
            UserWarning,
            stacklevel=2,
        )
    return save_with_metadata(model, output_dir, tokenizer, meta, overwrite, repo_id, card_data, plot, save_kwargs)

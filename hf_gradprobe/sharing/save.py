# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``save_pruned``: write a pruned model as a shareable folder (weights, tokenizer, card, plot, metadata), atomically.

The folder holds stock safetensors and ``config.json`` (no ``hf_gradprobe`` needed to load them), plus
``pruning_config.json``, the README.md model card and the per-layer sparsity plot; it is exactly what
``push_to_hub`` commits.

Failure safety. ``overwrite`` replaces only files: those this save writes, and those the previous save recorded
writing (``pruning_config.json["saved_files"]``). Anything else in the folder (another file, a subfolder, a link)
makes the save refuse before anything is moved or deleted. The new folder is written beside ``output_dir`` and
swapped in under a lock, atomically where the system allows it, and a swap killed midway is put back by the next
save (see ``swap``).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from ..core.validation import check_bool, describe_value
from .card import build_model_card
from .metadata import (
    PRUNING_CONFIG_NAME,
    build_pruning_metadata,
    config_value,
    is_pruned,
    read_metadata_file,
    write_metadata_file,
)
from .plot import PLOT_FILE, PLOT_KINDS, plot_kind, plot_layer_sparsity
from .redaction import redact_tokens
from .swap import make_incomplete_folder, remove_stale_leftovers, restore_interrupted_swap, save_lock, swap_in


__all__ = [
    "CARD_NAME",
    "SAVED_FILES_KEY",
    "check_output_dir",
    "check_repo_id",
    "save_pruned",
    "save_with_metadata",
]

logger = logging.get_logger(__name__)

CARD_NAME = "README.md"
# The pruning_config.json key listing the files a save wrote: the next overwrite may replace exactly those.
SAVED_FILES_KEY = "saved_files"


def check_repo_id(repo_id) -> None:
    """Refuse a value that is not a Hub repo id, saying how to spell one.

    Args:
        repo_id (`str`):
            The value to check, e.g. ``"username/model-name"``.

    Raises:
        `TypeError` for a value that is not a string, `ValueError` for a string that is not a repo id.
    """
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` must be a string like 'username/model-name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"`repo_id`={repo_id!r} is not a valid Hub repo id: {err} Use 'username/model-name' or "
            "'organization/model-name' (letters, digits, '-', '_', '.'; at most 96 characters)."
        ) from None


# Names a save may write (save_pretrained, the tokenizer, the card, the plot, the metadata). Only the check
# made before the save is written uses them, to refuse early what no save would replace; the swap itself
# allows only the exact names this save wrote and those the previous save recorded.
_SAVED_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        PRUNING_CONFIG_NAME,
        CARD_NAME,
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
_WEIGHTS_FILE = re.compile(r"^model(?:-\d{5}-of-\d{5})?\.safetensors$")
_MAX_LISTED = 5


def _entries(folder: Path) -> dict[str, str]:
    """``{name: "file" | "dir" | "other"}`` for the entries of ``folder``; links are "other", never followed."""
    kinds = {}
    with os.scandir(folder) as scan:
        for entry in scan:
            if entry.is_symlink():
                kinds[entry.name] = "other"
            elif entry.is_dir(follow_symlinks=False):
                kinds[entry.name] = "dir"
            elif entry.is_file(follow_symlinks=False):
                kinds[entry.name] = "file"
            else:
                kinds[entry.name] = "other"
    return kinds


def _label(name: str, kind: str) -> str:
    return {"dir": f"{name}/", "other": f"{name} (a link or special file)"}.get(kind, name)


def _is_plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in ("/", "\\", "\0"))


def _recorded_files(folder: Path) -> frozenset[str]:
    """The file names the save that wrote ``folder`` recorded; empty for a folder from ``save_pretrained``, an
    earlier hf_gradprobe, or an unreadable record (then only the new save's names may be replaced)."""
    path = folder / PRUNING_CONFIG_NAME
    try:
        if path.is_symlink() or not path.is_file():
            return frozenset()
        meta = read_metadata_file(path)
    except (OSError, ValueError, RecursionError):
        return frozenset()
    names = meta.get(SAVED_FILES_KEY)
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if _is_plain_name(name))


def _may_be_written(name: str) -> bool:
    return name in _SAVED_FILES or _WEIGHTS_FILE.match(name) is not None


def _listed(labels: list[str]) -> str:
    more = f" (+{len(labels) - _MAX_LISTED} more)" if len(labels) > _MAX_LISTED else ""
    return ", ".join(labels[:_MAX_LISTED]) + more


def _resolve_output_dir(output_dir, name: str) -> tuple[Path, str]:
    """The absolute path and the spelling to show, or a one-line error for a value that is not a folder path."""
    shown = os.fspath(output_dir) if isinstance(output_dir, (str, os.PathLike)) else None
    if not isinstance(shown, str):
        raise TypeError(
            f"`{name}` must be a folder path (a str or os.PathLike), got {describe_value(output_dir)}. Pass the "
            "folder to write, e.g. 'my-model-pruned'."
        )
    if not shown:
        raise ValueError(
            f"`{name}` must be a folder path (a non-empty str or os.PathLike), got ''. Pass the folder to write, "
            "e.g. 'my-model-pruned'."
        )
    path = Path(shown).expanduser().resolve()
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"`{name}`={shown!r} is under {str(parent)!r}, which is a file, not a folder.")
    return path, shown


def _check_target(path: Path, shown: str, overwrite: bool, flag: str, name: str, written=None) -> None:
    """Refuse a ``path`` this save may not write or replace.

    ``written``: the file names this save wrote, once known (the swap); ``None`` before the save is written,
    when any name a save may write is let through (the swap checks again, exactly).
    """
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"`{name}`={shown!r} is a file; pass a folder path.")
    try:
        entries = _entries(path)
    except FileNotFoundError:
        return
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"`{name}`={shown!r} exists and is not empty. Pass `{flag}` to replace a saved model there, or choose "
            "another folder."
        )
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it is the current folder or a parent of it. Choose a new "
            "folder."
        )
    allowed = _recorded_files(path) | (written or frozenset())
    unknown = sorted(
        _label(entry, kind)
        for entry, kind in entries.items()
        if not (kind == "file" and (entry in allowed or (written is None and _may_be_written(entry))))
    )
    if unknown:
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it holds entries a saved model does not ({_listed(unknown)}). "
            f"`{flag}` replaces only the files this save writes and those the previous save recorded in "
            f"{PRUNING_CONFIG_NAME}, and deletes nothing else: move them away or choose another folder."
        )
    files = [entry for entry, kind in entries.items() if kind == "file"]
    if "config.json" not in files or not any(entry.endswith(".safetensors") for entry in files):
        raise FileExistsError(
            f"Refusing to overwrite `{name}`={shown!r}: it does not look like a saved model (no config.json with "
            "safetensors weights). Choose another folder."
        )


def check_output_dir(output_dir, overwrite: bool, *, flag: str = "overwrite=True", name: str = "output_dir") -> Path:
    """Refuse an ``output_dir`` a save may not write, before any work.

    It may be missing or empty; a non-empty folder needs ``overwrite`` and must be recognisably a saved model
    (``config.json`` and safetensors weights) holding only files a save replaces: the files this save writes and
    those the previous save recorded in ``pruning_config.json``. Anything else (``.git``, subfolders, links, the
    user's files) is never deleted: the save refuses. Names a save may write pass this early check; the swap
    checks the exact names again. A folder left aside by a save killed mid-swap is first put back. The current
    folder and its parents are never replaced.

    Args:
        output_dir (`str` or `os.PathLike`):
            The folder a save will write.
        overwrite (`bool`):
            Whether the save may replace a saved model there.
        flag (`str`, *optional*, defaults to `"overwrite=True"`):
            How the messages spell the overwrite option (``--overwrite`` on the CLI).
        name (`str`, *optional*, defaults to `"output_dir"`):
            How the messages spell the argument (``--output_dir`` on the CLI).

    Returns:
        `Path`: the absolute path of ``output_dir``.
    """
    path, shown = _resolve_output_dir(output_dir, name)
    check_bool("overwrite", overwrite)
    if not path.parent.is_dir():
        return path  # nothing there yet, nothing to recover
    with save_lock(path, shown, name):
        restore_interrupted_swap(path)
        _check_target(path, shown, overwrite, flag, name)
    return path


# ------------------------------------------------------------------------------------------------- the writing


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

    card = build_model_card(meta, repo_id=repo_id, model_name=model_name, plot_file=plot_file, card_data=card_data)
    card.content = redact_tokens(card.content)  # e.g. a token pasted into card_data
    card.save(folder / CARD_NAME)
    # Written last, so it can list every file of the folder: what the next overwrite may replace.
    files = {entry for entry, kind in _entries(folder).items() if kind == "file"}
    meta[SAVED_FILES_KEY] = sorted(files | {PRUNING_CONFIG_NAME})
    write_metadata_file(folder, meta)


def save_with_metadata(
    model,
    output_dir: str | os.PathLike,
    tokenizer,
    meta: dict,
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    card_data: Mapping | None = None,
    plot: bool = True,
    save_kwargs: Mapping | None = None,
) -> Path:
    """Write the folder of :func:`save_pruned` for metadata already built by ``build_pruning_metadata``.

    Args:
        model (`PreTrainedModel`):
            The model to save.
        output_dir (`str` or `os.PathLike`):
            The folder to write (see :func:`check_output_dir`).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Saved beside the model when not ``None``.
        meta (`dict`):
            The metadata; ``checkpoint_bytes`` and ``saved_files`` are added to it.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace a saved model at ``output_dir``.
        repo_id (`str`, *optional*):
            The Hub repo the folder is meant for (the card's snippet and title).
        card_data (`Mapping`, *optional*):
            Extra ``ModelCardData`` fields.
        plot (`bool`, *optional*, defaults to `True`):
            Write the per-layer plot.
        save_kwargs (`Mapping`, *optional*):
            Passed to ``model.save_pretrained``.

    Returns:
        `Path`: the absolute path of the folder.
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"`model` must be a transformers PreTrainedModel, got {type(model).__name__}.")
    path, shown = _resolve_output_dir(output_dir, "output_dir")
    check_bool("overwrite", overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with save_lock(path, shown):
        restore_interrupted_swap(path)
        _check_target(path, shown, overwrite, "overwrite=True", "output_dir")  # before writing gigabytes
        remove_stale_leftovers(path)
    model_name = repo_id.split("/")[-1] if repo_id else path.name
    tmp = make_incomplete_folder(path)
    old = None
    try:
        _write_folder(model, tmp, tokenizer, meta, repo_id, model_name, card_data, plot, dict(save_kwargs or {}))
        written = frozenset(meta[SAVED_FILES_KEY])
        with save_lock(path, shown):
            # Again, exactly: another save may have swapped in meanwhile, or a user added a file.
            restore_interrupted_swap(path)
            _check_target(path, shown, overwrite, "overwrite=True", "output_dir", written)
            old = swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the new save, or after an exchange the old one: never the only copy
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("Saved the pruned model, its card and %s to %s", PRUNING_CONFIG_NAME, path)
    return path


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
    swapped into place only once complete, one save at a time (see the module docstrings of ``save`` and ``swap``
    for what overwrite, concurrent saves and crashes guarantee); ``pruning_config.json["saved_files"]`` lists the files written.
    ``model`` is not modified.

    A model that is not pruned (see :func:`~hf_gradprobe.sharing.metadata.is_pruned`) is saved with a warning.

    Args:
        model (`PreTrainedModel`):
            The pruned model.
        output_dir (`str` or `os.PathLike`):
            The folder to create. If it exists and is not empty, ``overwrite=True`` is needed, and it must hold a
            saved model whose files this save writes or the previous save recorded, and nothing else (see
            :func:`check_output_dir`).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Saved beside the model when given.
        metadata (`dict`, *optional*):
            Pruning metadata; defaults to ``model.pruning_report`` when present, else only measured figures.
        command (`str`, *optional*):
            The command or code that produced the model, shown in the card (token values redacted).
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing saved model at ``output_dir`` (its files only; anything else there makes the save
            refuse, deleting nothing).
        repo_id (`str`, *optional*):
            The Hub repo the folder is meant for (used in the card's code snippet and title).
        card_data (`Mapping`, *optional*):
            Extra ``ModelCardData`` fields, e.g. ``{"license": "apache-2.0", "language": "en"}``.
        plot (`bool`, *optional*, defaults to `True`):
            Write the per-layer plot (needs matplotlib).
        save_kwargs (*optional*):
            Passed to ``model.save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        `Path`: the absolute path of the folder.
    """
    # Every argument is checked before anything is written.
    _resolve_output_dir(output_dir, "output_dir")
    check_bool("overwrite", overwrite)
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
    return save_with_metadata(
        model,
        output_dir,
        tokenizer,
        meta,
        overwrite=overwrite,
        repo_id=repo_id,
        card_data=card_data,
        plot=plot,
        save_kwargs=save_kwargs,
    )

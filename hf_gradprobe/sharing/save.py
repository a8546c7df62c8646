# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``save_pruned``: write a pruned model as a shareable folder (weights, tokenizer, card, plot, metadata), atomically.

The folder holds stock safetensors and ``config.json`` (no ``hf_gradprobe`` needed to load them), plus
``pruning_config.json``, the README.md model card and the per-layer sparsity plot; it is exactly what
``push_to_hub`` commits.

Failure safety. A save writes a hidden sibling folder, then swaps it with ``output_dir`` under a lock (a hidden
sibling lock file, removed when the save is done):

- ``overwrite`` replaces only files: those this save writes, and those the previous save recorded writing
  (``pruning_config.json["saved_files"]``). Anything else in the folder (another file, a subfolder, a link)
  makes the save refuse before anything is moved or deleted.
- Saves to one folder run one swap at a time. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``:
  ``output_dir`` always exists and always holds one complete save. Where that call is unavailable (another OS,
  a filesystem without it) the swap is two renames, and ``output_dir`` is absent between them (microseconds)
  for readers that take no lock; concurrent saves never see it absent.
- A writer killed between those two renames leaves the old folder aside as ``.<name>.replaced-<pid>-*``; the
  next save or check of ``output_dir`` puts it back before anything else, and a replaced copy is deleted only
  once ``output_dir`` holds a model again.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from filelock import FileLock
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from ..core.validation import check_bool, describe_value
from .card import build_model_card, is_pruned
from .metadata import PRUNING_CONFIG_NAME, build_pruning_metadata, config_value
from .plot import PLOT_FILE, PLOT_KINDS, plot_kind, plot_layer_sparsity
from .redaction import redact_tokens


try:  # filelock >= 3.30: lock a descriptor we own, so that the lock file can be removed safely
    from filelock import lock_descriptor, unlock_descriptor
except ImportError:  # pragma: no cover - older filelock: FileLock, whose lock file stays
    lock_descriptor = unlock_descriptor = None


logger = logging.get_logger(__name__)

CARD_NAME = "README.md"
# The pruning_config.json key listing the files a save wrote: the next overwrite may replace exactly those.
SAVED_FILES_KEY = "saved_files"


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
# Hidden siblings a save makes next to output_dir: ".<name>.incomplete-<pid>-<random>" while writing (and, after
# an atomic exchange, while deleting the old folder), ".<name>.replaced-<pid>-<random>" between the two renames
# of a swap without exchange; a killed writer leaves them behind.
_LEFTOVER_KINDS = ("incomplete", "replaced")
_STALE_AFTER_S = 3600.0


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
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError):
        return frozenset()
    names = meta.get(SAVED_FILES_KEY) if isinstance(meta, dict) else None
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
    """Refuse an ``output_dir`` a save may not write, before any work; return its absolute path.

    It may be missing or empty; a non-empty folder needs ``overwrite`` and must be recognisably a saved model
    (``config.json`` and safetensors weights) holding only files a save replaces: the files this save writes and
    those the previous save recorded in ``pruning_config.json``. Anything else (``.git``, subfolders, links, the
    user's files) is never deleted: the save refuses. Names a save may write pass this early check; the swap
    checks the exact names again. A folder left aside by a save killed mid-swap is first put back. The current
    folder and its parents are never replaced. ``flag`` and ``name`` spell the option and the argument in the
    messages (``--overwrite``/``--output_dir`` on the CLI).
    """
    path, shown = _resolve_output_dir(output_dir, name)
    check_bool("overwrite", overwrite)
    if not path.parent.is_dir():
        return path  # nothing there yet, nothing to recover
    with _save_lock(path, shown, name):
        _restore_interrupted_swap(path)
        _check_target(path, shown, overwrite, flag, name)
    return path


# ----------------------------------------------------------------------------------------------------- the lock


def _lock_path(output_dir: Path) -> Path:
    # A hidden sibling: never inside the saved folder, never listed among its entries.
    return output_dir.parent / f".{output_dir.name}.hf_gradprobe-lock"


def _lock_descriptor(path: Path, output_dir: Path, shown: str | None, name: str) -> int | None:
    """An open descriptor holding the lock at ``path``; ``None`` where the filesystem cannot lock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise type(err)(
                f"`{name}`={shown or os.fspath(output_dir)!r} cannot be saved: no lock file can be made in "
                f"{str(path.parent)!r} ({err.strerror or err}); a save writes a hidden folder and a lock beside it. "
                "Choose a folder you can write to."
            ) from None
        try:
            if not lock_descriptor(fd, blocking=False):
                logger.info("Waiting for another save to %s to finish.", output_dir)
                lock_descriptor(fd)
            # A holder removes the lock file before releasing it: a lock won on a removed file guards nothing,
            # so take the one now at the path instead.
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        except OSError as err:  # e.g. a network filesystem without locks
            os.close(fd)
            logger.warning("Could not lock %s (%s): concurrent saves to it are not serialised.", path, err)
            return None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        os.close(fd)


@contextlib.contextmanager
def _save_lock(output_dir: Path, shown: str | None = None, name: str = "output_dir") -> Iterator[None]:
    """Hold the lock that serialises saves to ``output_dir`` (across processes and threads)."""
    path = _lock_path(output_dir)
    if lock_descriptor is None:  # pragma: no cover - older filelock
        with FileLock(path):
            yield
        return
    fd = _lock_descriptor(path, output_dir, shown, name)
    if fd is None:
        yield
        return
    try:
        yield
    finally:
        # Removed while still held, so that no lock file is left beside the folder and a waiter on this one
        # retries on a fresh one (see _lock_descriptor).
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            unlock_descriptor(fd)
        os.close(fd)


# ------------------------------------------------------------------------------------------ leftovers, recovery


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


def _leftovers(output_dir: Path) -> list[tuple[Path, str, int]]:
    """``(path, kind, pid)`` for the hidden folders saves to ``output_dir`` made (not links, not other names)."""
    pattern = re.compile(rf"^\.{re.escape(output_dir.name)}\.({'|'.join(_LEFTOVER_KINDS)})-(\d+)-[A-Za-z0-9_]+$")
    try:
        siblings = list(output_dir.parent.iterdir())
    except OSError:
        return []
    found = []
    for entry in siblings:
        match = pattern.match(entry.name)
        if match is not None and not entry.is_symlink() and entry.is_dir():
            found.append((entry, match.group(1), int(match.group(2))))
    return found


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _restore_interrupted_swap(output_dir: Path) -> None:
    """With the lock held: when ``output_dir`` is missing and a killed swap left the old folder aside, put it back.

    Every swap runs under the lock, so a replaced copy seen while holding it belongs to a swap that will not
    finish, whatever its pid (the pid may be reused). Putting it back is safe even against a writer without the
    lock (an older hf_gradprobe) mid-swap: its move-in then fails, and the old save stays in place.
    """
    if output_dir.exists() or output_dir.is_symlink():
        return
    copies = [path for path, kind, _ in _leftovers(output_dir) if kind == "replaced"]
    if not copies:
        return
    newest = min(copies, key=_age)  # the most recently written, should several have piled up
    os.rename(newest, output_dir)
    logger.warning(
        "%s was missing: put back the previous save from %s, left by a save interrupted while swapping folders.",
        output_dir,
        newest.name,
    )


def _remove_stale_leftovers(output_dir: Path) -> None:
    """With the lock held: remove the hidden folders killed saves to ``output_dir`` left, never the only copy.

    A writer's ``.incomplete`` folder goes once the writer is dead (or it is an hour old); a ``.replaced`` copy
    goes only once ``output_dir`` holds a model again.
    """
    holds_model = (output_dir / "config.json").is_file() and not output_dir.is_symlink()
    for path, kind, pid in _leftovers(output_dir):
        if kind == "incomplete":
            remove = not _writer_is_alive(pid) or _age(path) > _STALE_AFTER_S
        else:
            remove = holds_model  # see _restore_interrupted_swap
        if remove:
            logger.info("Removing %s, left by an interrupted save.", path)
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- the swap

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (old glibc, musl)
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; ``False``, with nothing changed, where that is unavailable."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    # ENOSYS/EINVAL (kernel, filesystem), EPERM (a sandbox): the two-rename swap raises a real error itself.
    logger.debug("renameat2(RENAME_EXCHANGE) failed: %s; swapping with two renames.", os.strerror(ctypes.get_errno()))
    return False


def _exchange_supported(folder: Path) -> bool:
    """Whether saves into ``folder`` swap atomically (two empty probe folders are exchanged and removed)."""
    first = Path(tempfile.mkdtemp(prefix=".hf_gradprobe-probe-", dir=folder))
    second = Path(tempfile.mkdtemp(prefix=".hf_gradprobe-probe-", dir=folder))
    try:
        return _exchange(first, second)
    finally:
        first.rmdir()
        second.rmdir()


def _swap_in(tmp: Path, output_dir: Path) -> Path | None:
    """With the lock held: put the complete ``tmp`` at ``output_dir``; return the old folder to delete, if any."""
    if not output_dir.exists():
        os.rename(tmp, output_dir)
        return None
    if _exchange(tmp, output_dir):
        return tmp  # now the old folder, under the writer's hidden name
    backup = output_dir.parent / f".{output_dir.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(output_dir, backup)
    try:
        os.rename(tmp, output_dir)
    except BaseException:
        try:
            os.rename(backup, output_dir)
        except OSError as err:
            logger.error(
                "Could not put the previous save back at %s (%s): it is at %s, and the next save or check of "
                "that folder puts it back.",
                output_dir,
                err,
                backup,
            )
        raise
    # Deleted with the lock held: a replaced copy outside it could be put back by a save that finds no folder.
    shutil.rmtree(backup, ignore_errors=True)
    return None


# ------------------------------------------------------------------------------------------------- the writing


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

    card = build_model_card(meta, repo_id=repo_id, model_name=model_name, plot_file=plot_file, card_data=card_data)
    card.content = redact_tokens(card.content)  # e.g. a token pasted into card_data
    card.save(folder / CARD_NAME)
    # Written last, so it can list every file of the folder: what the next overwrite may replace.
    files = {entry for entry, kind in _entries(folder).items() if kind == "file"}
    meta[SAVED_FILES_KEY] = sorted(files | {PRUNING_CONFIG_NAME})
    with open(folder / PRUNING_CONFIG_NAME, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, allow_nan=False)
        f.write("\n")


def save_with_metadata(
    model, output_dir, tokenizer, meta: dict, overwrite: bool, repo_id, card_data, plot: bool, save_kwargs
) -> Path:
    """Write the folder for metadata already built by ``build_pruning_metadata``; see :func:`save_pruned`."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"`model` must be a transformers PreTrainedModel, got {type(model).__name__}.")
    path, shown = _resolve_output_dir(output_dir, "output_dir")
    check_bool("overwrite", overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _save_lock(path, shown):
        _restore_interrupted_swap(path)
        _check_target(path, shown, overwrite, "overwrite=True", "output_dir")  # before writing gigabytes
        _remove_stale_leftovers(path)
    model_name = repo_id.split("/")[-1] if repo_id else path.name
    # A hidden sibling on the same filesystem, so the swap is a rename; a crash leaves only this ".incomplete"
    # folder behind, never a half-written output_dir. The writer's pid is in the name, so that a later save can
    # tell a killed writer's leftovers from a live one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.incomplete-{os.getpid()}-", dir=path.parent))
    old = None
    try:
        os.chmod(tmp, _default_dir_mode())  # mkdtemp makes it 0o700; a saved folder gets save_pretrained's mode
        _write_folder(model, tmp, tokenizer, meta, repo_id, model_name, card_data, plot, save_kwargs)
        written = frozenset(meta[SAVED_FILES_KEY])
        with _save_lock(path, shown):
            # Again, exactly: another save may have swapped in meanwhile, or a user added a file.
            _restore_interrupted_swap(path)
            _check_target(path, shown, overwrite, "overwrite=True", "output_dir", written)
            old = _swap_in(tmp, path)
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
    swapped into place only once complete, one save at a time (see the module docstring for what overwrite,
    concurrent saves and crashes guarantee); ``pruning_config.json["saved_files"]`` lists the files written.
    ``model`` is not modified.

    Args:
        model: the pruned ``PreTrainedModel``.
        output_dir: the folder to create. If it exists and is not empty, ``overwrite=True`` is needed, and it
            must hold a saved model whose files this save writes or the previous save recorded, and nothing
            else (see :func:`check_output_dir`).
        tokenizer: saved beside the model when given.
        metadata: pruning metadata; default ``model.pruning_report`` when present, else only measured figures.
        command: the command or code that produced the model, shown in the card (token values redacted).
        overwrite: replace an existing saved model at ``output_dir`` (its files only; anything else there
            makes the save refuse, deleting nothing).
        repo_id: the Hub repo the folder is meant for (used in the card's code snippet and title).
        card_data: extra ``ModelCardData`` fields, e.g. ``{"license": "apache-2.0", "language": "en"}``.
        plot: write the per-layer sparsity plot (needs matplotlib).
        save_kwargs: passed to ``model.save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        The absolute path of the folder.
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
    return save_with_metadata(model, output_dir, tokenizer, meta, overwrite, repo_id, card_data, plot, save_kwargs)

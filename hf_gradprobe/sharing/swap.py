# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""How a save replaces its output folder safely: a lock per folder, an atomic swap, and recovery after a crash.

A save writes a hidden sibling folder (:func:`make_incomplete_folder`), then swaps it with ``output_dir`` under a
lock (a hidden sibling lock file, removed when the save is done, :func:`save_lock`):

- Saves to one folder run one swap at a time. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``:
  ``output_dir`` always exists and always holds one complete save. Where that call is unavailable (another OS,
  a filesystem without it) the swap is two renames, and ``output_dir`` is absent between them (microseconds)
  for readers that take no lock; concurrent saves never see it absent (:func:`swap_in`).
- A writer killed between those two renames leaves the old folder aside as ``.<name>.replaced-<pid>-*``; the
  next save or check of ``output_dir`` puts it back before anything else (:func:`restore_interrupted_swap`), and a
  replaced copy is deleted only once ``output_dir`` holds a model again (:func:`remove_stale_leftovers`).

What may be replaced (the files a save writes) is decided in ``save``; this module only moves folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock
from transformers.utils import logging


try:  # filelock >= 3.30: lock a descriptor we own, so that the lock file can be removed safely
    from filelock import lock_descriptor, unlock_descriptor
except ImportError:  # pragma: no cover - older filelock: FileLock, whose lock file stays
    lock_descriptor = unlock_descriptor = None


__all__ = ["make_incomplete_folder", "remove_stale_leftovers", "restore_interrupted_swap", "save_lock", "swap_in"]

logger = logging.get_logger(__name__)

# Hidden siblings a save makes next to output_dir: ".<name>.incomplete-<pid>-<random>" while writing (and, after
# an atomic exchange, while deleting the old folder), ".<name>.replaced-<pid>-<random>" between the two renames
# of a swap without exchange; a killed writer leaves them behind.
_LEFTOVER_KINDS = ("incomplete", "replaced")
_STALE_AFTER_S = 3600.0


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
def save_lock(output_dir: Path, shown: str | None = None, name: str = "output_dir") -> Iterator[None]:
    """Hold the lock that serialises saves to ``output_dir``, across processes and threads.

    Where the filesystem cannot lock (some network filesystems), it warns and runs unlocked.

    Args:
        output_dir (`Path`):
            The absolute path of the folder saved.
        shown (`str`, *optional*):
            ``output_dir`` as the caller typed it, for the messages.
        name (`str`, *optional*, defaults to `"output_dir"`):
            How the messages spell the argument.
    """
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


def restore_interrupted_swap(output_dir: Path) -> None:
    """With the lock held: when ``output_dir`` is missing and a killed swap left the old folder aside, put it back.

    Every swap runs under the lock, so a replaced copy seen while holding it belongs to a swap that will not
    finish, whatever its pid (the pid may be reused). Putting it back is safe even against a writer without the
    lock (an older hf_gradprobe) mid-swap: its move-in then fails, and the old save stays in place.

    Args:
        output_dir (`Path`):
            The absolute path of the folder saved.
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


def remove_stale_leftovers(output_dir: Path) -> None:
    """With the lock held: remove the hidden folders killed saves to ``output_dir`` left, never the only copy.

    A writer's ``.incomplete`` folder goes once the writer is dead (or it is an hour old); a ``.replaced`` copy
    goes only once ``output_dir`` holds a model again.

    Args:
        output_dir (`Path`):
            The absolute path of the folder saved.
    """
    holds_model = (output_dir / "config.json").is_file() and not output_dir.is_symlink()
    for path, kind, pid in _leftovers(output_dir):
        if kind == "incomplete":
            remove = not _writer_is_alive(pid) or _age(path) > _STALE_AFTER_S
        else:
            remove = holds_model  # see restore_interrupted_swap
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


def swap_in(tmp: Path, output_dir: Path) -> Path | None:
    """With the lock held: put the complete ``tmp`` at ``output_dir``.

    Args:
        tmp (`Path`):
            The complete new folder (see :func:`make_incomplete_folder`).
        output_dir (`Path`):
            Where it goes.

    Returns:
        `Path` or `None`: the old folder, under ``tmp``'s name, for the caller to delete once the lock is released
        (after an atomic exchange); ``None`` when there was none or it is already deleted.
    """
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


# ------------------------------------------------------------------------------------------- the new folder


def _default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def make_incomplete_folder(output_dir: Path) -> Path:
    """Create the hidden sibling a save of ``output_dir`` writes into before :func:`swap_in` moves it in place.

    It is on the same filesystem as ``output_dir``, so the swap is a rename; a crash leaves only this
    ``.<name>.incomplete-<pid>-*`` folder behind, never a half-written ``output_dir``. The writer's pid is in the
    name, so that a later save can tell a killed writer's leftovers from a live one.

    Args:
        output_dir (`Path`):
            The absolute path of the folder being saved; its parent exists.

    Returns:
        `Path`: the new, empty folder, with the mode ``save_pretrained`` gives a folder it creates.
    """
    folder = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.incomplete-{os.getpid()}-", dir=output_dir.parent))
    try:
        os.chmod(folder, _default_dir_mode())  # mkdtemp makes it 0o700
    except BaseException:
        folder.rmdir()
        raise
    return folder

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Text to token windows: where text comes from (files, datasets names, lists), seeded calibration windows and
non-overlapping evaluation windows."""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Sequence

import torch


__all__ = [
    "STRUCTURED_FORMATS",
    "calibration_window_starts",
    "calibration_windows",
    "check_data_source",
    "evaluation_windows",
    "load_text",
    "tokenize_corpus",
]

# Any other local file is read as plain text (e.g. WikiText's `wiki.test.raw`).
STRUCTURED_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_not_special(path: str, argument: str) -> None:
    """Refuse a path that exists but is no regular file or folder (a FIFO, ``/dev/null``, a socket) or a broken
    link: each would otherwise be taken for a missing file or a datasets name on the Hub."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"`{argument}`={path!r} is a broken symbolic link (to {os.readlink(path)!r}): point it at an existing "
                "text/JSON(L)/parquet file, or pass that file."
            ) from None
        return
    except (OSError, ValueError):  # a name too long or holding a NUL byte is no file: other checks name it
        return
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            raise ValueError(
                f"`{argument}`={path!r} is {kind}, not a regular file: pass a text/JSON(L)/parquet file (to use a "
                "stream, save it to a file first)."
            )


def _check_text_file(path: str, argument: str) -> None:
    """Refuse a binary or non-UTF-8 file before ``datasets`` reads it (it would fail obscurely, or read junk)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        if b"\x00" in head:
            raise ValueError(f"`{argument}`={path!r} is a binary file, not text: pass a UTF-8 text/JSON(L) file.")
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, chunk = 0, head
        while chunk:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"`{argument}`={path!r} is not UTF-8 text (byte {offset + err.start}): convert it to UTF-8, e.g. "
                    "`iconv -f latin1 -t utf-8`."
                ) from None
            offset += len(chunk)
            chunk = f.read(1 << 22)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"`{argument}`={path!r} is not UTF-8 text (it ends inside a character).") from None


def _check_dataset_name(path: str, argument: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        shown = path if len(path) <= 60 else path[:57] + "..."
        raise ValueError(
            f"`{argument}`={shown!r} is neither an existing file nor a datasets name. To use text held in memory, "
            "pass a list of strings (e.g. `[text]`); otherwise check the file path."
        ) from None


# Local files are recognised by these endings or a path-like start; any other string must be a datasets name.
_FILE_ENDINGS = (*STRUCTURED_FORMATS, ".txt", ".raw")
_PATH_STARTS = (".", os.path.sep, "~")
# Longer strings are no path the OS takes (PATH_MAX): they are not looked up on disk.
_PATH_MAX = 4096


def check_data_source(source: str | os.PathLike, argument: str = "data") -> str:
    """Refuse a data path or name that cannot be read, before anything is loaded.

    Refused: a special file (a FIFO, a device, a socket), a broken link, a folder, a binary or non-UTF-8 text file,
    a missing file (a string ending like a file or starting like a path) and a string that is neither a file nor a
    ``datasets`` name. ``~`` is not expanded, as Python's ``open`` does not expand it.

    Args:
        source (`str` or `os.PathLike`):
            A local ``.txt``/``.raw``/``.json``/``.jsonl``/``.parquet`` file (any other file is read as text) or a
            ``datasets`` Hub name.
        argument (`str`, *optional*, defaults to `"data"`):
            How the messages spell the argument (``--calibration`` on the command line).

    Returns:
        `str`: how :func:`load_text` reads it: ``"text"``, ``"json"`` or ``"parquet"`` for a local file,
        ``"dataset"`` for a datasets name.
    """
    path = os.fspath(source)
    if len(path) < _PATH_MAX:
        _check_not_special(path, argument)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"`{argument}`={path!r} is a folder; pass a text/JSON(L)/parquet file or a datasets name."
        )
    ext = os.path.splitext(path)[1].lower()
    if len(path) < _PATH_MAX and os.path.isfile(path):
        kind = STRUCTURED_FORMATS.get(ext, "text")
        if kind != "parquet" and os.path.getsize(path):
            _check_text_file(path, argument)
        return kind
    if ext in _FILE_ENDINGS or path.startswith(_PATH_STARTS):
        raise FileNotFoundError(f"`{argument}`={path!r}: no such file (and not a datasets name).")
    _check_dataset_name(path, argument)
    return "dataset"


def load_text(
    source: str | os.PathLike | Sequence[str],
    split: str = "test",
    text_column: str = "text",
    config_name: str | None = None,
    argument: str = "data",
) -> str:
    """One string holding a corpus.

    Rows of a dataset are joined with ``"\\n\\n"`` as SparseGPT and Wanda do for WikiText-2. A path or name is
    checked first by :func:`check_data_source`.

    Args:
        source (`str`, `os.PathLike` or `Sequence[str]`):
            A list of texts (joined with blank lines), a local ``.txt`` file (its exact content), a local
            ``.json``/``.jsonl``/``.parquet`` file, or a ``datasets`` Hub name, with its configuration as
            ``config_name`` or, for WikiText, as ``"wikitext/wikitext-2-raw-v1"``.
        split (`str`, *optional*, defaults to `"test"`):
            The split of a datasets name.
        text_column (`str`, *optional*, defaults to `"text"`):
            The column holding the text (datasets and JSON/parquet files).
        config_name (`str`, *optional*):
            The configuration of a datasets name.
        argument (`str`, *optional*, defaults to `"data"`):
            How the messages spell the argument.

    Returns:
        `str`: the corpus (empty for an empty file).
    """
    if not isinstance(source, (str, os.PathLike)):
        texts = list(source)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"`{argument}` given as a sequence must hold strings.")
        return "\n\n".join(texts)
    import datasets

    path = os.fspath(source)
    kind = check_data_source(path, argument)
    if kind != "dataset":
        if os.path.getsize(path) == 0:
            return ""  # datasets fails obscurely on an empty file; the caller reports too-short data
        kwargs = {"keep_linebreaks": True} if kind == "text" else {}
        dataset = datasets.load_dataset(kind, data_files=path, split="train", **kwargs)
        joiner = "" if kind == "text" else "\n\n"  # text rows keep their newlines: the file, byte for byte
    else:
        name, config = path, config_name
        if config is None and path.count("/") == 1 and path.split("/")[0] in ("wikitext",):
            name, config = path.split("/")
        dataset = datasets.load_dataset(name, config, split=split)
        joiner = "\n\n"
    if text_column not in dataset.column_names:
        raise ValueError(
            f"`{argument}`={path!r}: `text_column`={text_column!r} not in the dataset columns {dataset.column_names}."
        )
    texts = dataset[text_column]
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"`{argument}`={path!r}: row {row} of column {text_column!r} is {type(text).__name__} "
                f"({str(text)[:40]!r}), not a string. Every row's {text_column!r} must be text."
            )
    return joiner.join(texts)


def tokenize_corpus(tokenizer, data, **load_kwargs) -> torch.Tensor:
    """Token ids of a corpus, with no special tokens added: one stream, cut into windows later.

    Args:
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Needed unless ``data`` is a tensor.
        data (`str`, `os.PathLike`, `Sequence[str]` or `torch.Tensor`):
            Anything :func:`load_text` reads, or a tensor of token ids (passed through).
        load_kwargs:
            Passed to :func:`load_text` (``argument`` names the argument in error messages).

    Returns:
        `torch.Tensor`: a 1-D ``LongTensor``.
    """
    if isinstance(data, torch.Tensor):
        return data.reshape(-1).long()
    if tokenizer is None:
        raise ValueError("A tokenizer is needed to turn text into tokens: pass `tokenizer=`.")
    text = load_text(data, **load_kwargs)
    # No special tokens: the corpus is one stream cut into windows, as in the SparseGPT/Wanda protocol.
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def _check_length(num_tokens: int, seq_len: int, argument: str = "seq_len") -> None:
    if seq_len < 2:
        raise ValueError(f"`{argument}` must be at least 2 tokens, got {seq_len}.")
    if num_tokens < seq_len:
        raise ValueError(
            f"The data holds {num_tokens} tokens, fewer than one window of `{argument}`={seq_len}. "
            f"Use more text or a smaller `{argument}`."
        )


def calibration_window_starts(num_tokens: int, num_windows: int, seq_len: int, seed: int = 0) -> list[int]:
    """Where each of :func:`calibration_windows`' windows starts in a stream of ``num_tokens`` tokens.

    The starts are drawn uniformly (with replacement) by a generator seeded with ``seed``, so the same arguments
    always give the same windows; benchmarks use them to keep validation text disjoint from calibration.
    """
    _check_length(num_tokens, seq_len)
    if num_windows < 1:
        raise ValueError(f"`num_windows` (calibration samples) must be at least 1, got {num_windows}.")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, num_tokens - seq_len + 1, (num_windows,), generator=generator).tolist()


def calibration_windows(ids: torch.Tensor, num_windows: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``num_windows`` random windows of ``seq_len`` tokens of ``ids``, starting where
    :func:`calibration_window_starts` says."""
    ids = ids.reshape(-1)
    starts = calibration_window_starts(ids.numel(), num_windows, seq_len, seed)
    return torch.stack([ids[s : s + seq_len] for s in starts])


def evaluation_windows(
    ids: torch.Tensor, seq_len: int, stride: int | None = None, max_windows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows for perplexity and, for each, the labels to score (``-100`` where not scored).

    Without ``stride``: consecutive non-overlapping windows, every predicted token scored (the
    SparseGPT/Wanda protocol; a trailing partial window is dropped). With ``stride < seq_len``: a
    window starts every ``stride`` tokens and only the tokens not scored by an earlier window count,
    so each token is scored once with more left context.

    Args:
        ids (`torch.Tensor`):
            The token ids of the corpus (flattened).
        seq_len (`int`):
            Tokens per window, at least 2.
        stride (`int`, *optional*):
            Tokens between window starts; defaults to non-overlapping windows.
        max_windows (`int`, *optional*):
            Keep only the first windows; defaults to all.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: ``(windows, labels)``, both of shape ``(num_windows, seq_len)``.
    """
    ids = ids.reshape(-1)
    _check_length(ids.numel(), seq_len)
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"`max_windows` must be at least 1 (or None for all), got {max_windows}.")
    if stride is None or stride >= seq_len:
        count = ids.numel() // seq_len
        if max_windows is not None:
            count = min(count, max_windows)
        windows = ids[: count * seq_len].reshape(count, seq_len)
        return windows, windows.clone()
    if stride < 1:
        raise ValueError(f"`stride` must be a positive number of tokens, got {stride}.")
    windows, labels, scored_until = [], [], 0
    for start in range(0, ids.numel() - seq_len + 1, stride):
        window = ids[start : start + seq_len]
        label = window.clone()
        already = max(0, scored_until - start)
        label[: max(already, 1)] = -100  # the first token of a window is never predicted
        windows.append(window)
        labels.append(label)
        scored_until = start + seq_len
        if max_windows is not None and len(windows) >= max_windows:
            break
    return torch.stack(windows), torch.stack(labels)

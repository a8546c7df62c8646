# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``push_to_hub``: save a pruned model as ``save_pruned`` does and push the folder to the Hub in one commit."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import HfApi, get_token
from transformers.utils import logging

from .metadata import PRUNING_CONFIG_NAME, build_pruning_metadata, is_pruned, read_metadata_file
from .redaction import redact
from .save import CARD_NAME, check_repo_id, save_with_metadata


__all__ = ["PushToHubError", "check_push_target", "push_folder_to_hub", "push_to_hub"]

logger = logging.get_logger(__name__)

_LOGIN_HINT = (
    "Log in with `hf auth login` (or `huggingface_hub.login()` in Python), set the HF_TOKEN environment variable, "
    "or pass `token=`; create a token with write access at https://huggingface.co/settings/tokens."
)
# The command line has no token flag (a token typed there would land in the shell history).
_CLI_LOGIN_HINT = (
    "Log in with `hf auth login`, or set the HF_TOKEN environment variable; create a token with write access at "
    "https://huggingface.co/settings/tokens."
)


class PushToHubError(OSError):
    """Pushing to the Hub failed (no token, refused, network); the message says why and never holds the token."""


def _resolve_token(token, hint: str = _LOGIN_HINT) -> str:
    if token is False:
        raise ValueError("`token=False` disables authentication, but pushing needs a token with write access.")
    if token is not None and not isinstance(token, str):
        raise TypeError(f"`token` must be a string or None, got {type(token).__name__}.")
    resolved = token if isinstance(token, str) and token else get_token()
    if not resolved:
        raise PushToHubError(f"No Hugging Face token found, and pushing needs one. {hint}")
    return resolved


def check_push_target(repo_id, token: str | None = None, *, name: str = "repo_id") -> str:
    """Check, before any work, that a push to ``repo_id`` can start: a valid repo id and a token (nothing is sent).

    Args:
        repo_id (`str`):
            The Hub repo to push to.
        token (`str`, *optional*):
            The token; defaults to ``HF_TOKEN`` or the ``hf auth login`` one.
        name (`str`, *optional*, defaults to `"repo_id"`):
            How the messages spell the argument (``--push_to_hub`` on the command line, which also changes the
            login hint).

    Returns:
        `str`: the token to push with.
    """
    try:
        check_repo_id(repo_id)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err).replace("`repo_id`", f"`{name}`", 1)) from None
    hint = _CLI_LOGIN_HINT if name.startswith("--") else _LOGIN_HINT
    try:
        return _resolve_token(token, hint)
    except PushToHubError as err:
        raise PushToHubError(f"`{name}`={repo_id!r}: {err}") from None


def _push_hint(err: BaseException) -> str:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return "Check that your token is valid and has write access to this namespace. " + _LOGIN_HINT
    if status == 404:
        return "Check the repo id and its namespace (your user name or an organization you belong to)."
    if isinstance(err, ConnectionError) or "offline" in str(err).lower():
        return "Check the network, HF_ENDPOINT, and that HF_HUB_OFFLINE is not set."
    return "Retry later; if it keeps failing, push the saved folder with `hf upload`."


# Hidden entries (e.g. an editor's swap file) are not part of a saved model: never uploaded.
_IGNORE_PATTERNS = [".*", "*/.*"]


def _folder_files(folder: Path) -> list[str]:
    """The files ``upload_folder`` commits from ``folder`` (hidden entries left out), relative, sorted."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _commit_message(meta: Mapping) -> str:
    sparsity = meta.get("sparsity")  # measured
    return (
        f"Upload {meta.get('method') or 'pruned'} model"
        + (f" ({sparsity:.0%} sparse)" if isinstance(sparsity, (int, float)) else "")
        + " with hf_gradprobe"
    )


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
):
    """Push a folder written by ``save_pruned`` to ``repo_id`` in one commit; the folder is only read.

    Creates the repo and the ``revision`` branch if missing, then commits the folder with
    ``HfApi.upload_folder`` (hidden files left out).

    Args:
        folder (`str` or `os.PathLike`):
            A folder written by ``save_pruned``.
        repo_id (`str`):
            The Hub repo.
        private (`bool`, *optional*):
            Visibility of a repo this creates; defaults to the Hub's.
        revision (`str`, *optional*):
            The branch to commit to; defaults to ``main``.
        commit_message (`str`, *optional*):
            Defaults to one naming the method and the measured sparsity.
        commit_description (`str`, *optional*):
            The commit's description.
        token (`str`, *optional*):
            The token; defaults to ``HF_TOKEN`` or the ``hf auth login`` one.
        create_pr (`bool`, *optional*, defaults to `False`):
            Open a pull request instead of committing to the branch.

    Returns:
        `huggingface_hub.CommitInfo`: the commit. Any failure raises :class:`PushToHubError`.
    """
    check_repo_id(repo_id)
    folder = Path(folder).expanduser()
    missing = [name for name in ("config.json", CARD_NAME, PRUNING_CONFIG_NAME) if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise ValueError(
            f"`folder`={os.fspath(folder)!r} is not a folder written by `save_pruned`"
            + (f" (missing {', '.join(missing)})" if folder.is_dir() else " (no such folder)")
            + ". Write it with `hf_gradprobe.save_pruned(model, folder)` first."
        )
    token = _resolve_token(token)
    if commit_message is None:
        commit_message = _commit_message(read_metadata_file(folder / PRUNING_CONFIG_NAME))
    files = _folder_files(folder)
    api = HfApi(token=token)
    step = "creating the repo"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main" and not revision.startswith("refs/"):
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        step = f"committing {len(files)} files"
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
            ignore_patterns=_IGNORE_PATTERNS,
        )
    except Exception as err:  # noqa: BLE001 - every failure is reported the same way, token removed
        message = redact(f"{type(err).__name__}: {err}", [token])
        raise PushToHubError(
            f"Pushing {os.fspath(folder)!r} to the Hub repo {repo_id!r} failed while {step}: {message}. "
            f"The local folder was not changed. {_push_hint(err)}"
        ) from (None if token in str(err) else err)
    logger.info("Pushed %d files to %s", len(files), getattr(info, "pr_url", None) or info.commit_url)
    return info


def push_to_hub(
    model,
    repo_id: str,
    tokenizer=None,
    metadata: dict | None = None,
    command: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    *,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    card_data: Mapping | None = None,
    commit_description: str | None = None,
):
    """Save ``model`` as ``save_pruned`` does and push the folder to ``repo_id`` in one commit.

    The repo id and the token are checked before anything is written. A model that is not pruned (see
    :func:`~hf_gradprobe.sharing.metadata.is_pruned`) is pushed with a warning.

    Args:
        model (`PreTrainedModel`):
            The pruned model.
        repo_id (`str`):
            The Hub repo.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Saved and pushed beside the model.
        metadata (`dict`, *optional*):
            As in ``save_pruned``.
        command (`str`, *optional*):
            As in ``save_pruned``.
        private (`bool`, *optional*):
            Visibility of a repo this creates; defaults to the Hub's.
        revision (`str`, *optional*):
            The branch to commit to.
        commit_message (`str`, *optional*):
            Defaults to one naming the method and the measured sparsity.
        token (`str`, *optional*):
            The token; defaults to ``HF_TOKEN`` or the ``hf auth login`` one.
        create_pr (`bool`, *optional*, defaults to `False`):
            Open a pull request instead of committing.
        output_dir (`str` or `os.PathLike`, *optional*):
            Keep the saved folder there; defaults to a temporary folder.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace a saved model at ``output_dir``.
        card_data (`Mapping`, *optional*):
            Extra ``ModelCardData`` fields.
        commit_description (`str`, *optional*):
            The commit's description.

    Returns:
        `huggingface_hub.CommitInfo`: the commit.
    """
    check_repo_id(repo_id)
    token = _resolve_token(token)
    meta = build_pruning_metadata(model, metadata, command)
    if not is_pruned(meta):
        sparsity = meta.get("sparsity") or 0
        zeros = f"only {100 * sparsity:.2f}% zeros" if sparsity > 0 else "no zeros"
        warnings.warn(
            f"Pushing to {repo_id!r} a model that is not pruned (no pruning recorded, {zeros} in its prunable "
            "weights). Prune it first (e.g. `hf_gradprobe.prune_pretrained`) if that was not intended.",
            UserWarning,
            stacklevel=2,
        )
    push_kwargs = {
        "private": private,
        "revision": revision,
        "commit_message": commit_message,
        "token": token,
        "create_pr": create_pr,
        "commit_description": commit_description,
    }
    if output_dir is not None:
        folder = save_with_metadata(
            model, output_dir, tokenizer, meta, overwrite=overwrite, repo_id=repo_id, card_data=card_data
        )
        return push_folder_to_hub(folder, repo_id, **push_kwargs)
    with tempfile.TemporaryDirectory(prefix="hf_gradprobe-push-") as tmp:
        folder = save_with_metadata(
            model, Path(tmp) / repo_id.split("/")[-1], tokenizer, meta, repo_id=repo_id, card_data=card_data
        )
        return push_folder_to_hub(folder, repo_id, **push_kwargs)

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Save a pruned model as a shareable folder (weights, tokenizer, card, plot, metadata) and push it to the Hub.

The folder that :func:`save_pruned` writes is exactly what :func:`push_to_hub` commits: stock safetensors
and ``config.json`` (no ``hf_gradprobe`` needed to load them), plus ``pruning_config.json``, the README.md
model card and the per-layer sparsity plot.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi, get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from .card import PLOT_FILE, build_model_card, is_hub_id, plot_layer_sparsity, redact
from .layers import PrunableLayer
from .masking import parse_nm_pattern
from .sparsity import measure_sparsity


logger = logging.get_logger(__name__)

PRUNING_CONFIG_NAME = "pruning_config.json"
CARD_NAME = "README.md"
# Bumped when the meaning of a pruning_config.json key changes; readers warn on newer files.
METADATA_VERSION = 1
_MEASURED_KEYS = (
    "sparsity", "overall_sparsity", "prunable_parameters", "prunable_zeros", "total_parameters", "total_zeros",
)
_LOGIN_HINT = (
    "Log in with `hf auth login` (or `huggingface_hub.login()` in Python), set the HF_TOKEN environment variable, "
    "or pass `token=`; create a token with write access at https://huggingface.co/settings/tokens."
)


class PushToHubError(OSError):
    """Pushing to the Hub failed (no token, refused, network); the message says why and never holds the token."""


# --------------------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------------------


def _jsonable(obj):
    """A plain-JSON deep copy: the caller's dict is never mutated and json.dump never fails."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def _metadata_from_model(model) -> dict | None:
    report = getattr(model, "pruning_report", None)
    if report is None:
        return None
    if isinstance(report, Mapping):
        return dict(report)
    to_dict = getattr(report, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else None


def _base_model_of(model) -> str | None:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return name if is_hub_id(name) else None


def _measure(model, metadata: Mapping):
    """Measure the weights about to be saved, over the layers the metadata names (else the default scope)."""
    pattern = metadata.get("pattern")
    try:
        pattern = pattern if parse_nm_pattern(pattern) else None
    except ValueError:
        pattern = None
    layers = None
    names = [entry["name"] for entry in metadata.get("layers") or [] if isinstance(entry, Mapping) and "name" in entry]
    if names:
        layers = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                logger.warning("Layer %r from the pruning metadata is not in the model; it is left out.", name)
                continue
            if isinstance(getattr(module, "weight", None), torch.Tensor):
                layers.append(PrunableLayer(name=name, module=module, block_index=None))
        layers = layers or None  # none of the names exist here: measure the default scope instead
    try:
        return measure_sparsity(model, layers=layers, pattern=pattern)
    except ValueError as err:
        logger.warning("Could not measure the sparsity of %s (%s); the card will have no per-layer table.",
                       type(model).__name__, err)
        return None


def build_pruning_metadata(model, metadata: Mapping | None = None, command: str | None = None) -> dict:
    """The dict saved as ``pruning_config.json``.

    Starts from ``metadata``, else ``model.pruning_report`` (set by ``prune_pretrained``), else nothing; then
    replaces the sparsity figures with a measurement of ``model``'s weights, so the saved numbers describe the
    saved weights even if the model changed after pruning. Adds ``base_model``, ``architecture``, versions and
    ``command`` (token values redacted) when missing.
    """
    from . import __version__

    source = metadata if metadata is not None else _metadata_from_model(model)
    if source is not None and not isinstance(source, Mapping):
        raise TypeError(f"`metadata` must be a dict or None, got {type(source).__name__}.")
    meta = _jsonable(source or {})

    report = _measure(model, meta)
    if report is not None:
        measured = _jsonable(report.to_dict())
        claimed = meta.get("sparsity")
        if isinstance(claimed, (int, float)) and abs(claimed - measured["sparsity"]) > 1e-4:
            logger.warning(
                "The pruning metadata reports %.4f sparsity but the weights now hold %.4f zeros over the same "
                "layers (changed after pruning?); saving the measured value.", claimed, measured["sparsity"],
            )
        previous = {entry.get("name"): entry for entry in meta.get("layers") or [] if isinstance(entry, Mapping)}
        # Keep what the pruner recorded per layer (candidates, restored...), overwrite what we measured.
        meta["layers"] = [{**previous.get(entry["name"], {}), **entry} for entry in measured["layers"]]
        for key in _MEASURED_KEYS:
            meta[key] = measured[key]
        if measured.get("pattern"):
            meta["nm_compliant"] = measured["nm_compliant"]

    config = getattr(model, "config", None)
    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    # A Hub id beats a local path: a model loaded from a local copy (e.g. the packaged GGUF) may record the
    # folder it came from while its config names the Hub repo the weights are from.
    if not is_hub_id(meta.get("base_model")) and _base_model_of(model):
        meta["base_model"] = _base_model_of(model)
    meta.setdefault("base_model", None)
    meta.setdefault("architecture", architectures[0])
    meta.setdefault("hf_gradprobe_version", __version__)
    meta["framework_versions"] = _framework_versions()
    meta["metadata_version"] = METADATA_VERSION
    if command is not None:
        meta["command"] = command
    if meta.get("command"):
        meta["command"] = redact(str(meta["command"]))
    return meta


def _framework_versions() -> dict:
    import huggingface_hub
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "huggingface_hub": huggingface_hub.__version__}


# --------------------------------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------------------------------


def _looks_like_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / PRUNING_CONFIG_NAME).is_file()


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"`output_dir`={str(output_dir)!r} is a file; pass a folder path.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"`output_dir`={str(output_dir)!r} exists and is not empty. Pass `overwrite=True` to replace it, "
                "or choose another folder."
            )
        if not _looks_like_model_folder(output_dir):
            # overwrite replaces the whole folder: refuse to wipe something that is not a saved model.
            raise FileExistsError(
                f"Refusing to overwrite `output_dir`={str(output_dir)!r}: it is not empty and holds no config.json "
                f"or {PRUNING_CONFIG_NAME}, so it does not look like a saved model. Choose another folder."
            )


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
    if plot and meta.get("layers"):
        try:
            plot_layer_sparsity(meta["layers"], folder / PLOT_FILE, target=meta.get("target_sparsity"),
                                title=f"Sparsity per prunable layer: {model_name}")
            plot_file = PLOT_FILE
        except ImportError as err:
            logger.warning("%s The card will have no plot.", err)

    with open(folder / PRUNING_CONFIG_NAME, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, allow_nan=False)
        f.write("\n")
    card = build_model_card(meta, repo_id=repo_id, model_name=model_name, plot_file=plot_file, card_data=card_data)
    card.save(folder / CARD_NAME)


def _move_into_place(tmp: Path, output_dir: Path) -> None:
    if output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()
    if not output_dir.exists():
        os.rename(tmp, output_dir)
        return
    # Swap with the old folder so that output_dir always holds one complete save, never a mix.
    backup = output_dir.parent / f".{output_dir.name}.replaced-{secrets.token_hex(4)}"
    os.rename(output_dir, backup)
    try:
        os.rename(tmp, output_dir)
    except BaseException:
        os.rename(backup, output_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _save_with_metadata(model, output_dir, tokenizer, meta, overwrite, repo_id, card_data, plot, save_kwargs) -> Path:
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"`model` must be a transformers PreTrainedModel, got {type(model).__name__}.")
    output_dir = Path(output_dir).expanduser().resolve()
    _check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    model_name = repo_id.split("/")[-1] if repo_id else output_dir.name
    # A hidden sibling on the same filesystem: the final rename is atomic, and a crash leaves only this
    # ".incomplete" folder behind, never a half-written output_dir.
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.incomplete-", dir=output_dir.parent))
    try:
        _write_folder(model, tmp, tokenizer, meta, repo_id, model_name, card_data, plot, save_kwargs)
        _check_output_dir(output_dir, overwrite)  # again: someone may have written there meanwhile
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
    zeros intact), the tokenizer when given, ``pruning_config.json`` (see :func:`build_pruning_metadata`), the
    README.md model card and ``sparsity_per_layer.png``. It is written to a hidden sibling folder first and
    renamed into place only once complete. ``model`` is not modified.

    Args:
        model: the pruned ``PreTrainedModel``.
        output_dir: the folder to create. If it exists and is not empty, ``overwrite=True`` is needed, and it
            must hold a saved model (``config.json`` or ``pruning_config.json``).
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
        _check_repo_id(repo_id)
    meta = build_pruning_metadata(model, metadata, command)
    return _save_with_metadata(model, output_dir, tokenizer, meta, overwrite, repo_id, card_data, plot, save_kwargs)


# --------------------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------------------


def _read_metadata_file(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the model with `save_pruned`.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}.")  # noqa: TRY004 - bad file content
    version = meta.get("metadata_version")
    if isinstance(version, int) and version > METADATA_VERSION:
        logger.warning("%s was written by a newer hf_gradprobe (metadata version %d > %d); some fields may be "
                       "misread. Upgrade with `pip install -U hf_gradprobe`.", path, version, METADATA_VERSION)
    return meta


def load_pruning_metadata(
    path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    missing_ok: bool = False,
) -> dict | None:
    """Read the ``pruning_config.json`` of a folder written by :func:`save_pruned`, or of a Hub repo.

    ``path`` is a local folder, the JSON file itself, or a Hub repo id. A model without the file raises
    ``FileNotFoundError`` (or returns ``None`` with ``missing_ok=True``); a path that is not a model raises
    ``ValueError``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a folder, a {PRUNING_CONFIG_NAME} file or a Hub id, got {type(path).__name__}.")
    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix != ".json":
            raise ValueError(f"`path`={os.fspath(path)!r} is a file but not a JSON file; pass the model folder.")
        return _read_metadata_file(local)
    if local.is_dir():
        file = local / PRUNING_CONFIG_NAME
        if file.is_file():
            return _read_metadata_file(file)
        if not (local / "config.json").is_file():
            raise ValueError(
                f"`path`={os.fspath(path)!r} is a folder without config.json or {PRUNING_CONFIG_NAME}: it is not a "
                "saved model. Pass the folder written by `save_pruned` (or `save_pretrained`)."
            )
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"{os.fspath(path)!r} holds a model but no {PRUNING_CONFIG_NAME}: it was not saved with "
            "`hf_gradprobe.save_pruned`. Measure its zeros with `hf_gradprobe.sparsity_report(path)`."
        )
    name = os.fspath(path)
    if not is_hub_id(name):
        raise FileNotFoundError(f"`path`={name!r} is neither an existing local folder nor a valid Hub repo id.")
    try:
        file = hf_hub_download(name, PRUNING_CONFIG_NAME, revision=revision, token=token)
    except EntryNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"The Hub repo {name!r} has no {PRUNING_CONFIG_NAME}: it was not pushed with hf_gradprobe. Measure its "
            "zeros with `hf_gradprobe.sparsity_report(repo_id)`."
        ) from None
    except (OSError, HFValidationError) as err:
        raise OSError(
            f"No local folder {name!r}, and reading {PRUNING_CONFIG_NAME} from the Hub repo {name!r} failed: "
            f"{redact(str(err), [token if isinstance(token, str) else None])}"
        ) from None
    return _read_metadata_file(Path(file))


# --------------------------------------------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------------------------------------------


def _check_repo_id(repo_id) -> None:
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` must be a string like 'username/model-name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"`repo_id`={repo_id!r} is not a valid Hub repo id: {err} Use 'username/model-name' or "
            "'organization/model-name' (letters, digits, '-', '_', '.'; at most 96 characters)."
        ) from None


def _resolve_token(token) -> str:
    if token is False:
        raise ValueError("`token=False` disables authentication, but pushing needs a token with write access.")
    if token is not None and not isinstance(token, str):
        raise TypeError(f"`token` must be a string or None, got {type(token).__name__}.")
    resolved = token if isinstance(token, str) and token else get_token()
    if not resolved:
        raise PushToHubError(f"No Hugging Face token found, and pushing needs one. {_LOGIN_HINT}")
    return resolved


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


def _folder_operations(folder: Path) -> list[CommitOperationAdd]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    return [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]


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
    """Push a folder written by :func:`save_pruned` to ``repo_id`` in one commit; the folder is only read.

    Creates the repo (``private`` as asked) and the ``revision`` branch if missing. Returns the
    ``huggingface_hub.CommitInfo``; raises :class:`PushToHubError` on failure.
    """
    _check_repo_id(repo_id)
    folder = Path(folder).expanduser()
    missing = [name for name in ("config.json", CARD_NAME, PRUNING_CONFIG_NAME) if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise ValueError(
            f"`folder`={os.fspath(folder)!r} is not a folder written by `save_pruned`"
            + (f" (missing {', '.join(missing)})" if folder.is_dir() else " (no such folder)")
            + ". Write it with `hf_gradprobe.save_pruned(model, folder)` first."
        )
    token = _resolve_token(token)
    meta = _read_metadata_file(folder / PRUNING_CONFIG_NAME)
    if commit_message is None:
        sparsity = meta.get("sparsity")
        commit_message = f"Upload {meta.get('method') or 'pruned'} model" + (
            f" ({sparsity:.0%} sparse)" if isinstance(sparsity, (int, float)) else "") + " with hf_gradprobe"
    operations = _folder_operations(folder)
    api = HfApi(token=token)
    step = "creating the repo"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main" and not revision.startswith("refs/"):
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        step = f"committing {len(operations)} files"
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message, commit_description=commit_description,
            revision=revision, create_pr=create_pr, repo_type="model",
        )
    except Exception as err:  # noqa: BLE001 - every failure is reported the same way, token removed
        message = redact(f"{type(err).__name__}: {err}", [token])
        raise PushToHubError(
            f"Pushing {os.fspath(folder)!r} to the Hub repo {repo_id!r} failed while {step}: {message}. "
            f"The local folder was not changed. {_push_hint(err)}"
        ) from (None if token in str(err) else err)
    logger.info("Pushed %d files to %s", len(operations), getattr(info, "pr_url", None) or info.commit_url)
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
    """Save ``model`` as :func:`save_pruned` does and push the folder to ``repo_id`` in one commit.

    The repo id and the token (argument, ``HF_TOKEN`` or ``hf auth login``) are checked before anything is
    written. A model without zeros in its prunable weights is pushed with a warning. With ``output_dir`` the
    folder is kept there; otherwise a temporary folder is used. Returns the ``CommitInfo``.
    """
    _check_repo_id(repo_id)
    token = _resolve_token(token)
    meta = build_pruning_metadata(model, metadata, command)
    if not meta.get("prunable_zeros") and not (meta.get("sparsity") or 0) > 0:
        warnings.warn(
            f"Pushing to {repo_id!r} a model with no zeros in its prunable weights: it is not pruned. Prune it "
            "first (e.g. `hf_gradprobe.prune_pretrained`) if that was not intended.",
            UserWarning,
            stacklevel=2,
        )
    push_kwargs = {"private": private, "revision": revision, "commit_message": commit_message, "token": token,
                   "create_pr": create_pr, "commit_description": commit_description}
    if output_dir is not None:
        folder = _save_with_metadata(model, output_dir, tokenizer, meta, overwrite, repo_id, card_data, True, {})
        return push_folder_to_hub(folder, repo_id, **push_kwargs)
    with tempfile.TemporaryDirectory(prefix="hf_gradprobe-push-") as tmp:
        folder = _save_with_metadata(model, Path(tmp) / repo_id.split("/")[-1], tokenizer, meta, False, repo_id,
                                     card_data, True, {})
        return push_folder_to_hub(folder, repo_id, **push_kwargs)

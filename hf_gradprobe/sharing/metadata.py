# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""``pruning_config.json``: the metadata saved with a pruned model, its one owner.

This module names the file (:data:`PRUNING_CONFIG_NAME`), builds its content (:func:`build_pruning_metadata`),
writes it (:func:`write_metadata_file`), reads it (:func:`read_metadata_file`, :func:`load_pruning_metadata`) and
says whether it describes a pruned model (:func:`is_pruned`). Layout: ``method``, ``config`` (the settings, e.g.
``config["target_sparsity"]``, held only there), the measured ``sparsity`` and per-layer ``layers``,
``calibration``, ``base_model``, versions and costs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from transformers.utils import logging

from ..core.layers import PrunableLayer
from ..core.masking import parse_nm_pattern
from ..core.sparsity import measure_sparsity
from ..models import base_model_license, is_hub_id
from .redaction import redact, redact_secrets


__all__ = [
    "METADATA_VERSION",
    "PRUNING_CONFIG_NAME",
    "TOP_LEVEL_SETTINGS",
    "UNPRUNED_SPARSITY",
    "build_pruning_metadata",
    "config_value",
    "is_pruned",
    "load_pruning_metadata",
    "metadata_from_model",
    "nm_pattern",
    "read_metadata_file",
    "recorded_settings",
    "write_metadata_file",
]

logger = logging.get_logger(__name__)

PRUNING_CONFIG_NAME = "pruning_config.json"
# Bumped when the meaning of a pruning_config.json key changes; readers warn on newer files.
METADATA_VERSION = 1
_MEASURED_KEYS = (
    "sparsity",
    "overall_sparsity",
    "prunable_parameters",
    "prunable_zeros",
    "total_parameters",
    "total_zeros",
)
# The settings that metadata written without a "config" (e.g. by training code) may hold at its top level, in
# the order of the `GradProbeConfig` fields (a test keeps them a subset of those fields, in that order).
TOP_LEVEL_SETTINGS = ("target_sparsity", "strategy", "comparison_group", "pattern", "probe", "calibration_seed")
# Below this fraction of zeros, and with no pruning method recorded, a model is not pruned (a dense model may
# hold a few zeros).
UNPRUNED_SPARSITY = 0.01


def config_value(metadata: Mapping, key: str):
    """A setting the metadata records.

    Args:
        metadata (`Mapping`):
            The content of ``pruning_config.json``.
        key (`str`):
            The setting, e.g. ``"target_sparsity"``.

    Returns:
        The value in ``metadata["config"]``, else the one at the top level (metadata written without a config),
        else ``None``.
    """
    config = metadata.get("config")
    if isinstance(config, Mapping) and config.get(key) is not None:
        return config[key]
    return metadata.get(key)


def recorded_settings(metadata: Mapping) -> dict:
    """The pruning settings the metadata records, as keyword arguments of ``prune_pretrained``.

    Args:
        metadata (`Mapping`):
            The content of ``pruning_config.json``.

    Returns:
        `dict`: the entries of ``metadata["config"]`` that are not ``None``, in their recorded order; for metadata
        without a config, those of :data:`TOP_LEVEL_SETTINGS` found at its top level.
    """
    config = metadata.get("config")
    if isinstance(config, Mapping) and config:
        return {str(key): value for key, value in config.items() if value is not None}
    return {key: metadata[key] for key in TOP_LEVEL_SETTINGS if metadata.get(key) is not None}


def is_pruned(metadata: Mapping) -> bool:
    """Whether the metadata describes a pruned model, the one rule the card, ``save_pruned`` and ``push_to_hub``
    apply.

    A model is pruned when a pruning ``method`` is recorded, or when at least :data:`UNPRUNED_SPARSITY` (1%) of
    its prunable weights are zero. Fewer zeros and no method: a dense model (its card says so, is not tagged
    ``pruned``, and saving or pushing it warns).

    Args:
        metadata (`Mapping`):
            The content of ``pruning_config.json`` (see :func:`build_pruning_metadata`).

    Returns:
        `bool`: whether the model is pruned.
    """
    sparsity = metadata.get("sparsity")
    return bool(metadata.get("method")) or (isinstance(sparsity, (int, float)) and sparsity >= UNPRUNED_SPARSITY)


def nm_pattern(metadata: Mapping) -> str | None:
    """The semi-structured pattern the metadata records.

    Args:
        metadata (`Mapping`):
            The content of ``pruning_config.json``.

    Returns:
        `str` or `None`: the pattern as ``"N:M"``, or ``None`` (unstructured, missing or unreadable).
    """
    pattern = config_value(metadata, "pattern")
    try:
        nm = parse_nm_pattern(pattern)
    except ValueError:
        return None
    return f"{nm[0]}:{nm[1]}" if nm else None


def _jsonable(obj, where: str = "metadata"):
    """A plain-JSON deep copy: the caller's dict is never mutated and json.dump never fails.

    A tensor or array of more than one element is refused (``TypeError`` naming ``where``, its key path): a
    silently stringified tensor would be neither data nor readable.
    """
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj), where)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    shape = getattr(obj, "shape", None)
    if isinstance(shape, tuple) and callable(getattr(obj, "tolist", None)):  # tensors, numpy arrays and scalars
        if math.prod(shape) != 1:
            raise TypeError(
                f"`{where}` is an array of shape {tuple(shape)} ({type(obj).__module__}.{type(obj).__name__}): "
                f"{PRUNING_CONFIG_NAME} holds plain JSON values. Store a number (`.item()`), a list (`.tolist()`) "
                "or a summary instead, or leave it out."
            )
        return _jsonable(obj.item(), where)
    if hasattr(obj, "item") and callable(obj.item):  # other scalar wrappers
        try:
            return _jsonable(obj.item(), where)
        except (TypeError, ValueError):
            pass
    return str(obj)


def metadata_from_model(model) -> dict | None:
    """The pruning report a model carries.

    Args:
        model (`torch.nn.Module`):
            A model, pruned by ``prune_pretrained`` or not.

    Returns:
        `dict` or `None`: ``model.pruning_report`` (set by ``prune_pretrained``) as a dict, or ``None`` without one.
    """
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
        return measure_sparsity(model, layers=layers, pattern=nm_pattern(metadata))
    except ValueError as err:
        logger.warning(
            "Could not measure the sparsity of %s (%s); the card will have no per-layer table.",
            type(model).__name__,
            err,
        )
        return None


def build_pruning_metadata(model, metadata: Mapping | None = None, command: str | None = None) -> dict:
    """The dict saved as ``pruning_config.json``.

    Starts from ``metadata``, else ``model.pruning_report`` (set by ``prune_pretrained``), else nothing; then
    replaces the measured figures (``sparsity``, ``layers``...) with a measurement of ``model``'s weights, so
    they describe the saved weights even if the model changed after pruning. Adds ``base_model``,
    ``architecture``, ``base_model_license`` (when found offline, see
    :func:`hf_gradprobe.models.base_model_license`), versions and ``command`` when missing. Secrets are redacted
    everywhere (see ``redaction``).

    Args:
        model (`torch.nn.Module`):
            The model about to be saved; its weights are measured.
        metadata (`Mapping`, *optional*):
            What to start from; defaults to ``model.pruning_report``.
        command (`str`, *optional*):
            The command or code that produced the model, recorded as ``command``.

    Returns:
        `dict`: plain JSON values only (a deep copy; ``metadata`` is not modified).
    """
    from .. import __version__

    source = metadata if metadata is not None else metadata_from_model(model)
    if source is not None and not isinstance(source, Mapping):
        raise TypeError(f"`metadata` must be a dict or None, got {type(source).__name__}.")
    meta = _jsonable(source or {})

    report = _measure(model, meta)
    if report is not None:
        measured = _jsonable(report.to_dict(), "the measured sparsity")
        claimed = meta.get("sparsity")
        if isinstance(claimed, (int, float)) and abs(claimed - measured["sparsity"]) > 1e-4:
            logger.warning(
                "The pruning metadata reports %.4f sparsity but the weights now hold %.4f zeros over the same "
                "layers (changed after pruning?); saving the measured value.",
                claimed,
                measured["sparsity"],
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
    if not meta.get("base_model_license"):
        license_ = base_model_license(model, meta["base_model"])
        if license_:
            meta["base_model_license"] = license_  # the card's `license`, unless card_data gives one
    meta.setdefault("architecture", architectures[0])
    meta.setdefault("hf_gradprobe_version", __version__)
    meta["framework_versions"] = _framework_versions()
    meta["metadata_version"] = METADATA_VERSION
    if command is not None:
        meta["command"] = command
    if meta.get("command"):
        meta["command"] = str(meta["command"])
    # Secrets never reach the file or the card: values of token/key/secret/password names, hf_ tokens anywhere.
    return redact_secrets(meta)


def _framework_versions() -> dict:
    import huggingface_hub
    import transformers

    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "huggingface_hub": huggingface_hub.__version__,
    }


def write_metadata_file(folder: str | os.PathLike, metadata: Mapping, *, sort_keys: bool = False) -> Path:
    """Write ``metadata`` as the ``pruning_config.json`` of ``folder``, as strict JSON.

    The text is built before the file is opened, so a value JSON cannot hold (``NaN``, infinity, an object) raises
    and leaves no half-written file. It is indented by 2 and ends with a newline.

    Args:
        folder (`str` or `os.PathLike`):
            An existing folder.
        metadata (`Mapping`):
            Plain JSON values (see :func:`build_pruning_metadata`).
        sort_keys (`bool`, *optional*, defaults to `False`):
            Write the keys sorted; by default in their order in ``metadata``.

    Returns:
        `Path`: the file written.
    """
    text = json.dumps(metadata, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    path = Path(folder) / PRUNING_CONFIG_NAME
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def read_metadata_file(path: str | os.PathLike) -> dict:
    """Read one ``pruning_config.json``.

    Args:
        path (`str` or `os.PathLike`):
            The file.

    Returns:
        `dict`: the JSON object it holds. A newer hf_gradprobe's file (a higher ``metadata_version``) is read with a
        warning; a file that is not valid JSON or holds no object raises a ``ValueError``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the model with `save_pruned`.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}.")
    version = meta.get("metadata_version")
    if isinstance(version, int) and version > METADATA_VERSION:
        logger.warning(
            "%s was written by a newer hf_gradprobe (metadata version %d > %d); some fields may be "
            "misread. Upgrade with `pip install -U hf_gradprobe`.",
            path,
            version,
            METADATA_VERSION,
        )
    return meta


def load_pruning_metadata(
    path: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    missing_ok: bool = False,
) -> dict | None:
    """Read the ``pruning_config.json`` of a folder written by ``save_pruned``, or of a Hub repo.

    Args:
        path (`str` or `os.PathLike`):
            A local folder, a JSON file (read as it is), or a Hub repo id.
        revision (`str`, *optional*):
            The Hub revision (branch, tag or commit) of a repo id.
        token (`str` or `bool`, *optional*):
            The Hub token of a repo id; defaults to the saved login.
        missing_ok (`bool`, *optional*, defaults to `False`):
            Return ``None`` for a model without the file instead of raising ``FileNotFoundError``.

    Returns:
        `dict` or `None`: the metadata. A path that is not a model raises a ``ValueError``; a Hub repo that cannot
        be reached raises an ``OSError``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a folder, a {PRUNING_CONFIG_NAME} file or a Hub id, got {type(path).__name__}."
        )
    local = Path(path).expanduser()
    if local.is_file():
        if local.suffix != ".json":
            raise ValueError(f"`path`={os.fspath(path)!r} is a file but not a JSON file; pass the model folder.")
        return read_metadata_file(local)
    if local.is_dir():
        file = local / PRUNING_CONFIG_NAME
        if file.is_file():
            return read_metadata_file(file)
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
    except LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE, no network) and not cached: that says nothing about the repo's content.
        raise OSError(
            f"No local folder {name!r}, and the Hub could not be reached to read {PRUNING_CONFIG_NAME} from the repo "
            f"{name!r} (offline, and no cached copy). Connect (unset HF_HUB_OFFLINE) or pass a local folder."
        ) from None
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
    return read_metadata_file(Path(file))

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Sparsity of any model: in memory, in a saved folder, or on the Hub, pruned by hf_gradprobe or not."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging

from ..core.layers import find_prunable_layers
from ..core.masking import parse_nm_pattern
from ..core.sparsity import LayerSparsity, SparsityReport, layer_sparsity, measure_sparsity
from ..models import DEFAULT_MODEL, check_safetensors_file, is_hub_id, load_model
from .metadata import PRUNING_CONFIG_NAME, config_value, load_pruning_metadata, metadata_from_model, nm_pattern
from .redaction import redact


__all__ = ["sparsity_report"]

logger = logging.get_logger(__name__)

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_HUB_PATTERNS = ["*.json", "*.safetensors"]


def _resolve_pattern(pattern: str | None, metadata: dict | None) -> str | None:
    """``None`` checks the N:M pattern the model was pruned with, if any; ``'unstructured'`` checks none."""
    if pattern is not None:
        return pattern if parse_nm_pattern(pattern) else None
    return nm_pattern(metadata or {})


def _pruning_summary(metadata: dict | None) -> dict:
    if not metadata:
        return {}
    keys = ("method", "target_sparsity", "pattern", "base_model", "hf_gradprobe_version")
    values = {key: config_value(metadata, key) for key in keys}
    return {"pruning": {key: value for key, value in values.items() if value is not None}}


def _checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of ``folder`` (those its index lists, if it has one), each checked readable."""
    index = folder / _SAFETENSORS_INDEX
    if index.is_file():
        shown = os.fspath(index)
        fix = "save the model again, or download it again"
        try:
            with open(index, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"`model_or_id`: {shown!r} is not a valid JSON index ({reason}); {fix}.") from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(
                f"`model_or_id`: {shown!r} has no `weight_map` (a mapping of weight names to safetensors files); "
                f"{fix}."
            )
        names = sorted(set(weight_map.values()))
        for name in names:
            # Compared without resolving links: a Hub snapshot's files are links into its blob store.
            if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir:
                raise ValueError(f"`model_or_id`: {shown!r} lists {name!r}, outside its folder; {fix}.")
        files = [folder / name for name in names]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(
                    f"`model_or_id`: {shown!r} lists {os.fspath(file.relative_to(folder))!r}, which is not in the "
                    f"folder (an incomplete copy or download?); {fix}."
                )
    else:
        files = sorted(folder.glob("*.safetensors"))
    for file in files:
        check_safetensors_file(file)  # only the header: a damaged file is named before any tensor is read
    return files


def _skeleton(folder: Path, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    # On the meta device: module names, shapes and tied weights, with no memory for the values.
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError:
            return AutoModel.from_config(config, trust_remote_code=trust_remote_code)


def _report_from_checkpoint(folder: Path, pattern, trust_remote_code, targets, ignore) -> SparsityReport | None:
    """Stream the safetensors of ``folder`` one tensor at a time; ``None`` when its keys do not match the model."""
    from safetensors import safe_open

    files = _checkpoint_files(folder)
    if not files:
        return None
    skeleton = _skeleton(folder, trust_remote_code)
    layers = find_prunable_layers(skeleton, targets=targets, ignore=ignore)
    key_file: dict[str, Path] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            key_file.update(dict.fromkeys(handle.keys(), file))
    params = [name for name, _ in skeleton.named_parameters()]  # tied weights once, as in measure_sparsity
    # Checkpoints of a base model lack the task model's prefix (e.g. "model."): try both spellings.
    prefix = getattr(skeleton, "base_model_prefix", "") or ""

    def key_of(name: str) -> str | None:
        for candidate in (name, name.removeprefix(f"{prefix}.") if prefix else name, f"{prefix}.{name}"):
            if candidate in key_file:
                return candidate
        return None

    layer_keys = {layer.param_name: key_of(layer.param_name) for layer in layers}
    if any(key is None for key in layer_keys.values()):
        return None  # renamed or fused weights: loading the model resolves them
    wanted = {key_of(name): name for name in params}
    wanted.pop(None, None)
    by_param = {layer.param_name: layer for layer in layers}
    nm = parse_nm_pattern(pattern)
    entries: dict[str, LayerSparsity] = {}
    total = zeros = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                if key not in wanted:
                    continue
                tensor = handle.get_tensor(key)
                total += tensor.numel()
                zeros += int((tensor == 0).sum())
                layer = by_param.get(wanted[key])
                if layer is not None:
                    entries[layer.name] = layer_sparsity(layer.name, tensor, layer.transposed, nm)
                del tensor
    return SparsityReport(
        layers=[entries[layer.name] for layer in layers], total_parameters=total, total_zeros=zeros, pattern=pattern
    )


def _local_folder(path: str, revision, token) -> Path:
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"`model_or_id`={path!r} is a file; pass the folder that holds config.json.")
        if not (local / "config.json").is_file():
            raise ValueError(
                f"`model_or_id`={path!r} is a folder without config.json: it is not a saved model. Pass a folder "
                "written by `save_pretrained`/`save_pruned`, or a Hub id."
            )
        return local
    if not is_hub_id(path):
        raise FileNotFoundError(f"`model_or_id`={path!r} is neither an existing local folder nor a valid Hub repo id.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, revision=revision, token=token, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise OSError(
            f"No local folder {path!r}, and downloading it from the Hub failed: "
            f"{redact(f'{type(err).__name__}: {err}', [token if isinstance(token, str) else None])}"
        ) from None


def sparsity_report(
    model_or_id,
    pattern: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    trust_remote_code: bool = False,
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
) -> SparsityReport:
    """Per-layer and total sparsity of a model, with N:M compliance per layer.

    Saved safetensors are read one tensor at a time, so a checkpoint larger than memory can be inspected;
    checkpoints whose names do not match the model's modules are loaded with ``load_model`` instead.

    Args:
        model_or_id (`torch.nn.Module`, `str` or `os.PathLike`):
            A model in memory, a saved model folder, or a Hub repo id.
        pattern (`str`, *optional*):
            ``"N:M"`` (e.g. ``"2:4"``) to check which layers break that pattern and where; ``"unstructured"`` to
            check none. Defaults to the N:M pattern hf_gradprobe recorded (``pruning_report`` or
            ``pruning_config.json``), if any.
        revision (`str`, *optional*):
            The Hub revision of a repo id.
        token (`str`, *optional*):
            The Hub token of a repo id.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow model code from the Hub.
        targets (`str` or `Sequence[str]`, *optional*):
            Regular expressions choosing the layers, as in ``find_prunable_layers``; defaults to every
            Linear/Conv1D inside the repeated blocks.
        ignore (`str` or `Sequence[str]`, *optional*):
            Regular expressions of layers to leave out.

    Returns:
        `SparsityReport`: per-layer and total figures; ``report.extra`` names the model and what hf_gradprobe
        recorded about its pruning.
    """
    if pattern is not None:
        parse_nm_pattern(pattern)  # fail early with the argument named
    if isinstance(model_or_id, nn.Module):
        metadata = metadata_from_model(model_or_id)
        return measure_sparsity(
            model_or_id, pattern=_resolve_pattern(pattern, metadata), targets=targets, ignore=ignore
        )
    if not isinstance(model_or_id, (str, os.PathLike)):
        raise TypeError(
            f"`model_or_id` must be a model, a saved model folder or a Hub id, got {type(model_or_id).__name__}."
        )
    name = os.fspath(model_or_id)
    if name == DEFAULT_MODEL and not Path(name).exists():
        model, _ = load_model(name, revision=revision)
        report = measure_sparsity(model, pattern=_resolve_pattern(pattern, None), targets=targets, ignore=ignore)
        report.extra = {"model": name}
        return report
    folder = _local_folder(name, revision, token)
    metadata = None
    if (folder / PRUNING_CONFIG_NAME).is_file():
        metadata = load_pruning_metadata(folder)
    pattern = _resolve_pattern(pattern, metadata)
    report = _report_from_checkpoint(folder, pattern, trust_remote_code, targets, ignore)
    if report is None:
        logger.info("Loading %s to measure it (no safetensors, or weight names differ from the modules).", name)
        # A Hub snapshot above holds only safetensors and JSON: let load_model fetch other weight formats.
        source = str(folder) if Path(name).expanduser().exists() else name
        model, _ = load_model(source, revision=revision, trust_remote_code=trust_remote_code)
        report = measure_sparsity(model, pattern=pattern, targets=targets, ignore=ignore)
    report.extra = {"model": name, **_pruning_summary(metadata)}
    return report

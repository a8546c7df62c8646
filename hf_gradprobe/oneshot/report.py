# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`PruningReport`: what one-shot pruning did, measured on the pruned weights, and what it saves with the model.

Besides the measured sparsity per layer, the report names what the caller should know: output rows left with no
weight (``fully_pruned_rows``), tied parameters pruned with a layer, and layers that fell short of their quota
(``shortfall``: non-finite scores never prune), each also warned about.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from transformers.utils import logging

from .. import __version__
from ..core.masking import DEFAULT_SAMPLE_FRACTION, EXACT_LIMIT, num_to_prune, parse_nm_pattern
from ..core.sparsity import measure_sparsity
from .config import GradProbeConfig


__all__ = ["PruningReport", "build_report", "empty_rows"]

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


def empty_rows(layer) -> int:
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


def _shortfall(layers, config: GradProbeConfig, counts: dict[str, int] | None = None) -> list[dict]:
    """The layers (or, with one global threshold, the pool) left with fewer zeros than their comparison groups
    must get: exactly ``round(sparsity * size)`` per row or layer and ``M - N`` per N:M group, within the
    documented error of a sampled threshold for pools larger than ``EXACT_LIMIT``; with a non-uniform allocation,
    the ``counts`` it gave each layer.

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
        if counts is not None and layer.name in counts:
            expected, short = counts[layer.name], int(zeros < counts[layer.name])
        elif nm is not None:
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


def build_report(
    model, pruner, config: GradProbeConfig, calibration: dict, empty_before: dict, cost: dict
) -> PruningReport:
    """Measure the pruned ``model`` and describe it; warns about empty rows and shortfalls.

    ``empty_before`` counts each layer's rows that were already empty before pruning (not pruning's doing);
    ``cost`` holds ``seconds``, ``peak_memory_bytes``, ``memory_before_bytes`` and ``device``.
    """
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
        if pruner.counts is not None and row.name in pruner.counts:
            entry["allocated_sparsity"] = pruner.counts[row.name] / row.numel
        layer = by_name.get(row.name)
        if layer is not None and layer.tied_with:
            entry["tied_with"] = list(layer.tied_with)  # the same tensor: its zeros are there too
        if layer is not None and row.zeros:
            # Output rows left with no weight at all (e.g. rounding at a target near 1 with per-row groups).
            empty = empty_rows(layer) - empty_before.get(row.name, 0)
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
        calibration=calibration,
        candidates=sum(s.get("candidates", 0) for s in pruner.layer_stats.values()) if config.probe else 0,
        restored=sum(s.get("restored", 0) for s in pruner.layer_stats.values()),
        **cost,
    )
    if fully_pruned:
        report.extra["fully_pruned_rows"] = fully_pruned
        logger.warning(
            f"{fully_pruned} output rows of the pruned layers have no weight left at all (target_sparsity="
            f"{config.target_sparsity}, comparison_group={config.comparison_group!r}): their units output only their "
            "bias. Lower `target_sparsity`; the count is in the report as `fully_pruned_rows`."
        )
    if pruner.block_stats:
        report.extra["blocks"] = [{"block": index, **stats} for index, stats in sorted(pruner.block_stats.items())]
    shortfall = _shortfall(pruner.layers, config, pruner.counts)
    if shortfall:
        report.extra["shortfall"] = shortfall
        logger.warning(_shortfall_message(shortfall, config))
    tied = sorted({name for layer in pruner.layers for name in layer.tied_with})
    if tied:
        report.extra["tied_parameters_pruned"] = tied
    return report

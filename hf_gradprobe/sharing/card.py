# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) of a pruned model, rendered from its pruning metadata.

It works from the metadata dict alone (what ``pruning_config.json`` holds), so a card can be re-rendered
from a saved folder without loading the weights.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..core.sparsity import format_sparsity_table, row_sparsity
from ..models import is_hub_id
from .metadata import config_value, is_pruned, nm_pattern, recorded_settings
from .plot import PLOT_FILE, PLOT_KINDS, plot_kind
from .redaction import redact


__all__ = [
    "CARD_TAGS",
    "TEMPLATE_PATH",
    "build_model_card",
    "dataset_display_name",
    "describe_dataset",
    "display_path",
]

TEMPLATE_PATH = Path(__file__).parent / "templates" / "pruned_model_card.md"
CARD_TAGS = ("pruned", "sparse", "hf_gradprobe")

# Local corpora we know the Hub id of: the card's `datasets` must name Hub datasets, not local files.
_KNOWN_DATASETS = (("wikitext", "Salesforce/wikitext"),)
_WIKITEXT_CONFIGS = (
    ("wikitext-103-raw", "wikitext-103-raw-v1"),
    ("wikitext-103", "wikitext-103-v1"),
    ("wikitext-2-raw", "wikitext-2-raw-v1"),
    ("wikitext-2", "wikitext-2-v1"),
)


def describe_dataset(text: str | None) -> tuple[str | None, str | None, str | None]:
    """Guess the Hub dataset a data description names.

    Args:
        text (`str`, *optional*):
            A path or name, such as ``".../wikitext-2-raw/wiki.test.raw"`` or ``"Salesforce/wikitext"``.

    Returns:
        `tuple`: ``(hub_id, config, split)``, each ``None`` when not recognised.
    """
    if not text:
        return None, None, None
    lowered = str(text).lower()
    hub_id = next((repo for key, repo in _KNOWN_DATASETS if key in lowered), None)
    if hub_id is None and is_hub_id(str(text)) and "/" in str(text):
        hub_id = str(text)
    config = None
    if hub_id == "Salesforce/wikitext":
        config = next((cfg for key, cfg in _WIKITEXT_CONFIGS if key in lowered), None)
    split = None
    for word, name in (("test", "test"), ("valid", "validation"), ("train", "train")):
        if re.search(rf"(^|[^a-z]){word}", lowered):
            split = name
            break
    return hub_id, config, split


def dataset_display_name(data, hub_id: str | None = None, config: str | None = None, split: str | None = None) -> str:
    """A readable name for an evaluation dataset, never a local path.

    Args:
        data (`str`, *optional*):
            The data description recorded; its file name is shown when no Hub dataset is known.
        hub_id (`str`, *optional*):
            The Hub dataset (see :func:`describe_dataset`).
        config (`str`, *optional*):
            The dataset configuration.
        split (`str`, *optional*):
            The split.

    Returns:
        `str`: e.g. ``"WikiText-2 (raw, test)"``.
    """
    details = []
    if hub_id == "Salesforce/wikitext":
        name = "WikiText-103" if config and "103" in config else "WikiText-2" if config else "WikiText"
        details += ["raw"] if config and "raw" in config else []
    elif hub_id:
        name = hub_id.split("/")[-1]
        details += [config] if config else []
    else:
        name = Path(str(data)).name if data else "evaluation text"
    details += [split] if split else []
    return name + (f" ({', '.join(details)})" if details else "")


def display_path(text) -> str:
    """A data path as a card shows it, so that the card does not publish the layout of the machine that pruned
    the model.

    Args:
        text (`str` or `os.PathLike`):
            A path or a name.

    Returns:
        `str`: ``".../"`` and the last two parts of an absolute or parent-relative path; anything else as it is.
    """
    text = str(text)
    if ("/" in text or os.sep in text) and (os.path.isabs(text) or text.startswith("..")):
        return ".../" + "/".join(Path(text).parts[-2:])
    return text


def _pct(value) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "n/a"


def _short_pct(value) -> str:
    """50% rather than 50.00% when that is exact to the shown precision."""
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.0%}" if abs(value * 100 - round(value * 100)) < 0.005 else f"{value:.2%}"


def _num(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "not measured"


def _bytes(n) -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _card_datasets(metadata: Mapping) -> list[str]:
    if metadata.get("datasets"):
        names = metadata["datasets"]
        return [names] if isinstance(names, str) else list(names)
    found = []
    for entry in (metadata.get("calibration") or {}, metadata.get("perplexity_eval") or {}):
        hub_id = describe_dataset(entry.get("source") or entry.get("data"))[0] if isinstance(entry, Mapping) else None
        if hub_id and hub_id not in found:
            found.append(hub_id)
    return found


def _eval_results(metadata: Mapping) -> list[EvalResult] | None:
    ppl = metadata.get("perplexity_after")
    evaluation = metadata.get("perplexity_eval") or {}
    data = evaluation.get("data") if isinstance(evaluation, Mapping) else None
    if not isinstance(ppl, (int, float)) or not data:
        return None  # a model-index entry needs a named dataset
    hub_id, config, split = describe_dataset(data)
    config, split = evaluation.get("config") or config, evaluation.get("split") or split
    seq_len = evaluation.get("seq_len")
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Causal language modeling",
            dataset_type=hub_id or display_path(data),
            dataset_name=dataset_display_name(data, hub_id, config, split),
            dataset_config=config,
            dataset_split=split,
            metric_type="perplexity",
            metric_name=f"Perplexity ({seq_len}-token windows)" if seq_len else "Perplexity",
            metric_value=round(float(ppl), 4),
        )
    ]


def _method_text(metadata: Mapping) -> str:
    method = metadata.get("method") or "unknown"
    details = []
    strategy = config_value(metadata, "strategy")
    if strategy and strategy != method:
        details.append(f"strategy `{strategy}`")
    if config_value(metadata, "probe") is True:
        details.append("gradient probe")
    return f"`{method}`" + (f" ({', '.join(details)})" if details else "")


def _structure_text(metadata: Mapping) -> str:
    nm = nm_pattern(metadata)
    if nm:
        return f"{nm} semi-structured (at most {nm.split(':')[0]} non-zeros in every {nm.split(':')[1]} weights)"
    group = config_value(metadata, "comparison_group")
    return "unstructured" + (f", weights compared {str(group).replace('_', ' ')}" if group else "")


def _calibration_text(calibration) -> str | None:
    if not isinstance(calibration, Mapping) or not calibration:
        return None
    parts = []
    if calibration.get("num_samples") and calibration.get("seq_len"):
        parts.append(f"{calibration['num_samples']} sequences x {calibration['seq_len']} tokens")
    if calibration.get("source"):
        parts.append(f"from `{display_path(calibration['source'])}`")
    if calibration.get("seed") is not None:
        parts.append(f"seed {calibration['seed']}")
    return ", ".join(parts) or json.dumps(dict(calibration), default=str)


def _eval_text(evaluation) -> str:
    if not isinstance(evaluation, Mapping) or not evaluation:
        return ""
    parts = [f"`{display_path(evaluation['data'])}`" if evaluation.get("data") else None]
    if evaluation.get("windows") and evaluation.get("seq_len"):
        parts.append(f"{evaluation['windows']} windows x {evaluation['seq_len']} tokens")
    elif evaluation.get("seq_len"):
        parts.append(f"{evaluation['seq_len']}-token windows")
    return ", ".join(p for p in parts if p)


def _glance_rows(metadata: Mapping, base_model: str | None) -> list[tuple[str, str]]:
    rows = []
    if base_model:
        link = f"[{base_model}](https://huggingface.co/{base_model})" if is_hub_id(base_model) else f"`{base_model}`"
        rows.append(("base model", link))
    rows.append(("method", _method_text(metadata)))
    rows.append(("structure", _structure_text(metadata)))
    target = config_value(metadata, "target_sparsity")
    if isinstance(target, (int, float)):
        rows.append(("target sparsity", _short_pct(target)))
    if isinstance(metadata.get("sparsity"), (int, float)):
        measured = f"**{_pct(metadata['sparsity'])}** of the prunable weights"
        if metadata.get("prunable_parameters"):
            measured += f" ({metadata.get('prunable_zeros', 0):,} of {metadata['prunable_parameters']:,})"
        if isinstance(metadata.get("overall_sparsity"), (int, float)):
            measured += f"; {_pct(metadata['overall_sparsity'])} of all parameters"
        rows.append(("measured sparsity", measured))
    nm = nm_pattern(metadata)
    if nm and metadata.get("nm_compliant") is not None:
        rows.append((f"{nm} compliant", "yes, every layer" if metadata["nm_compliant"] else "**no** (see the table)"))
    calibration = _calibration_text(metadata.get("calibration"))
    if calibration:
        rows.append(("calibration data", calibration))
    recovery = _recovery_text(metadata.get("training"))
    if recovery:
        rows.append(("fine-tuning after pruning", recovery))
    before, after = metadata.get("perplexity_before"), metadata.get("perplexity_after")
    if isinstance(before, (int, float)) or isinstance(after, (int, float)):
        where = _eval_text(metadata.get("perplexity_eval"))
        rows.append(
            ("perplexity", f"{_num(before)} before, **{_num(after)}** after" + (f" ({where})" if where else ""))
        )
    else:
        rows.append(("perplexity", "not measured"))
    seed = config_value(metadata, "calibration_seed")
    if seed is not None:
        rows.append(("seed", str(seed)))
    if isinstance(metadata.get("seconds"), (int, float)):
        cost = f"{metadata['seconds']:.0f} s"
        if isinstance(metadata.get("peak_memory_bytes"), (int, float)):
            cost += f", peak memory {_bytes(metadata['peak_memory_bytes'])}"
        rows.append(("pruning cost", cost))
    return rows


def _recovery_text(training) -> str | None:
    """The fine-tuning a pruned model had after pruning (``metadata["training"]``), in one line."""
    if not isinstance(training, Mapping):
        return None
    parts = []
    method = training.get("pruning_method")
    if method:
        parts.append("the zeros kept (`fixed` masks)" if method == "fixed" else f"pruned while training (`{method}`)")
    steps, tokens = training.get("max_steps"), training.get("tokens")
    if isinstance(steps, int):
        parts.append(f"{steps:,} steps" + (f" ({tokens:,} tokens)" if isinstance(tokens, int) else ""))
    if training.get("train_file"):
        parts.append(f"on `{display_path(training['train_file'])}`")
    if isinstance(training.get("learning_rate"), (int, float)):
        parts.append(f"learning rate {training['learning_rate']:g}")
    if isinstance(training.get("one_shot_perplexity"), (int, float)):
        parts.append(f"perplexity {_num(training['one_shot_perplexity'])} before it")
    return ", ".join(parts) or None


# What prune_pretrained recorded as calibration when it was not a file or a datasets name.
_IN_MEMORY_SOURCES = ("token windows given in memory", "texts given in memory")


def _reconstructed_code(metadata: Mapping, model_name: str) -> str:
    """Python that repeats the pruning from the metadata, for when no command was recorded.

    It runs as written: the settings passed are those the metadata records (see
    :func:`~hf_gradprobe.sharing.metadata.recorded_settings`), and the calibration text is the one recorded, its
    path shortened as elsewhere in the card.
    """
    base = metadata.get("base_model") or "<base model>"
    calibration = metadata.get("calibration")
    calibration = calibration.get("source") if isinstance(calibration, Mapping) else None
    lines = [f"    {display_path(base)!r},", "    return_tokenizer=True,"]
    if calibration in _IN_MEMORY_SOURCES:
        lines.append(f"    calibration='calibration.txt',  # the original run used {calibration}")
    elif calibration:
        lines.append(f"    calibration={display_path(calibration)!r},  # the calibration text used")
    lines += [f"    {k}={v!r}," for k, v in recorded_settings(metadata).items()]
    return (
        "import hf_gradprobe\n\nmodel, tokenizer = hf_gradprobe.prune_pretrained(\n"
        + "\n".join(lines)
        + f"\n)\nhf_gradprobe.save_pruned(model, {model_name!r}, tokenizer=tokenizer)"
    )


def _shorten_paths(obj):
    """``obj`` with every path string shortened by :func:`display_path`, for the settings shown in the card."""
    if isinstance(obj, Mapping):
        return {k: _shorten_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shorten_paths(v) for v in obj]
    return display_path(obj) if isinstance(obj, str) else obj


def build_model_card(
    metadata: Mapping,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    plot_file: str | None = PLOT_FILE,
    card_data: Mapping | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a pruned model from its pruning metadata.

    A model that :func:`~hf_gradprobe.sharing.metadata.is_pruned` says is not pruned gets a card that says so and
    no ``pruned``/``sparse`` tags.

    Args:
        metadata (`Mapping`):
            The dict saved as ``pruning_config.json`` (every key optional).
        repo_id (`str`, *optional*):
            Where the model lives or will live; used in the "use it" snippet and as the model name.
        model_name (`str`, *optional*):
            The card title and ``model-index`` name; defaults to the repo name.
        plot_file (`str`, *optional*, defaults to `"sparsity_per_layer.png"`):
            File name of the per-layer plot beside the card, or ``None`` when there is no plot.
        card_data (`Mapping`, *optional*):
            Extra ``ModelCardData`` fields (e.g. ``{"license": "apache-2.0", "language": "en"}``). Without a
            ``license`` here, the card takes ``metadata["base_model_license"]`` (the base model's, found offline by
            ``build_pruning_metadata``).
        template_path (`str` or `os.PathLike`, *optional*):
            A Jinja template to use instead of the packaged one.

    Returns:
        `huggingface_hub.ModelCard`: the card (``card.save(path)`` writes it).
    """
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"`metadata` must be a dict (the content of pruning_config.json), got {type(metadata).__name__}."
        )
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else None) or "pruned-model"
    base_model = metadata.get("base_model")
    method = metadata.get("method")
    not_pruned = not is_pruned(metadata)
    # A model nobody pruned is not tagged or described as pruned.
    tags = [t for t in CARD_TAGS if t not in ("pruned", "sparse")] if not_pruned else list(CARD_TAGS)
    tags += [str(method)] if method else []
    nm = nm_pattern(metadata)
    if nm:
        tags.append(f"{nm.replace(':', '-')}-sparsity")
    extra = dict(card_data or {})
    tags += [t for t in extra.pop("tags", []) or [] if t not in tags]
    # A pruned model is a derivative of its base model: it carries the base model's license unless told otherwise.
    if not extra.get("license") and metadata.get("base_model_license"):
        extra["license"] = metadata["base_model_license"]
    arch = str(metadata.get("architecture") or "")
    data = ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        library_name="transformers",
        pipeline_tag="text-generation" if arch.endswith(("ForCausalLM", "LMHeadModel")) else None,
        tags=tags,
        datasets=_card_datasets(metadata) or None,
        model_name=model_name,
        eval_results=_eval_results(metadata),
        **extra,
    )
    layers = list(metadata.get("layers") or [])
    command = metadata.get("command")
    # The card lists the layers and versions elsewhere; the JSON block keeps the settings readable.
    summary_config = _shorten_paths(
        {k: v for k, v in metadata.items() if k not in ("layers", "command", "framework_versions")}
    )
    varies = plot_kind(layers)  # what the per-layer plot shows; None when nothing differs between layers
    kind = varies if plot_file else None
    versions = dict(metadata.get("framework_versions") or {})
    if metadata.get("hf_gradprobe_version"):
        versions = {"hf_gradprobe": metadata["hf_gradprobe_version"], **versions}
    return ModelCard.from_template(
        data,
        template_path=str(template_path or TEMPLATE_PATH),
        model_name=model_name,
        model_path=repo_id or f"path/to/{model_name}",
        base_model=base_model,
        method=method or "unknown",
        not_pruned=not_pruned,
        sparsity_text=_short_pct(metadata.get("sparsity")),
        structure=_structure_text(metadata),
        glance=_glance_rows(metadata, base_model),
        nm_pattern=nm,
        checkpoint_size=_bytes(metadata.get("checkpoint_bytes")) if metadata.get("checkpoint_bytes") else None,
        command=redact(command) if command else None,
        reconstructed_code=None if command else _reconstructed_code(metadata, model_name),
        config_json=json.dumps(summary_config, indent=2, default=str),
        plot_file=plot_file if kind else None,
        plot_alt=PLOT_KINDS[kind][2] if kind else None,
        uniform_sparsity=_short_pct(row_sparsity(layers[0])) if layers and varies is None else None,
        table=format_sparsity_table(layers, nm) if layers else None,
        num_layers=len(layers),
        versions=versions,
    )

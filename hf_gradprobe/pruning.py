# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`prune_pretrained`: one-shot pruning of any `PreTrainedModel`, with or without gradient probing.

Memory model (what is resident besides the model while pruning):

* the calibration windows (token ids) and, in layerwise mode, the hidden states entering the current
  block for every calibration window (``samples x seq_len x hidden`` in the model dtype);
* per probed layer: its candidate mask (1 byte per weight) and two gradient statistics in
  ``gradient_dtype`` (fp16: 2 bytes each). Layerwise mode holds them for one block only; the whole-model
  mode holds them for every prunable weight;
* transient: one layer's fp32 gradient and probe weight at a time (never a ``.grad`` on the model),
  and the activations of one probe window's forward/backward (gradient checkpointing trims these).

No copy of the weights is ever taken: probing shrinks candidates only inside the forward pass, and
pruning writes zeros block by block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging

from . import __version__
from .config import GradProbeConfig
from .data import calibration_windows, tokenize_corpus
from .decision import probe_masks, propose_candidates
from .evaluation import model_input_device
from .layers import PrunableLayer, find_prunable_layers, find_repeated_blocks, group_by_block
from .masking import apply_mask_, global_masks, select_mask
from .models import load_model
from .probing import GradientProbe, gradient_growth, run_probe_batches
from .sparsity import measure_sparsity
from .strategies import ActivationNormCollector, strategy_scores


logger = logging.get_logger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class PruningReport:
    """What :func:`prune_pretrained` did. ``to_dict()`` is the metadata saved with the model."""

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
        out.update(
            strategy=self.config["strategy"], probe=self.config["probe"], pattern=self.config["pattern"],
            comparison_group=self.config["comparison_group"], target_sparsity=self.config["sparsity"],
            seed=self.config["seed"],
        )
        return out


def causal_lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every predicted token, in fp32.

    Through ``labels`` so the model's own loss shifts the labels rather than copying the (large) logits.
    """
    return model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.float()


def _has_lm_head(model: nn.Module) -> bool:
    return callable(getattr(model, "get_output_embeddings", None)) and model.get_output_embeddings() is not None


def _memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _current_rss()


def _current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakMemory:
    """Peak memory while pruning: CUDA's allocator peak, or the process RSS sampled by a thread.

    ``ru_maxrss`` is not enough on CPU: it is the peak of the whole process, model loading included.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = _current_rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _current_rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _current_rss())


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the block of interest has run."""


class _Passthrough(nn.Module):
    """Stands in for an already-processed block: its input hidden states are replaced anyway."""

    def __init__(self, returns_tuple: bool):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.returns_tuple else hidden_states


class _BlockRunner:
    """Runs the model from block ``k`` on, with block ``k``'s input taken from a cache.

    Blocks before ``k`` are swapped for pass-throughs and a pre-hook on block ``k`` replaces its hidden
    states, so the model's own forward still builds masks and position embeddings: no
    architecture-specific code. Stopping after block ``k`` (``stop_after=True``) skips the rest.
    """

    def __init__(self, blocks: nn.ModuleList, returns_tuple: bool):
        self.blocks = blocks
        self.returns_tuple = returns_tuple
        self.inputs: torch.Tensor | None = None
        self.output: torch.Tensor | None = None

    @contextlib.contextmanager
    def from_block(self, k: int, stop_after: bool = False):
        originals = [self.blocks[i] for i in range(k)]
        handles = []

        def inject(module, args, kwargs):
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = self.inputs
            else:
                args = (self.inputs, *args[1:])
            return args, kwargs

        def capture(module, args, output):
            self.output = (output[0] if isinstance(output, tuple) else output).detach()
            if stop_after:
                raise _StopForward

        try:
            for i in range(k):
                self.blocks[i] = _Passthrough(self.returns_tuple)
            handles.append(self.blocks[k].register_forward_pre_hook(inject, with_kwargs=True))
            handles.append(self.blocks[k].register_forward_hook(capture))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for i, block in enumerate(originals):
                self.blocks[i] = block


class OneShotPruner:
    """Drives one-shot pruning of ``model`` under ``config``; see :func:`prune_pretrained`."""

    def __init__(self, model: nn.Module, config: GradProbeConfig, windows: torch.Tensor | None,
                 loss_fn: LossFn | None, progress: bool = True):
        self.model = model
        self.config = config
        self.windows = windows
        self.loss_fn = loss_fn
        self.progress = progress
        self.layers = find_prunable_layers(model, targets=config.targets, ignore=config.ignore)
        self.device = model_input_device(model)
        self.fp16 = next(model.parameters()).dtype == torch.float16
        self.layer_stats: dict[str, dict] = {}

    # -- data ------------------------------------------------------------------------------------
    def _batches(self, windows: torch.Tensor, size: int):
        for i in range(0, len(windows), size):
            yield windows[i : i + size].to(self.device)

    def _probe_windows(self) -> torch.Tensor:
        return self.windows[: self.config.num_probe_samples]

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, batch)

    # -- scores ----------------------------------------------------------------------------------
    def _scores(self, layers: Sequence[PrunableLayer], norms) -> list[torch.Tensor]:
        return [strategy_scores(self.config.strategy, layer, norms) for layer in layers]

    def _decide(self, layers, norms, g0=None, g1=None, candidates=None) -> None:
        """Choose and apply the final masks. Layer by layer (one layer's scores in memory at a time) unless
        one global threshold spans every layer; the lists passed in are emptied as layers are decided."""
        cfg = self.config
        is_global = cfg.comparison_group == "global" and cfg.pattern == "unstructured"
        groups = [list(range(len(layers)))] if is_global else [[i] for i in range(len(layers))]
        pending = []  # masks of the current block, applied together: no block is ever left half-pruned

        def flush():
            for args in pending:
                self._apply(*args)
            pending.clear()

        for group in groups:
            if pending and layers[group[0]].block_index != pending[-1][0][-1].block_index:
                flush()
            subset = [layers[i] for i in group]
            scores = self._scores(subset, norms)
            grown = chosen = None
            if not cfg.probe:
                masks = (global_masks(scores, cfg.sparsity, seed=cfg.seed) if is_global
                         else [select_mask(s, cfg.sparsity, cfg.comparison_group, cfg.pattern) for s in scores])
            else:
                chosen, a, b = ([seq[i] for i in group] for seq in (candidates, g0, g1))
                weights = [layer.out_in(layer.weight.detach()) for layer in subset]
                masks = probe_masks(scores, weights, chosen, a, b, cfg.sparsity, cfg.comparison_group, cfg.pattern,
                                    cfg.gradient_threshold, cfg.gradient_weight, cfg.seed)
                if cfg.gradient_threshold is not None:
                    grown = [(gradient_growth(x, y) > cfg.gradient_threshold) & c for x, y, c in zip(a, b, chosen)]
                for i in group:  # free what this group no longer needs
                    candidates[i] = g0[i] = g1[i] = None
            pending.append((subset, masks, grown, chosen))
            del scores, masks
        flush()

    def _candidates(self, layers, norms):
        cfg = self.config
        return propose_candidates(
            self._scores(layers, norms), cfg.sparsity, cfg.comparison_group, cfg.pattern, cfg.candidate_ratio, cfg.seed
        )

    def _probe(self, layers, shrink, windows) -> dict[str, torch.Tensor]:
        probe = self._new_probe(layers, shrink)
        with probe:
            run_probe_batches(probe, self._probe_batches(windows), self._loss, half_precision_fp16=self.fp16)
        return probe.results()

    def _new_probe(self, layers, shrink) -> GradientProbe:
        cfg = self.config
        # fp16 models retry overflowing batches; only max_abs can absorb a partly folded retry.
        buffer = self.fp16 and cfg.gradient_statistic != "max_abs"
        return GradientProbe(layers, shrink, cfg.reduction_factor, cfg.gradient_statistic, cfg.storage_dtype, buffer)

    def _probe_batches(self, windows):
        yield from tqdm(self._batches(windows, 1), total=len(windows), desc="Probe", disable=not self.progress,
                        unit="window")

    def _apply(self, layers, masks, protected=None, candidates=None) -> None:
        for i, (layer, mask) in enumerate(zip(layers, masks)):
            apply_mask_(layer.weight, layer.from_out_in(mask))
            self.layer_stats[layer.name] = {
                "candidates": int(candidates[i].sum()) if candidates is not None else int(mask.sum()),
                "restored": int((candidates[i] & ~mask).sum()) if candidates is not None else 0,
                "grown": int(protected[i].sum()) if protected is not None else None,
            }

    # -- whole-model mode --------------------------------------------------------------------------
    def run_whole_model(self) -> None:
        cfg = self.config
        needs_norms = cfg.strategy == "wanda"
        # The dense gradient g0 only matters with a gradient_threshold; without one a single probe pass
        # (at the shrunk candidates) is all the rule needs.
        needs_g0 = cfg.probe and cfg.gradient_threshold is not None
        norms, g0 = None, None
        collector = ActivationNormCollector(self.layers) if needs_norms else contextlib.nullcontext()
        with collector:
            rest = self.windows if needs_norms else None
            if needs_g0:
                # The dense gradients and the Wanda statistics come from the same forward passes.
                g0 = self._probe(self.layers, None, self._probe_windows())
                rest = self.windows[cfg.num_probe_samples :] if needs_norms else None
            if rest is not None and len(rest):
                with torch.no_grad(), self._stop_after_last_layer():
                    for batch in tqdm(list(self._batches(rest, cfg.calibration_batch_size)), desc="Calibration",
                                      disable=not self.progress, unit="batch"):
                        self._loss_free_forward(batch)
        if needs_norms:
            norms = collector.sq_norms
        if not cfg.probe:
            self._decide(self.layers, norms)
            return
        candidates = self._candidates(self.layers, norms)
        shrink = {layer.name: c for layer, c in zip(self.layers, candidates)}
        g1 = self._probe(self.layers, shrink, self._probe_windows())
        names = [layer.name for layer in self.layers]
        g1 = [g1.pop(n) for n in names]
        g0 = [g0.pop(n) for n in names] if g0 is not None else g1
        del shrink
        self._decide(self.layers, norms, g0, g1, candidates)

    @contextlib.contextmanager
    def _stop_after_last_layer(self):
        """End statistics-only forwards after the last block: the LM head's logits (the largest activation)
        are never computed. Only when every prunable layer sits in the blocks, so all of them have run."""
        if any(layer.block_index is None for layer in self.layers):
            yield
            return

        def stop(module, args, output):
            raise _StopForward

        _, blocks = find_repeated_blocks(self.model)
        handle = blocks[-1].register_forward_hook(stop)
        try:
            yield
        finally:
            handle.remove()

    def _loss_free_forward(self, batch: torch.Tensor) -> None:
        try:
            self.model(input_ids=batch, use_cache=False)
        except _StopForward:
            pass

    # -- layerwise mode ----------------------------------------------------------------------------
    def run_layerwise(self) -> None:
        _, blocks = find_repeated_blocks(self.model)
        grouped = group_by_block(self.layers)
        if any(index is None for index, _ in grouped):
            raise ValueError(
                "`layerwise=True` needs every prunable layer inside the repeated blocks; `targets` selected "
                "layers outside them. Use `layerwise=False` or narrow `targets`."
            )
        runner = _BlockRunner(blocks, returns_tuple=self._block_returns_tuple(blocks))
        hidden = self._block0_inputs(runner)
        for index, layers in tqdm(grouped, desc="Blocks", disable=not self.progress, unit="block"):
            hidden = self._process_block(runner, index, layers, hidden)

    def _block_returns_tuple(self, blocks) -> bool:
        seen = {}

        def hook(module, args, output):
            seen["tuple"] = isinstance(output, tuple)
            raise _StopForward

        handle = blocks[0].register_forward_hook(hook)
        try:
            with torch.no_grad():
                self._loss_free_forward(self.windows[:1].to(self.device))
        finally:
            handle.remove()
        return seen.get("tuple", False)

    def _block0_inputs(self, runner: _BlockRunner) -> torch.Tensor:
        captured = []

        def hook(module, args, kwargs):
            states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            captured.append(states.detach())
            raise _StopForward

        handle = runner.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                for batch in self._batches(self.windows, self.config.calibration_batch_size):
                    self._loss_free_forward(batch)
        finally:
            handle.remove()
        return torch.cat(captured)

    def _run_block_on_cache(self, runner, index, hidden, collector=None, update=False) -> torch.Tensor:
        """Run block ``index`` on the cached inputs; with ``update``, its outputs replace them in place
        (one buffer of hidden states for the whole layerwise pass)."""
        size = self.config.calibration_batch_size
        with torch.no_grad(), runner.from_block(index, stop_after=True), (collector or contextlib.nullcontext()):
            for i in range(0, len(hidden), size):
                runner.inputs = hidden[i : i + size]
                self._loss_free_forward(self.windows[i : i + size].to(self.device))
                if update:
                    hidden[i : i + size] = runner.output
        return hidden

    def _process_block(self, runner, index, layers, hidden) -> torch.Tensor:
        cfg = self.config
        norms = None
        if cfg.strategy == "wanda":
            collector = ActivationNormCollector(layers)
            self._run_block_on_cache(runner, index, hidden, collector)
            norms = collector.sq_norms
        if cfg.probe:
            probe_hidden = hidden[: cfg.num_probe_samples]
            candidates = self._candidates(layers, norms)
            shrink = {layer.name: c for layer, c in zip(layers, candidates)}
            needs_g0 = cfg.gradient_threshold is not None
            g1 = self._probe_from_block(runner, index, layers, shrink, probe_hidden)
            g0 = self._probe_from_block(runner, index, layers, None, probe_hidden) if needs_g0 else g1
            names = [layer.name for layer in layers]
            del shrink
            self._decide(layers, norms, [g0[n] for n in names], [g1[n] for n in names], candidates)
            del g0, g1
        else:
            self._decide(layers, norms)
        # The next block sees this block's pruning.
        return self._run_block_on_cache(runner, index, hidden, update=True)

    def _probe_from_block(self, runner, index, layers, shrink, probe_hidden) -> dict[str, torch.Tensor]:
        probe = self._new_probe(layers, shrink)

        def batches():
            for i in range(len(probe_hidden)):
                runner.inputs = probe_hidden[i : i + 1]
                yield self.windows[i : i + 1].to(self.device)

        with probe, runner.from_block(index):
            run_probe_batches(probe, batches(), self._loss, half_precision_fp16=self.fp16)
        return probe.results()


@contextlib.contextmanager
def _probing_mode(model: nn.Module, gradient_checkpointing: bool):
    """Dropout off, no parameter gradients, optional checkpointing; everything restored afterwards."""
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    was_checkpointing = bool(getattr(model, "is_activation_checkpointing", False))
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(f"`gradient_checkpointing=True` but {type(model).__name__} does not support it.")
            # transformers 5.x renamed gradient_* to activation_checkpointing_*; the old names warn.
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()  # HF only checkpoints in training mode; dropout is switched off below
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.eval()
        else:
            model.eval()
        yield
    finally:
        if gradient_checkpointing and not was_checkpointing:
            (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
        model.train(was_training)
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad.get(name, p.requires_grad))


def _calibration(calibration, tokenizer, config: GradProbeConfig) -> tuple[torch.Tensor, dict]:
    if isinstance(calibration, torch.Tensor) and calibration.dim() == 2:
        windows = calibration.long()
        return windows, {"source": "token windows given in memory", "num_samples": len(windows),
                         "seq_len": windows.shape[1], "seed": None}
    ids = tokenize_corpus(tokenizer, calibration)
    windows = calibration_windows(ids, config.num_calibration_samples, config.calibration_seq_len, config.seed)
    source = os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "texts given in memory"
    return windows, {"source": source, "num_samples": config.num_calibration_samples,
                     "seq_len": config.calibration_seq_len, "seed": config.seed}


def prune_pretrained(
    model_or_id,
    config: GradProbeConfig | None = None,
    calibration=None,
    tokenizer=None,
    loss_fn: LossFn | None = None,
    *,
    return_report: bool = False,
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
        config: a :class:`GradProbeConfig`; ``overrides`` replace its fields (``sparsity=0.5``...).
        calibration: text for calibration (a file, a ``datasets`` name, a list of texts), or a 2-D tensor of
            token windows. Needed by Wanda and by the probe.
        tokenizer: overrides the tokenizer found with the model.
        loss_fn: ``loss_fn(model, input_ids) -> scalar`` for models without a causal-LM head (e.g. BERT);
            defaults to the next-token cross-entropy.
        return_report: return ``(model, report)`` instead of the model. The report is also stored on the
            model as ``model.pruning_report``.

    The model's weights are modified in place block by block; if an error interrupts pruning, the
    block being decided is untouched (probing never writes weights) and earlier blocks stay pruned.
    """
    config = config or GradProbeConfig()
    if overrides:
        known = {f.name for f in dataclasses.fields(GradProbeConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"prune_pretrained() got unknown arguments {unknown}; GradProbeConfig fields are {sorted(known)}.")
        config = dataclasses.replace(config, **overrides)
    model, tokenizer = load_model(
        model_or_id, tokenizer=tokenizer, revision=revision, dtype=dtype, device_map=device_map,
        trust_remote_code=trust_remote_code,
    )
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(
            f"{type(model).__name__} is quantized ({type(model.hf_quantizer).__name__}); pruning needs float "
            "weights. Load it with `hf_gradprobe.load_model` (which de-quantizes GGUF) or de-quantize it first."
        )
    needs_data = config.probe or config.strategy == "wanda"
    windows, calibration_info = None, {}
    if needs_data:
        if calibration is None:
            raise ValueError(
                f"`calibration` is required for strategy={config.strategy!r} with probe={config.probe}: give a text "
                "file, a datasets name, a list of texts or a tensor of token windows."
            )
        windows, calibration_info = _calibration(calibration, tokenizer, config)
        if config.num_probe_samples > len(windows) and config.probe:
            raise ValueError(f"`num_probe_samples`={config.num_probe_samples} exceeds the {len(windows)} calibration windows.")
    if loss_fn is None:
        if needs_data and config.probe and not _has_lm_head(model):
            raise ValueError(
                f"{type(model).__name__} has no language-modelling head, so the probe has no default loss: pass "
                "`loss_fn(model, input_ids) -> scalar loss`."
            )
        loss_fn = causal_lm_loss

    pruner = OneShotPruner(model, config, windows, loss_fn, progress=progress)
    device = pruner.device
    memory_before = _memory_now(device)
    start = time.perf_counter()
    with _PeakMemory(device) as peak_memory, _probing_mode(model, config.gradient_checkpointing):
        if config.layerwise and needs_data:
            pruner.run_layerwise()
        else:
            pruner.run_whole_model()
    seconds = time.perf_counter() - start
    peak = peak_memory.peak

    measured = measure_sparsity(model, layers=pruner.layers)
    layers = []
    for row in measured.layers:
        entry = {"name": row.name, "shape": row.shape, "numel": row.numel, "zeros": row.zeros, "sparsity": row.sparsity}
        entry.update(pruner.layer_stats.get(row.name, {}))
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
        peak_memory_bytes=peak,
        memory_before_bytes=memory_before,
        device=str(device),
        candidates=sum(s.get("candidates", 0) for s in pruner.layer_stats.values()) if config.probe else 0,
        restored=sum(s.get("restored", 0) for s in pruner.layer_stats.values()),
    )
    model.pruning_report = report
    logger.info("Pruned %s to %.2f%% sparsity in %.1f s", type(model).__name__, 100 * report.sparsity, seconds)
    return (model, report) if return_report else model

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`OneShotPruner`: scores, candidates, probe and decision for a whole model or block by block.

Memory model (what is resident besides the model while pruning):

* the calibration windows (token ids) and, in layerwise mode, the hidden states entering the current
  block for every calibration window (``samples x seq_len x hidden`` in the model dtype);
* per probed layer: its candidate mask (1 byte per weight) and its gradient statistic in ``gradient_dtype``
  (fp16: 2 bytes). Layerwise mode holds them for one block only; whole-model mode for every prunable weight;
* transient: one layer's fp32 gradient and probe weight at a time (never a ``.grad`` on the model),
  and the activations of one probe window's forward/backward (gradient checkpointing trims these);
* with reconstruction: one fp32 ``X^T X`` per input of the current block (``in_features**2 * 4`` bytes each),
  and in sequential order the recorded output of the block's finished attention, replayed in its later passes
  (the size of the hidden-state cache).

No copy of the weights is ever taken: probing shrinks candidates only inside the forward pass, and
pruning writes zeros block by block, each block's masks together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils.logging import tqdm
from typing_extensions import Self

from ..core.layers import PrunableLayer, find_prunable_layers, find_repeated_blocks, group_by_block
from ..core.masking import apply_mask_, select_masks
from ..core.runtime import model_input_device, progress_bars_enabled
from .config import GradProbeConfig
from .decision import grown_candidates, probe_masks, propose_candidates
from .losses import LossFn, causal_lm_loss, kl_to_reference
from .pipeline import BlockPipeline, FinishedChildReplay, forward_without_loss, stop_after
from .probing import GradientProbe, run_probe_batches
from .reconstruction import HessianAccumulator, output_error, reconstruct_admm, reconstruct_sparsegpt
from .strategies import ActivationNormCollector, strategy_scores


class OneShotPruner:
    """Prunes ``model`` under ``config``: :meth:`run_whole_model` or :meth:`run_blockwise`."""

    def __init__(
        self,
        model: nn.Module,
        config: GradProbeConfig,
        windows: torch.Tensor | None,
        loss_fn: LossFn | None,
        progress: bool = True,
    ):
        self.model = model
        self.config = config
        self.windows = windows
        self.loss_fn = loss_fn
        self.progress = progress
        self.layers = find_prunable_layers(model, targets=config.targets, ignore=config.ignore)
        self.device = model_input_device(model)
        self.fp16 = next(model.parameters()).dtype == torch.float16
        self.layer_stats: dict[str, dict] = {}

    # -- shared steps ------------------------------------------------------------------------------
    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, batch)

    def _scores(self, layers: Sequence[PrunableLayer], norms) -> list[torch.Tensor]:
        return [strategy_scores(self.config.strategy, layer, norms) for layer in layers]

    def _candidates(self, layers, norms) -> list[torch.Tensor]:
        cfg = self.config
        return propose_candidates(
            self._scores(layers, norms),
            cfg.target_sparsity,
            cfg.comparison_group,
            cfg.pattern,
            cfg.candidate_ratio,
            cfg.calibration_seed,
        )

    def _new_probe(self, layers, shrink) -> GradientProbe:
        cfg = self.config
        # fp16 models retry overflowing batches; only max_abs can absorb a partly folded retry.
        buffer = self.fp16 and cfg.gradient_statistic != "max_abs"
        return GradientProbe(layers, shrink, cfg.reduction_factor, cfg.gradient_statistic, cfg.storage_dtype, buffer)

    def _run_probe(self, probe: GradientProbe, batches, total: int) -> dict[str, torch.Tensor]:
        batches = tqdm(
            batches, total=total, desc="Probe", disable=not progress_bars_enabled(self.progress), unit="window"
        )
        loss = self._loss
        if self.config.probe_loss == "kl" and self.loss_fn is causal_lm_loss:

            def loss(batch):
                # The dense model's distribution on this window, computed on the fly (never stored for all).
                with probe.unshrunk():
                    reference = self.model(input_ids=batch, use_cache=False).logits.float().log_softmax(dim=-1)
                return kl_to_reference(self.model(input_ids=batch, use_cache=False).logits, reference)

        with probe:
            run_probe_batches(probe, batches, loss, half_precision_fp16=self.fp16)
        return probe.results()

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
                masks = select_masks(
                    scores, cfg.target_sparsity, cfg.comparison_group, cfg.pattern, seed=cfg.calibration_seed
                )
            else:
                chosen, a, b = ([seq[i] for i in group] for seq in (candidates, g0, g1))
                weights = [layer.out_in(layer.weight.detach()) for layer in subset]
                masks = probe_masks(
                    scores,
                    weights,
                    chosen,
                    a,
                    b,
                    cfg.target_sparsity,
                    cfg.comparison_group,
                    cfg.pattern,
                    cfg.gradient_threshold,
                    cfg.gradient_weight,
                    cfg.calibration_seed,
                )
                if cfg.gradient_threshold is not None:
                    grown = [
                        grown_candidates(x, y, c, cfg.gradient_threshold) for x, y, c in zip(a, b, chosen, strict=True)
                    ]
                for i in group:  # free what this group no longer needs
                    candidates[i] = g0[i] = g1[i] = None
            pending.append((subset, masks, grown, chosen))
            del scores, masks
        flush()

    def _apply(self, layers, masks, grown=None, candidates=None) -> None:
        for i, (layer, mask) in enumerate(zip(layers, masks, strict=True)):
            apply_mask_(layer.weight, layer.from_out_in(mask))
            self.layer_stats[layer.name] = {
                "candidates": int(candidates[i].sum()) if candidates is not None else int(mask.sum()),
                "restored": int((candidates[i] & ~mask).sum()) if candidates is not None else 0,
                "grown": int(grown[i].sum()) if grown is not None else None,
            }

    # -- whole-model mode --------------------------------------------------------------------------
    def _batches(self, windows: torch.Tensor, size: int):
        for i in range(0, len(windows), size):
            yield windows[i : i + size].to(self.device)

    def _probe_whole_model(self, layers, shrink) -> dict[str, torch.Tensor]:
        windows = self.windows[: self.config.num_probe_samples]
        return self._run_probe(self._new_probe(layers, shrink), self._batches(windows, 1), len(windows))

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
                g0 = self._probe_whole_model(self.layers, None)
                rest = self.windows[cfg.num_probe_samples :] if needs_norms else None
            if rest is not None and len(rest):
                with torch.no_grad(), self._stop_after_last_block():
                    batches = list(self._batches(rest, cfg.calibration_batch_size))
                    for batch in tqdm(
                        batches, desc="Calibration", disable=not progress_bars_enabled(self.progress), unit="batch"
                    ):
                        forward_without_loss(self.model, batch)
        if needs_norms:
            norms = collector.sq_norms
        if not cfg.probe:
            self._decide(self.layers, norms)
            return
        candidates = self._candidates(self.layers, norms)
        shrink = {layer.name: c for layer, c in zip(self.layers, candidates, strict=True)}
        g1 = self._probe_whole_model(self.layers, shrink)
        names = [layer.name for layer in self.layers]
        g1 = [g1.pop(n) for n in names]
        g0 = [g0.pop(n) for n in names] if g0 is not None else g1
        del shrink
        self._decide(self.layers, norms, g0, g1, candidates)

    def _stop_after_last_block(self):
        """Statistics-only forwards end after the last block: the LM head's logits (the largest activation)
        are never computed. Only when every prunable layer sits in the blocks, so all of them have run."""
        if any(layer.block_index is None for layer in self.layers):
            return contextlib.nullcontext()
        _, blocks = find_repeated_blocks(self.model)
        return stop_after(blocks[-1])

    # -- block by block: layerwise probe and/or reconstruction ------------------------------------
    def run_blockwise(self) -> None:
        """Blocks in order, each decided on the hidden states the already pruned blocks produce.

        With ``layerwise`` the probe runs per block (from the loss down to the block); otherwise one probe of
        the dense model proposes and measures the candidates up front. With ``reconstruction`` the kept weights
        of each block are then updated to preserve every layer's output on the calibration data.
        """
        cfg = self.config
        grouped = group_by_block(self.layers)
        if any(index is None for index, _ in grouped):
            raise ValueError(
                "`layerwise=True` and `reconstruction` need every prunable layer inside the repeated blocks; "
                "`targets` selected layers outside them. Narrow `targets`, or use layerwise=False with "
                "reconstruction='none'."
            )
        upfront = self._dense_probe() if cfg.probe and not cfg.layerwise else None
        pipeline = BlockPipeline(self.model, self.windows, cfg.calibration_batch_size, self.device)
        hidden = pipeline.first_inputs()
        for index, layers in tqdm(
            grouped, desc="Blocks", disable=not progress_bars_enabled(self.progress), unit="block"
        ):
            replay = None
            if cfg.reconstruction == "none":
                self._prune_block(pipeline, index, layers, hidden, upfront)
            else:
                replay = self._prune_and_reconstruct_block(pipeline, index, layers, hidden, upfront)
            # The next block sees this block's pruning.
            pipeline.run_block(index, hidden, update=True, replay=replay)

    def _dense_probe(self) -> dict[str, tuple]:
        """Candidates and probed gradients of every layer, measured once on the dense model."""
        cfg = self.config
        norms = None
        if cfg.strategy == "wanda":
            collector = ActivationNormCollector(self.layers)
            with collector, torch.no_grad(), self._stop_after_last_block():
                for batch in self._batches(self.windows, cfg.calibration_batch_size):
                    forward_without_loss(self.model, batch)
            norms = collector.sq_norms
        candidates = self._candidates(self.layers, norms)
        shrink = {layer.name: c for layer, c in zip(self.layers, candidates, strict=True)}
        g1 = self._probe_whole_model(self.layers, shrink)
        g0 = self._probe_whole_model(self.layers, None) if cfg.gradient_threshold is not None else g1
        return {
            layer.name: (c, g0[layer.name], g1[layer.name]) for layer, c in zip(self.layers, candidates, strict=True)
        }

    def _block_probe(self, pipeline: BlockPipeline, index: int, layers, hidden, norms) -> dict[str, tuple]:
        """Candidates and probed gradients of one block's layers, backpropagating from the loss to the block."""
        cfg = self.config
        probe_hidden = hidden[: cfg.num_probe_samples]
        candidates = self._candidates(layers, norms)
        shrink = {layer.name: c for layer, c in zip(layers, candidates, strict=True)}

        def probe(shrink_masks):
            with pipeline.from_block(index):
                batches = pipeline.window_batches(probe_hidden)
                return self._run_probe(self._new_probe(layers, shrink_masks), batches, len(probe_hidden))

        g1 = probe(shrink)
        g0 = probe(None) if cfg.gradient_threshold is not None else g1
        return {layer.name: (c, g0[layer.name], g1[layer.name]) for layer, c in zip(layers, candidates, strict=True)}

    def _decide_with(self, layers, norms, probed: dict[str, tuple] | None) -> None:
        if probed is None:
            self._decide(layers, norms)
            return
        candidates, g0, g1 = (list(x) for x in zip(*(probed.pop(layer.name) for layer in layers), strict=True))
        self._decide(layers, norms, g0, g1, candidates)

    def _prune_block(self, pipeline: BlockPipeline, index: int, layers, hidden, upfront) -> None:
        norms = None
        if self.config.strategy == "wanda":
            collector = ActivationNormCollector(layers)
            pipeline.run_block(index, hidden, hooks=collector)
            norms = collector.sq_norms
        probed = upfront
        if self.config.probe and upfront is None:
            probed = self._block_probe(pipeline, index, layers, hidden, norms)
        self._decide_with(layers, norms, probed)

    def _prune_and_reconstruct_block(
        self, pipeline: BlockPipeline, index: int, layers, hidden, upfront
    ) -> FinishedChildReplay | None:
        """Decide and reconstruct one block, stage by stage; on failure the block's weights are put back.

        A stage is the layers that read the same input (q/k/v; gate/up). In ``sequential`` order each stage's
        statistics are taken after the earlier stages are pruned and reconstructed (o_proj sees the pruned
        attention), and the block's finished parts are replayed rather than recomputed (returned for the block's
        last pass); in ``parallel`` order every stage's statistics come from the block's input in one pass.
        """
        cfg = self.config
        # One block's weights, to undo a half-done block: a block is either fully pruned or untouched.
        backup = [layer.weight.detach().clone() for layer in layers]
        try:
            stages = self._input_stages(pipeline, index, layers, hidden)
            # The block's own probe proposes candidates for every layer from the block's input, so it needs every
            # layer's statistics at once, as the parallel order does.
            every_layer = cfg.reconstruction_order == "parallel" or (cfg.probe and upfront is None)
            collector = HessianCollector(stages if every_layer else stages[:1])
            # Each statistics pass stops when its last stage's layers are about to run (their input is all it
            # needs): computing them, or the rest of the block, would be wasted.
            last = stages[-1] if every_layer else stages[0]
            pipeline.run_block(index, hidden, hooks=collector, before=last[0].module)
            probed = upfront
            if cfg.probe and upfront is None:
                probed = self._block_probe(pipeline, index, layers, hidden, collector.sq_norms())
            sequential = cfg.reconstruction_order == "sequential"
            replay = FinishedChildReplay(pipeline.blocks[index], layers) if sequential else None
            for number, stage in enumerate(stages):
                if number and sequential:
                    collector = HessianCollector([stage])
                    pipeline.run_block(index, hidden, hooks=collector, before=stage[0].module, replay=replay)
                norms = collector.sq_norms() if cfg.strategy == "wanda" else None
                self._decide_with(stage, norms, probed)
                for layer in stage:
                    self._reconstruct(layer, collector.hessian(layer.name), backup[layers.index(layer)])
                if replay is not None:
                    replay.mark_final(stage)
            return replay
        except BaseException:
            with torch.no_grad():
                for layer, weight in zip(layers, backup, strict=True):
                    layer.weight.copy_(weight)
            raise

    def _input_stages(self, pipeline: BlockPipeline, index: int, layers, hidden) -> list[list[PrunableLayer]]:
        """The block's layers grouped by the input tensor they read, in call order (one forward on one window)."""
        # The input tensors themselves are kept (not their id(): a freed tensor's id is reused by a later one).
        order: list[tuple[torch.Tensor, PrunableLayer]] = []
        handles = []
        for layer in layers:
            handles.append(
                layer.module.register_forward_pre_hook(
                    lambda module, args, layer=layer: order.append((args[0], layer))
                )
            )
        try:
            pipeline.run_block(index, hidden[:1])
        finally:
            for handle in handles:
                handle.remove()
        stages: list[list[PrunableLayer]] = []
        inputs: list[torch.Tensor] = []
        for tensor, layer in order:
            if any(layer is other for stage in stages for other in stage):
                continue
            position = next((i for i, seen in enumerate(inputs) if seen is tensor), None)
            if position is None:
                position = len(stages)
                inputs.append(tensor)
                stages.append([])
            stages[position].append(layer)
        missing = [layer for layer in layers if not any(layer is other for stage in stages for other in stage)]
        if missing:
            raise RuntimeError(f"{missing[0].name} did not run in the forward pass of block {index}.")
        return stages

    @torch.no_grad()
    def _reconstruct(self, layer: PrunableLayer, hessian: torch.Tensor, dense: torch.Tensor) -> None:
        """Refit the kept weights of ``layer`` (just masked) to the dense layer's outputs: min ||X (W0 - W)||."""
        cfg = self.config
        weight = layer.out_in(layer.weight.detach())
        mask = weight == 0  # the zeros just applied (and any the model already had)
        dense = layer.out_in(dense)
        if cfg.reconstruction == "admm":
            updated = reconstruct_admm(
                dense,
                mask,
                hessian,
                damping=cfg.reconstruction_damping,
                iterations=cfg.reconstruction_iterations,
                ridge=cfg.reconstruction_ridge,
            )
        else:
            updated = reconstruct_sparsegpt(dense, mask, hessian, damping=cfg.reconstruction_damping)
        stats = self.layer_stats.setdefault(layer.name, {})
        stats["output_error_pruned"] = output_error(dense, weight, hessian, relative=True)
        stats["output_error"] = output_error(dense, updated, hessian, relative=True)
        layer.weight.copy_(layer.from_out_in(updated).to(layer.weight.dtype))
        apply_mask_(layer.weight, layer.from_out_in(mask))


class HessianCollector:
    """Forward pre-hooks accumulating ``H = X^T X`` (fp32, beside the weights) while active.

    ``stages`` are groups of layers that read the same input tensor (q/k/v; gate/up): each group shares one
    accumulator, hooked on its first layer, so the product is computed once per input rather than once per layer.
    """

    def __init__(self, stages: Sequence[Sequence[PrunableLayer]]):
        self.stages = [list(stage) for stage in stages]
        self._accumulators = [
            HessianAccumulator(stage[0].out_in(stage[0].weight).shape[1], device=stage[0].weight.device)
            for stage in self.stages
        ]
        self._stage_of = {layer.name: i for i, stage in enumerate(self.stages) for layer in stage}
        self._handles = []

    def __enter__(self) -> Self:
        for stage, accumulator in zip(self.stages, self._accumulators, strict=True):
            self._handles.append(
                stage[0].module.register_forward_pre_hook(
                    lambda module, args, accumulator=accumulator: accumulator.add(args[0])
                )
            )
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def hessian(self, name: str) -> torch.Tensor:
        """The mean ``X^T X`` of the input of layer ``name`` (a new tensor)."""
        return self._accumulators[self._stage_of[name]].hessian

    def sq_norms(self) -> dict[str, torch.Tensor]:
        """Per input feature, the sum over tokens of ``x_j**2``: the diagonal of the summed ``X^T X`` (Wanda)."""
        return {name: self._accumulators[i].H.diagonal().clone() for name, i in self._stage_of.items()}

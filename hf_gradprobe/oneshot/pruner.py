# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`OneShotPruner`: one-shot pruning as a loop over blocks and, within a block, over its stages.

A stage is the layers that read the same input (q/k/v; o; gate/up; down). For each stage the pruner runs the same
steps, each a registered part chosen by the config:

1. **statistics** of the stage's input (:class:`~.statistics.InputStatistics`: ``sum x^2``, and ``X^T X`` when the
   reconstructor reads it), on the hidden states the already pruned blocks produce;
2. **scores** of the strategy (:data:`~.strategies.STRATEGIES`), and the candidates they propose;
3. optionally the **probe**: the candidates shrunk, the gradients re-measured;
4. the **decision**: masks with the exact quota of every comparison group;
5. the **reconstruction** of the kept weights (:data:`~.reconstructors.RECONSTRUCTORS`), which takes the masks.

Without reconstruction or layerwise probing the model is pruned as a whole (one statistics pass, one probe).

Memory model (what is resident besides the model while pruning):

* the calibration windows (token ids) and, block by block, the hidden states entering the current block for every
  calibration window (``samples x seq_len x hidden`` in the model dtype);
* per probed layer: its candidate mask (1 byte per weight) and its gradient statistic in ``gradient_dtype`` (fp16:
  2 bytes); block by block for one block only, whole-model for every prunable weight;
* transient: one layer's fp32 gradient and probe weight at a time (never a ``.grad`` on the model), and the
  activations of one probe window's forward/backward;
* with reconstruction: one fp32 ``X^T X`` per input of the current stage (``in_features**2 * 4`` bytes each), the
  block's dense weights (to undo a failed block), and in sequential order the recorded output of the block's
  finished attention, replayed in its later passes (the size of the hidden-state cache).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils.logging import tqdm

from ..core.layers import PrunableLayer, find_prunable_layers, find_repeated_blocks, group_by_block
from ..core.masking import apply_mask_, select_masks
from ..core.runtime import model_input_device, progress_bars_enabled
from .allocation import exact_counts, outlier_count, owl_sparsities
from .config import GradProbeConfig
from .decision import grown_candidates, probe_masks, propose_candidates
from .losses import LossFn, kl_to_reference
from .pipeline import BlockPipeline, FinishedChildReplay, forward_without_loss, input_groups, stop_after
from .probing import GradientProbe, run_probe_batches
from .reconstruction import output_error
from .reconstructors import RECONSTRUCTORS
from .refinement import refine_block
from .sensitivity import TokenSensitivities, blend_weights
from .statistics import InputStatistics
from .strategies import STRATEGIES, wanda_scores


__all__ = ["OneShotPruner"]

# Per layer name: (candidates, dense gradient g0, probed gradient g1), all (out, in).
Probed = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class OneShotPruner:
    """Prunes ``model`` under ``config`` in place (:meth:`run`); per-layer figures go to ``layer_stats``.

    Args:
        model (`nn.Module`): the model, with real weights on its devices.
        config (`GradProbeConfig`): what to do.
        windows (`torch.Tensor`, *optional*): calibration token windows ``(samples, seq_len)``; needed when
            ``config.needs_calibration``.
        loss_fn (`Callable`, *optional*): ``loss_fn(model, input_ids) -> loss`` for the probe.
        progress (`bool`, defaults to `True`): show progress bars (they also obey the Hugging Face switches).
    """

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
        self.strategy = STRATEGIES.get(config.strategy)
        self.reconstructor = RECONSTRUCTORS.get(config.reconstruction)
        self.layers = find_prunable_layers(model, targets=config.targets, ignore=config.ignore)
        self.device = model_input_device(model)
        self.fp16 = next(model.parameters()).dtype == torch.float16
        self.layer_stats: dict[str, dict] = {}
        self.block_stats: dict[int, dict] = {}
        # Zeros per layer of a non-uniform allocation (None: the target everywhere), and per layer the weight of
        # every calibration token in its objective (None: all alike).
        self.counts: dict[str, int] | None = None
        self.token_weights: dict[str, torch.Tensor] | None = None

    def run(self) -> None:
        """Prune: block by block when reconstructing or probing layerwise, else the whole model at once."""
        if self.config.blockwise:
            self._run_blockwise()
        else:
            self._run_whole_model()

    def _bar(self, items, description: str, unit: str, total: int | None = None):
        return tqdm(items, total=total, desc=description, disable=not progress_bars_enabled(self.progress), unit=unit)

    # -- scores, probe, decision ---------------------------------------------------------------------------------
    def _scores(self, layers: Sequence[PrunableLayer], statistics) -> list[torch.Tensor]:
        return [self.strategy.scores(layer, statistics) for layer in layers]

    def _sparsity(self, layers) -> float | list[float]:
        """The target, or with an allocation each layer's own share of zeros."""
        if self.counts is None:
            return self.config.target_sparsity
        return [self.counts[layer.name] / layer.weight.numel() for layer in layers]

    def _candidates(self, layers, statistics) -> list[torch.Tensor]:
        cfg = self.config
        return propose_candidates(
            self._scores(layers, statistics),
            self._sparsity(layers),
            cfg.comparison_group,
            cfg.pattern,
            cfg.candidate_ratio,
            cfg.calibration_seed,
        )

    def _run_probe(self, layers, shrink, batches, total: int) -> dict[str, torch.Tensor]:
        """Gradient statistics of ``layers`` over ``batches``, the ``shrink`` candidates scaled down (None: dense)."""
        cfg = self.config
        # fp16 models retry overflowing batches; only max_abs can absorb a partly folded retry.
        buffer = self.fp16 and cfg.gradient_statistic != "max_abs"
        probe = GradientProbe(
            layers, shrink, cfg.reduction_factor, cfg.gradient_statistic, cfg.storage_dtype, buffer_batches=buffer
        )
        loss = self._kl_loss(probe) if cfg.probe_loss == "kl" else (lambda batch: self.loss_fn(self.model, batch))
        with probe:
            run_probe_batches(probe, self._bar(batches, "Probe", "window", total), loss, half_precision_fp16=self.fp16)
        return probe.results()

    def _kl_loss(self, probe: GradientProbe):
        def loss(batch):
            # The dense model's distribution on this window, computed on the fly (never stored for all).
            with probe.unshrunk():
                reference = self.model(input_ids=batch, use_cache=False).logits.float().log_softmax(dim=-1)
            return kl_to_reference(self.model(input_ids=batch, use_cache=False).logits, reference)

        return loss

    def _probed(self, layers, candidates, measure) -> Probed:
        """``measure(shrink) -> gradients`` at the shrunk candidates (g1) and, with a threshold, the dense (g0)."""
        shrink = {layer.name: c for layer, c in zip(layers, candidates, strict=True)}
        g1 = measure(shrink)
        g0 = measure(None) if self.config.gradient_threshold is not None else g1
        return {layer.name: (c, g0[layer.name], g1[layer.name]) for layer, c in zip(layers, candidates, strict=True)}

    def _decide(self, layers: Sequence[PrunableLayer], statistics, probed: Probed | None) -> list[torch.Tensor]:
        """The final (out, in) masks of ``layers``: one decision over all of them when one global threshold spans
        them, else layer by layer (one layer's scores in memory at a time). Probed entries used are removed."""
        cfg = self.config
        groups = [list(layers)] if self._one_pool else [[layer] for layer in layers]
        masks = []
        for group in groups:
            scores = self._scores(group, statistics)
            counts = [self.counts[layer.name] for layer in group] if self.counts is not None else None
            if probed is None:
                chosen = select_masks(
                    scores,
                    cfg.target_sparsity,
                    cfg.comparison_group,
                    cfg.pattern,
                    seed=cfg.calibration_seed,
                    counts=counts,
                )
                self._record_decision(group, chosen)
            else:
                candidates, g0, g1 = (list(x) for x in zip(*(probed.pop(layer.name) for layer in group), strict=True))
                weights = [layer.out_in(layer.weight.detach()) for layer in group]
                chosen = probe_masks(
                    scores,
                    weights,
                    candidates,
                    g0,
                    g1,
                    cfg.target_sparsity,
                    cfg.comparison_group,
                    cfg.pattern,
                    cfg.gradient_threshold,
                    cfg.gradient_weight,
                    cfg.calibration_seed,
                    counts=counts,
                )
                grown = None
                if cfg.gradient_threshold is not None:
                    grown = [
                        grown_candidates(*args, cfg.gradient_threshold)
                        for args in zip(g0, g1, candidates, strict=True)
                    ]
                self._record_decision(group, chosen, candidates, grown)
            masks += chosen
            del scores
        return masks

    @property
    def _one_pool(self) -> bool:
        """Whether one threshold spans every layer (``global`` comparison, unstructured)."""
        return self.config.comparison_group == "global" and self.config.pattern == "unstructured"

    def _record_decision(self, layers, masks, candidates=None, grown=None) -> None:
        for i, (layer, mask) in enumerate(zip(layers, masks, strict=True)):
            self.layer_stats[layer.name] = {
                "candidates": int(candidates[i].sum()) if candidates is not None else int(mask.sum()),
                "restored": int((candidates[i] & ~mask).sum()) if candidates is not None else 0,
                "grown": int(grown[i].sum()) if grown is not None else None,
            }

    def _prune_without_reconstruction(self, layers, statistics, probed: Probed | None) -> None:
        """Decide and zero ``layers``, each block's masks applied together (no block is ever left half-pruned)."""
        blocks = [layers] if self._one_pool else [block for _, block in group_by_block(layers)]
        for block in blocks:
            for layer, mask in zip(block, self._decide(block, statistics, probed), strict=True):
                apply_mask_(layer.weight, layer.from_out_in(mask))

    # -- the whole model at once -----------------------------------------------------------------------------------
    def _batches(self, windows: torch.Tensor, size: int):
        for i in range(0, len(windows), size):
            yield windows[i : i + size].to(self.device)

    def _probe_whole_model(self, shrink) -> dict[str, torch.Tensor]:
        windows = self.windows[: self.config.num_probe_samples]
        return self._run_probe(self.layers, shrink, self._batches(windows, 1), len(windows))

    def _statistics_pass(self, windows: torch.Tensor) -> None:
        with torch.no_grad(), self._stop_after_last_block():
            batches = list(self._batches(windows, self.config.calibration_batch_size))
            for batch in self._bar(batches, "Calibration", "batch"):
                forward_without_loss(self.model, batch)

    def _run_whole_model(self) -> None:
        cfg = self.config
        statistics = None
        if self.strategy.needs_activations:
            statistics = InputStatistics([[layer] for layer in self.layers], second_moments=False)
        # The dense gradient g0 only matters with a gradient_threshold: its probe passes also feed the statistics.
        dense = None
        with statistics or contextlib.nullcontext():
            rest = self.windows if statistics is not None else None
            if cfg.probe and cfg.gradient_threshold is not None:
                dense = self._probe_whole_model(None)
                rest = self.windows[cfg.num_probe_samples :] if statistics is not None else None
            if rest is not None and len(rest):
                self._statistics_pass(rest)
        probed = None
        if cfg.probe:
            candidates = self._candidates(self.layers, statistics)
            shrink = {layer.name: c for layer, c in zip(self.layers, candidates, strict=True)}
            g1 = self._probe_whole_model(shrink)
            g0 = dense if dense is not None else g1
            probed = {
                layer.name: (c, g0[layer.name], g1[layer.name])
                for layer, c in zip(self.layers, candidates, strict=True)
            }
            del shrink
        self._prune_without_reconstruction(self.layers, statistics, probed)

    def _stop_after_last_block(self):
        """Statistics-only forwards end after the last block: the LM head's logits (the largest activation)
        are never computed. Only when every prunable layer sits in the blocks, so all of them have run."""
        if any(layer.block_index is None for layer in self.layers):
            return contextlib.nullcontext()
        _, blocks = find_repeated_blocks(self.model)
        return stop_after(blocks[-1])

    # -- block by block ----------------------------------------------------------------------------------------------
    def _run_blockwise(self) -> None:
        """Blocks in order, each decided on the hidden states the already pruned blocks produce.

        With ``layerwise`` the probe runs per block (from the loss down to the block); otherwise one probe of the
        dense model proposes and measures the candidates up front. An allocation and the token weights of
        loss-aware objectives are measured on the dense model first; a block is refined after its layers.
        """
        cfg = self.config
        grouped = group_by_block(self.layers)
        if any(index is None for index, _ in grouped):
            raise ValueError(
                "`layerwise=True`, `reconstruction` and `refine_steps` need every prunable layer inside the repeated "
                "blocks; `targets` selected layers outside them. Narrow `targets`, or prune without them."
            )
        if cfg.allocation != "uniform":
            self.counts = self._allocate(grouped)
        if cfg.loss_weighting > 0:
            self.token_weights = self._measure_token_weights()
        upfront = self._dense_probe() if cfg.probe and not cfg.layerwise else None
        pipeline = BlockPipeline(self.model, self.windows, cfg.calibration_batch_size, self.device)
        hidden = pipeline.first_inputs()
        # The dense model's hidden states, advanced block by block, when refinement aims at them.
        dense_hidden = hidden.clone() if cfg.refine_steps and cfg.refine_target == "model" else None
        for index, layers in self._bar(grouped, "Blocks", "block"):
            keeps_backup = self.reconstructor.needs_hessian or cfg.refine_steps > 0
            # One block's dense weights, to undo a half-done block: a block is either fully pruned or untouched.
            dense = {layer.name: layer.weight.detach().clone() for layer in layers} if keeps_backup else {}
            try:
                targets = self._refine_targets(pipeline, index, hidden, dense_hidden)
                if self.reconstructor.needs_hessian:
                    replay = self._reconstruct_block(pipeline, index, layers, hidden, upfront, dense)
                else:
                    self._prune_block(pipeline, index, layers, hidden, upfront)
                    replay = None
                if targets is not None:
                    self.block_stats[index] = refine_block(
                        pipeline,
                        index,
                        layers,
                        hidden,
                        targets,
                        steps=cfg.refine_steps,
                        lr=cfg.refine_lr,
                        batch_size=cfg.refine_batch_size,
                        seed=cfg.calibration_seed,
                    )
                    replay = None  # the refined block's parts changed: nothing recorded holds
            except BaseException:
                with torch.no_grad():
                    for layer in layers:
                        if layer.name in dense:
                            layer.weight.copy_(dense[layer.name])
                raise
            pipeline.run_block(index, hidden, update=True, replay=replay)  # the next block sees this one pruned

    def _refine_targets(self, pipeline: BlockPipeline, index: int, hidden, dense_hidden):
        """What block ``index`` is refined toward, computed while it is still dense (None without refinement)."""
        if not self.config.refine_steps:
            return None
        if dense_hidden is not None:
            return pipeline.run_block(index, dense_hidden, update=True)  # the dense model's next hidden states
        return pipeline.run_block(index, hidden.clone(), update=True)  # the dense block on the pruned inputs

    def _prune_block(self, pipeline: BlockPipeline, index: int, layers, hidden, upfront) -> None:
        """Decide and zero one block without reconstruction, on its cached inputs."""
        statistics = None
        if self.strategy.needs_activations:
            statistics = InputStatistics([[layer] for layer in layers], second_moments=False)
            pipeline.run_block(index, hidden, hooks=statistics)
        probed = upfront
        if self.config.probe and upfront is None:
            probed = self._block_probe(pipeline, index, layers, hidden, statistics)
        self._prune_without_reconstruction(layers, statistics, probed)

    def _allocate(self, grouped) -> dict[str, int]:
        """Zeros per layer from the dense model's outlier ratios (OWL), summing exactly to the target's count."""
        cfg = self.config
        statistics = InputStatistics([[layer] for layer in self.layers], second_moments=False)
        with statistics:
            self._statistics_pass(self.windows[: cfg.allocation_samples])
        ratios = []
        for _, layers in grouped:
            outliers = sum(
                outlier_count(wanda_scores(layer, statistics.sq_norms(layer.name)), cfg.outlier_threshold)
                for layer in layers
            )
            ratios.append(outliers / sum(layer.weight.numel() for layer in layers))
        per_block = owl_sparsities(ratios, cfg.target_sparsity, cfg.allocation_strength)
        layers = [layer for _, block in grouped for layer in block]
        sparsities = [per_block[number] for number, (_, block) in enumerate(grouped) for _ in block]
        counts = exact_counts([layer.weight.numel() for layer in layers], sparsities, cfg.target_sparsity)
        return {layer.name: count for layer, count in zip(layers, counts, strict=True)}

    def _measure_token_weights(self) -> dict[str, torch.Tensor]:
        """Per layer, the loss's sensitivity to its output at every calibration token, on the dense model."""
        sensitivities = TokenSensitivities(self.layers, len(self.windows), self.windows.shape[1])
        order = self._bar(range(len(self.windows)), "Sensitivity", "window")
        scale = 2.0**10 if self.fp16 else 1.0
        sensitivities.measure(self.model, self.windows, self.loss_fn, self.device, scale=scale, order=order)
        return sensitivities.values

    def _statistics(self, pipeline: BlockPipeline, groups) -> InputStatistics:
        """Second moments of each group's input, token-weighted by the group's summed sensitivity when asked."""
        weights = None
        if self.token_weights is not None:
            strength = self.config.loss_weighting
            weights = [
                blend_weights(sum(self.token_weights[layer.name] for layer in group), strength) for group in groups
            ]
        return InputStatistics(
            groups, second_moments=True, token_weights=weights, window_range=lambda: pipeline.window_range
        )

    def _dense_probe(self) -> Probed:
        """Candidates and probed gradients of every layer, measured once on the dense model."""
        statistics = None
        if self.strategy.needs_activations:
            statistics = InputStatistics([[layer] for layer in self.layers], second_moments=False)
            with statistics:
                self._statistics_pass(self.windows)
        return self._probed(self.layers, self._candidates(self.layers, statistics), self._probe_whole_model)

    def _block_probe(self, pipeline: BlockPipeline, index: int, layers, hidden, statistics) -> Probed:
        """Candidates and probed gradients of one block's layers, backpropagating from the loss to the block."""
        probe_hidden = hidden[: self.config.num_probe_samples]

        def measure(shrink):
            with pipeline.from_block(index):
                return self._run_probe(layers, shrink, pipeline.window_batches(probe_hidden), len(probe_hidden))

        return self._probed(layers, self._candidates(layers, statistics), measure)

    def _reconstruct_block(self, pipeline: BlockPipeline, index: int, layers, hidden, upfront, dense):
        """Decide and reconstruct one block, stage by stage (the caller puts its weights back on failure).

        In ``sequential`` order each stage's statistics are taken after the earlier stages are pruned and
        reconstructed (o_proj sees the pruned attention), and the block's finished parts are replayed rather than
        recomputed (returned for the block's last pass); in ``parallel`` order every stage's statistics come from the
        block's input in one pass.
        """
        cfg = self.config
        stages = input_groups(pipeline, index, layers, hidden)
        # The block's own probe proposes candidates for every layer from the block's input, so it needs every
        # layer's statistics at once, as the parallel order does.
        every_layer = cfg.reconstruction_order == "parallel" or (cfg.probe and upfront is None)
        statistics = self._statistics(pipeline, stages if every_layer else stages[:1])
        # A statistics pass stops when its last stage is about to run: its input is all it needs.
        last = stages[-1] if every_layer else stages[0]
        pipeline.run_block(index, hidden, hooks=statistics, before=last[0].module)
        probed = upfront
        if cfg.probe and upfront is None:
            probed = self._block_probe(pipeline, index, layers, hidden, statistics)
        sequential = cfg.reconstruction_order == "sequential"
        replay = FinishedChildReplay(pipeline.blocks[index], layers) if sequential else None
        for number, stage in enumerate(stages):
            if number and sequential:
                statistics = self._statistics(pipeline, [stage])
                pipeline.run_block(index, hidden, hooks=statistics, before=stage[0].module, replay=replay)
            masks = self._decide(stage, statistics, probed)
            for layer, mask in zip(stage, masks, strict=True):
                self._reconstruct(layer, mask, statistics.hessian(layer.name), dense[layer.name])
            if replay is not None:
                replay.mark_final(stage)
        return replay

    @torch.no_grad()
    def _reconstruct(self, layer: PrunableLayer, mask: torch.Tensor, hessian: torch.Tensor, dense: torch.Tensor):
        """Refit the kept weights of ``layer`` to the dense layer's outputs and write them, zero on the mask."""
        dense = layer.out_in(dense)
        mask = mask.to(dense.device) | (dense == 0)  # the model's own zeros stay zero
        weight, mask = self.reconstructor.solve(dense, mask, hessian, self.config)
        stats = self.layer_stats.setdefault(layer.name, {})
        stats["output_error_pruned"] = output_error(dense, dense.masked_fill(mask, 0), hessian, relative=True)
        stats["output_error"] = output_error(dense, weight, hessian, relative=True)
        layer.weight.copy_(layer.from_out_in(weight).to(layer.weight.dtype))
        apply_mask_(layer.weight, layer.from_out_in(mask))

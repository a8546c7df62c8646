# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Reconstructors: how the kept weights of a pruned layer are refitted, one registered object each.

A reconstructor takes one layer's dense weight, the mask decided for it and the second moments ``H = X^T X`` of
its input, and returns the updated weight (exactly zero on the mask it returns). The maths is in
:mod:`.reconstruction`; this module names the variants a config can choose.

| reconstruction | update |
|---|---|
| ``none`` | the kept weights keep their values |
| ``admm`` | least squares on the fixed mask by ADMM (Boža 2024) |
| ``sparsegpt`` | SparseGPT's column sweep on the fixed mask |
| ``alps`` | the mask and the weights chosen together (l0-constrained ADMM, then conjugate gradients), with the
  decided mask's quotas; never a larger output error than ``admm`` on the decided mask |
"""

from __future__ import annotations

import torch

from ..core.registry import Registry
from .mask_solver import quota_selector, solve_masks_and_weights
from .reconstruction import output_error, reconstruct_admm, reconstruct_sparsegpt


__all__ = [
    "RECONSTRUCTORS",
    "AdmmReconstructor",
    "AlpsReconstructor",
    "NoReconstruction",
    "Reconstructor",
    "SparseGPTReconstructor",
]


class Reconstructor:
    """How kept weights are refitted. ``needs_hessian``: it reads ``X^T X`` (and runs block by block)."""

    name: str = ""
    needs_hessian: bool = True

    def solve(
        self, dense: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor, config
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, mask)``: the refitted (out, in) weight in fp32, zero where the returned mask is True.

        ``config`` is the :class:`~hf_gradprobe.GradProbeConfig` (damping, iterations, ...).
        """
        raise NotImplementedError


class NoReconstruction(Reconstructor):
    name = "none"
    needs_hessian = False

    def solve(self, dense, mask, hessian, config):
        return dense.float().masked_fill(mask, 0.0), mask


class AdmmReconstructor(Reconstructor):
    name = "admm"

    def solve(self, dense, mask, hessian, config):
        weight = reconstruct_admm(
            dense,
            mask,
            hessian,
            damping=config.reconstruction_damping,
            iterations=config.reconstruction_iterations,
            ridge=config.reconstruction_ridge,
        )
        return weight, mask


class SparseGPTReconstructor(Reconstructor):
    name = "sparsegpt"

    def solve(self, dense, mask, hessian, config):
        return reconstruct_sparsegpt(dense, mask, hessian, damping=config.reconstruction_damping), mask


class AlpsReconstructor(Reconstructor):
    name = "alps"

    def solve(self, dense, mask, hessian, config):
        select = quota_selector(mask, config.pattern, config.comparison_group, forced=dense == 0)
        weight, chosen = solve_masks_and_weights(
            dense, hessian, select, damping=config.reconstruction_damping, ridge=config.reconstruction_ridge
        )
        # The support search is a heuristic: it keeps its result only when it beats the fit on the decided mask.
        fixed, _ = AdmmReconstructor().solve(dense, mask, hessian, config)
        if output_error(dense, fixed, hessian) < output_error(dense, weight, hessian):
            return fixed, mask
        return weight, chosen


RECONSTRUCTORS: Registry[Reconstructor] = Registry("reconstruction", "reconstruction")
RECONSTRUCTORS.register(NoReconstruction())
RECONSTRUCTORS.register(AdmmReconstructor())
RECONSTRUCTORS.register(SparseGPTReconstructor())
RECONSTRUCTORS.register(AlpsReconstructor())

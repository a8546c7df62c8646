# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Tests for the kept-weight reconstruction solvers (``hf_gradprobe.oneshot.reconstruction``).

Everything runs on a tiny layer (8 x 16, 200 tokens of correlated features) so the whole file takes a few seconds
on one thread; ``reconstruct_exact`` (itself checked against ``torch.linalg.lstsq``) is the reference.
"""

from __future__ import annotations

import pytest
import torch

from hf_gradprobe.oneshot.reconstruction import (
    HessianAccumulator,
    damped,
    output_error,
    reconstruct_admm,
    reconstruct_exact,
    reconstruct_sparsegpt,
)


OUT, IN, TOKENS = 8, 16, 200
SOLVERS = {
    "admm": reconstruct_admm,
    "sparsegpt": reconstruct_sparsegpt,
    "exact": reconstruct_exact,
}


def make_inputs(seed: int = 0) -> torch.Tensor:
    """Tokens x features with correlated features of very different scales, like real activations."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(TOKENS, IN, generator=generator) * torch.logspace(0, -1.5, IN)
    mixing = torch.eye(IN) + 0.5 * torch.randn(IN, IN, generator=generator)
    x = latent @ mixing + 0.05 * torch.randn(TOKENS, IN, generator=generator)
    x[:, 0] *= 10.0  # an outlier feature
    return x


def make_weight(seed: int = 1) -> torch.Tensor:
    return torch.randn(OUT, IN, generator=torch.Generator().manual_seed(seed))


def make_mask(weight: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """A pruning mask (True = pruned): Wanda-like per row at 50%, Wanda-like 2:4, or random 50% of the matrix."""
    if kind == "random":
        order = torch.randperm(weight.numel(), generator=torch.Generator().manual_seed(2))
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[order[: weight.numel() // 2]] = True
        return mask.view_as(weight)
    score = weight.abs() * x.norm(dim=0)
    if kind == "wanda":
        lowest = score.argsort(dim=1)[:, : IN // 2]
        return torch.zeros_like(weight, dtype=torch.bool).scatter_(1, lowest, True)
    assert kind == "2:4"
    groups = score.view(OUT, IN // 4, 4)
    lowest = groups.argsort(dim=2)[..., :2]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(2, lowest, True).view(OUT, IN)


def mean_hessian(x: torch.Tensor) -> torch.Tensor:
    accumulator = HessianAccumulator(x.shape[1])
    accumulator.add(x)
    return accumulator.hessian


@pytest.fixture(scope="module")
def problem():
    x = make_inputs()
    weight = make_weight()
    return x, weight, mean_hessian(x)


# --------------------------------------------------------------------------------------------------------------
# HessianAccumulator, damped, output_error


def test_accumulator_matches_concatenation():
    x = make_inputs()
    batches = [x[:10].view(2, 5, IN), x[10:17].double(), x[17:].bfloat16()]
    accumulator = HessianAccumulator(IN)
    for batch in batches:
        accumulator.add(batch)
    flat = torch.cat([batch.reshape(-1, IN).float() for batch in batches])
    assert accumulator.tokens == TOKENS
    assert accumulator.H.dtype == torch.float32
    torch.testing.assert_close(accumulator.H, flat.T @ flat, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(accumulator.hessian, flat.T @ flat / TOKENS, rtol=1e-5, atol=1e-6)
    accumulator.reset()
    assert accumulator.tokens == 0 and not accumulator.H.any()


def test_accumulator_errors():
    accumulator = HessianAccumulator(IN)
    with pytest.raises(RuntimeError, match="No activations"):
        _ = accumulator.hessian
    with pytest.raises(ValueError, match="`x`"):
        accumulator.add(torch.randn(3, IN + 1))
    with pytest.raises(ValueError, match="`x`"):
        accumulator.add(torch.ones(3, IN, dtype=torch.long))
    with pytest.raises(ValueError, match="`in_features`"):
        HessianAccumulator(0)


def test_damped_adds_relative_damping_and_decouples_dead_inputs():
    x = make_inputs()
    x[:, 3] = 0.0
    hessian = x.T @ x
    result = damped(hessian, 0.1)
    mean_diagonal = hessian.diagonal().mean()
    live = torch.arange(IN) != 3
    torch.testing.assert_close(result.diagonal()[live], hessian.diagonal()[live] + 0.1 * mean_diagonal)
    assert result[3, 3] == 1.0 and not result[3, live].any() and not result[live, 3].any()
    torch.testing.assert_close(
        result[live][:, live] - torch.diag(result.diagonal()[live]),
        hessian[live][:, live] - torch.diag(hessian.diagonal()[live]),
    )
    assert hessian[3, 3] == 0.0


def test_output_error_is_squared_output_difference(problem):
    x, weight, _ = problem
    weight_hat = weight * (torch.rand(weight.shape, generator=torch.Generator().manual_seed(3)) > 0.5)
    expected = ((x @ weight.T - x @ weight_hat.T) ** 2).sum().item()
    assert output_error(weight, weight_hat, x.T @ x) == pytest.approx(expected, rel=1e-4)
    energy = ((x @ weight.T) ** 2).sum().item()
    assert output_error(weight, weight_hat, x.T @ x, relative=True) == pytest.approx(expected / energy, rel=1e-4)
    assert output_error(weight, torch.zeros_like(weight), x.T @ x, relative=True) == pytest.approx(1.0, rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Solvers


@pytest.mark.parametrize("kind", ["wanda", "2:4", "random"])
def test_exact_matches_least_squares_on_the_support(problem, kind):
    x, weight, _ = problem
    mask = make_mask(weight, x, kind)
    x = x.double()  # an fp64 Hessian: the reference solver then agrees with lstsq to rounding
    result = reconstruct_exact(weight, mask, x.T @ x, damping=0.0)
    targets = x @ weight.double().T
    for row in range(OUT):
        support = (~mask[row]).nonzero().squeeze(1)
        solution = torch.linalg.lstsq(x[:, support], targets[:, row : row + 1]).solution.squeeze(1)
        torch.testing.assert_close(result[row, support], solution.float(), rtol=1e-4, atol=1e-5)
    assert not result[mask].any()


@pytest.mark.parametrize("kind", ["wanda", "2:4", "random"])
def test_solvers_beat_zeroing_and_admm_converges_to_exact(problem, kind):
    x, weight, hessian = problem
    mask = make_mask(weight, x, kind)
    zeroing = output_error(weight, weight * ~mask, hessian)
    exact = reconstruct_exact(weight, mask, hessian)
    exact_error = output_error(weight, exact, hessian)
    assert exact_error < 0.9 * zeroing

    for result in (reconstruct_admm(weight, mask, hessian), reconstruct_sparsegpt(weight, mask, hessian)):
        assert result.dtype == torch.float32 and result.shape == weight.shape
        assert torch.all(result[mask] == 0)
        assert output_error(weight, result, hessian) < zeroing

    converged = reconstruct_admm(weight, mask, hessian, iterations=400)
    assert output_error(weight, converged, hessian) == pytest.approx(exact_error, rel=1e-3)
    torch.testing.assert_close(converged, exact, rtol=1e-3, atol=1e-3 * weight.abs().max().item())

    # SparseGPT freezes kept weights once visited: never better than the optimum of the (damped) objective it
    # solves, and not equal to it in general.
    objective = damped(hessian, 0.01)
    sparsegpt = reconstruct_sparsegpt(weight, mask, hessian)
    assert output_error(weight, sparsegpt, objective) >= output_error(weight, exact, objective) * (1 - 1e-5)


def test_sparsegpt_is_exact_when_pruned_columns_come_first(problem):
    # Each sweep step is optimal given the columns already visited, so if every row's pruned weights precede its
    # kept ones, no kept weight is frozen before the last compensation and the sweep is the exact optimum.
    _, weight, hessian = problem
    mask = torch.arange(IN).unsqueeze(0) < torch.tensor([0, 1, 3, 5, 8, 11, 15, 16]).unsqueeze(1)
    expected = reconstruct_exact(weight, mask, hessian)
    for block_size in (1, 3, 128):
        torch.testing.assert_close(reconstruct_sparsegpt(weight, mask, hessian, block_size=block_size), expected)


def test_sparsegpt_does_not_depend_on_block_size(problem):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "random")
    reference = reconstruct_sparsegpt(weight, mask, hessian, block_size=1)
    for block_size in (3, 4, 16, 128):
        torch.testing.assert_close(reconstruct_sparsegpt(weight, mask, hessian, block_size=block_size), reference)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_fully_pruned_and_unpruned_rows(problem, name):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    mask[0] = True
    mask[1] = False
    result = SOLVERS[name](weight, mask, hessian)
    assert not result[0].any()
    torch.testing.assert_close(result[1], weight[1], rtol=1e-5, atol=1e-5)
    assert not result[mask].any()


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_dead_inputs(problem, name):
    x, weight, _ = problem
    x = x.clone()
    x[:, 5] = 0.0
    hessian = mean_hessian(x)
    mask = make_mask(weight, x, "random")
    result = SOLVERS[name](weight, mask, hessian)
    assert torch.isfinite(result).all() and not result[mask].any()
    # A dead input's weights cannot help the output: the kept ones are left as they were.
    kept = ~mask[:, 5]
    torch.testing.assert_close(result[kept, 5], weight[kept, 5])
    assert output_error(weight, result, hessian) < output_error(weight, weight * ~mask, hessian)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_all_inputs_dead_gives_zeroing(problem, name):
    x, weight, _ = problem
    mask = make_mask(weight, x, "wanda")
    result = SOLVERS[name](weight, mask, torch.zeros(IN, IN))
    torch.testing.assert_close(result, weight * ~mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_low_precision_inputs(problem, name, dtype):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "2:4")
    solver = SOLVERS[name]
    reference = solver(weight, mask, hessian)

    # A low-precision weight is upcast first: same result as its fp32 copy.
    result = solver(weight.to(dtype), mask, hessian)
    assert result.dtype == torch.float32 and not result[mask].any()
    torch.testing.assert_close(result, solver(weight.to(dtype).float(), mask, hessian))

    # A low-precision Hessian too: close to the all-fp32 result.
    result = solver(weight.to(dtype), mask, hessian.to(dtype))
    assert result.dtype == torch.float32 and not result[mask].any()
    tolerance = 0.02 if dtype == torch.float16 else 0.1
    assert (result - reference).norm() <= tolerance * reference.norm()


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_inputs_are_not_modified(problem, name):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    copies = weight.clone(), mask.clone(), hessian.clone()
    SOLVERS[name](weight, mask, hessian)
    damped(hessian)
    output_error(weight, weight * ~mask, hessian)
    for original, copy in zip((weight, mask, hessian), copies, strict=True):
        assert torch.equal(original, copy)


def test_ridge(problem):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    # Ridge has the form of damping: the result is the exact optimum with the two added.
    result = reconstruct_admm(weight, mask, hessian, ridge=0.5, iterations=300)
    torch.testing.assert_close(result, reconstruct_exact(weight, mask, hessian, damping=0.51), rtol=1e-3, atol=1e-4)
    # A huge ridge pins the kept weights to their original values.
    result = reconstruct_admm(weight, mask, hessian, ridge=1e6)
    torch.testing.assert_close(result, weight * ~mask, rtol=1e-4, atol=1e-4)
    assert output_error(weight, result, hessian) > output_error(
        weight, reconstruct_admm(weight, mask, hessian), hessian
    )


def test_admm_without_iterations_is_zeroing(problem):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    torch.testing.assert_close(reconstruct_admm(weight, mask, hessian, iterations=0), weight * ~mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_cuda_matches_cpu(problem, name):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "2:4")
    # Inputs on different devices: everything follows the weight.
    result = SOLVERS[name](weight.cuda(), mask, hessian)
    assert result.device.type == "cuda"
    torch.testing.assert_close(result.cpu(), SOLVERS[name](weight, mask, hessian), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_shape_and_type_errors_name_the_argument(problem, name):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    solver = SOLVERS[name]
    with pytest.raises(ValueError, match="`weight`"):
        solver(weight[0], mask[0], hessian)
    with pytest.raises(ValueError, match="`weight`"):
        solver(weight.long(), mask, hessian)
    with pytest.raises(ValueError, match="`mask`"):
        solver(weight, mask.T, hessian)
    with pytest.raises(ValueError, match="`mask`"):
        solver(weight, mask.float(), hessian)
    with pytest.raises(ValueError, match="`hessian`"):
        solver(weight, mask, hessian[:-1, :-1])
    with pytest.raises(ValueError, match="`hessian`"):
        solver(weight, mask, hessian[:, :-1])
    nan_hessian = hessian.clone()
    nan_hessian[2, 3] = float("nan")
    with pytest.raises(ValueError, match="`hessian`"):
        solver(weight, mask, nan_hessian)
    with pytest.raises(ValueError, match="`damping`"):
        solver(weight, mask, hessian, damping=-0.1)


def test_option_errors_name_the_argument(problem):
    x, weight, hessian = problem
    mask = make_mask(weight, x, "wanda")
    for option, value in [("rho", 0.0), ("rho", float("inf")), ("iterations", -1), ("iterations", 2.5), ("ridge", -1)]:
        with pytest.raises(ValueError, match=f"`{option}`"):
            reconstruct_admm(weight, mask, hessian, **{option: value})
    with pytest.raises(ValueError, match="`block_size`"):
        reconstruct_sparsegpt(weight, mask, hessian, block_size=0)
    with pytest.raises(ValueError, match="`weight_hat`"):
        output_error(weight, weight[:, :-1], hessian)
    with pytest.raises(ValueError, match="`hessian`"):
        damped(torch.ones(3))
    with pytest.raises(ValueError, match="`damping`"):
        damped(hessian, float("nan"))


def test_indefinite_hessian_raises_a_clear_error():
    weight = torch.ones(2, 2)
    mask = torch.tensor([[True, False], [False, True]])
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="`hessian`.*not positive definite"):
        reconstruct_sparsegpt(weight, mask, indefinite, damping=0.0)

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Mask selection (exact, N:M, sampled), applying masks, and the sparsity report."""

import math

import pytest
import torch
from testing_utils import make_tiny_gpt2, make_tiny_llama, require_cuda

from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import (
    apply_mask_,
    lowest_k_mask,
    nm_mask,
    parse_nm_pattern,
    per_row_mask,
    sampled_threshold,
    select_masks,
)
from hf_gradprobe.core.sparsity import measure_sparsity


SPARSITIES = [0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.99]
ODD_SHAPES = [(7, 13), (1, 5), (3, 1), (33, 17)]


def scores_for(shape, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(dtype)


def expected_pruned(numel, sparsity):
    # Round half up: 0.5 of 7 weights prunes 4.
    return math.floor(sparsity * numel + 0.5)


def assert_lowest_pruned(scores, mask):
    """Every pruned score is <= every kept score (the mask selects the lowest ones)."""
    scores = scores.float()
    if mask.any() and (~mask).any():
        assert scores[mask].max() <= scores[~mask].min()


class TestExactSparsity:
    @pytest.mark.parametrize("shape", ODD_SHAPES + [(64, 48)])
    @pytest.mark.parametrize("sparsity", SPARSITIES)
    def test_per_layer(self, shape, sparsity):
        scores = scores_for(shape)
        mask = lowest_k_mask(scores, sparsity)
        assert mask.dtype == torch.bool and mask.shape == scores.shape
        assert int(mask.sum()) == expected_pruned(scores.numel(), sparsity)
        assert_lowest_pruned(scores, mask)

    def test_round_half_up(self):
        assert int(lowest_k_mask(scores_for((1, 7)), 0.5).sum()) == 4  # 3.5 -> 4
        assert int(lowest_k_mask(scores_for((1, 3)), 0.5).sum()) == 2  # 1.5 -> 2

    @pytest.mark.parametrize("shape", ODD_SHAPES + [(16, 64)])
    @pytest.mark.parametrize("sparsity", SPARSITIES)
    def test_per_row(self, shape, sparsity):
        scores = scores_for(shape, seed=1)
        mask = per_row_mask(scores, sparsity)
        k = expected_pruned(shape[1], sparsity)
        assert mask.sum(dim=1).tolist() == [k] * shape[0]
        for row in range(shape[0]):
            assert_lowest_pruned(scores[row], mask[row])

    def test_per_row_differs_from_per_layer(self):
        # Row 0 holds all the low scores: per layer prunes it whole, per row prunes half of every row.
        scores = torch.cat([torch.zeros(1, 8), torch.ones(3, 8)]) + torch.rand(4, 8) * 0.1
        assert lowest_k_mask(scores, 0.25)[0].all()
        assert per_row_mask(scores, 0.25).sum(dim=1).tolist() == [2, 2, 2, 2]

    def test_per_row_needs_matrix(self):
        with pytest.raises(ValueError, match="per_row"):
            per_row_mask(torch.rand(2, 3, 4), 0.5)

    @pytest.mark.parametrize("sparsity", SPARSITIES)
    def test_global_exact(self, sparsity):
        # Layers on different scales: a global threshold prunes the low-scale layer first.
        pool = [scores_for((7, 13), 2) * 0.01, scores_for((5, 4), 3), scores_for((33,), 4) * 10]
        masks = select_masks(pool, sparsity, "global")
        total = sum(t.numel() for t in pool)
        assert [m.shape for m in masks] == [t.shape for t in pool]
        assert sum(int(m.sum()) for m in masks) == expected_pruned(total, sparsity)
        assert_lowest_pruned(torch.cat([t.reshape(-1) for t in pool]), torch.cat([m.reshape(-1) for m in masks]))

    def test_global_compares_across_layers(self):
        low, high = torch.rand(10, 10), torch.rand(10, 10) + 1
        masks = select_masks([high, low], 0.5, "global")
        assert not masks[0].any() and masks[1].all()

    def test_global_empty_pool(self):
        assert select_masks([], 0.5, "global") == []

    def test_select_mask_dispatch(self):
        scores = scores_for((8, 16))
        assert torch.equal(select_masks([scores], 0.3, "per_layer")[0], lowest_k_mask(scores, 0.3))
        assert torch.equal(select_masks([scores], 0.3, "per_row")[0], per_row_mask(scores, 0.3))
        assert torch.equal(select_masks([scores], 0.3, "per_row", "2:4")[0], nm_mask(scores, 2, 4))
        assert torch.equal(select_masks([scores], 0.3, "per_row", "unstructured")[0], per_row_mask(scores, 0.3))


class TestNM:
    @pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
    def test_valid_groups(self, n, m):
        scores = scores_for((12, 64), seed=n * 10 + m)
        mask = nm_mask(scores, n, m)
        groups, group_scores = mask.reshape(-1, m), scores.reshape(-1, m)
        # Exactly M-N pruned in every group, so at most N non-zeros remain.
        assert groups.sum(dim=1).eq(m - n).all()
        kept = torch.zeros_like(groups)
        kept.scatter_(1, group_scores.topk(n, dim=1).indices, True)
        assert torch.equal(~groups, kept)  # the N highest of each group are kept

    def test_groups_run_along_input_dimension(self):
        # Scores increase along each row: the first M-N columns of every group of 4 are pruned.
        scores = torch.arange(32.0).reshape(4, 8)
        mask = nm_mask(scores, 2, 4)
        assert mask[:, [0, 1, 4, 5]].all() and not mask[:, [2, 3, 6, 7]].any()

    def test_shape_not_multiple_of_m(self):
        with pytest.raises(ValueError, match=r"multiple of 8.*\(4, 12\).*ignore"):
            nm_mask(torch.rand(4, 12), 2, 8)

    @pytest.mark.parametrize("pattern", ["4:2", "2:2", "x:4", "2:4:8", "0:4", "2:", "", "2-4"])
    def test_invalid_pattern(self, pattern):
        with pytest.raises(ValueError, match="`pattern`") as err:
            parse_nm_pattern(pattern)
        assert repr(pattern) in str(err.value)

    def test_parse(self):
        assert parse_nm_pattern("2:4") == (2, 4)
        assert parse_nm_pattern("3:8") == (3, 8)
        assert parse_nm_pattern(None) is None and parse_nm_pattern("unstructured") is None

    def test_bad_n_m_direct(self):
        with pytest.raises(ValueError, match="N=4, M=2"):
            nm_mask(torch.rand(2, 4), 4, 2)


class TestTiesDtypesNaN:
    def test_constant_scores_prune_lowest_indices(self):
        scores = torch.ones(3, 8)
        assert lowest_k_mask(scores, 0.5).reshape(-1).nonzero().reshape(-1).tolist() == list(range(12))
        assert torch.equal(per_row_mask(scores, 0.25), torch.arange(8).expand(3, 8) < 2)
        assert torch.equal(nm_mask(scores, 1, 4), (torch.arange(8) % 4 < 3).expand(3, 8))
        masks = select_masks([torch.ones(4), torch.ones(4)], 0.75, "global")
        assert masks[0].all() and masks[1].tolist() == [True, True, False, False]

    def test_partial_ties_resolved_by_position(self):
        scores = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]])
        # Both zeros, then the first of the tied ones.
        assert lowest_k_mask(scores, 0.5).tolist() == [[True, True, False, True, False, False]]

    def test_same_result_twice(self):
        scores = torch.randint(0, 3, (16, 32)).float()  # many ties
        for fn in (lambda s: lowest_k_mask(s, 0.6), lambda s: per_row_mask(s, 0.6), lambda s: nm_mask(s, 2, 4)):
            assert torch.equal(fn(scores), fn(scores.clone()))
        pool = [scores, scores[:5].clone()]
        assert all(
            torch.equal(a, b)
            for a, b in zip(select_masks(pool, 0.6, "global"), select_masks(pool, 0.6, "global"), strict=True)
        )

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs_give_fp32_masks(self, dtype):
        scores = scores_for((16, 32), seed=5, dtype=dtype)
        reference = scores.float()
        assert torch.equal(lowest_k_mask(scores, 0.5), lowest_k_mask(reference, 0.5))
        assert torch.equal(per_row_mask(scores, 0.5), per_row_mask(reference, 0.5))
        assert torch.equal(nm_mask(scores, 2, 4), nm_mask(reference, 2, 4))
        assert torch.equal(select_masks([scores], 0.5, "global")[0], select_masks([reference], 0.5, "global")[0])
        assert sampled_threshold([scores], 0.5, 0.5) == sampled_threshold([reference], 0.5, 0.5)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_scores_not_rounded_to_weight_precision(self, dtype):
        # Distinct in fp32, all equal once rounded to half precision: rounding would prune by position
        # (the first half); comparing in fp32 prunes the truly lowest scores (the second half).
        scores = 1.0 + 1e-5 * torch.arange(8, 0, -1, dtype=torch.float32).reshape(1, 8)
        assert scores.to(dtype).unique().numel() == 1
        lowest_half = torch.tensor([[False] * 4 + [True] * 4])
        assert torch.equal(lowest_k_mask(scores, 0.5), lowest_half)
        assert torch.equal(per_row_mask(scores, 0.5), lowest_half)
        assert torch.equal(nm_mask(scores, 4, 8), lowest_half)
        assert torch.equal(select_masks([scores], 0.5, "global")[0], lowest_half)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_nonfinite_scores_never_prune(self, bad):
        scores = scores_for((4, 8), seed=6)
        scores[0, 3] = scores[2, 0] = bad
        masks = (
            lowest_k_mask(scores, 0.25),
            per_row_mask(scores, 0.25),
            nm_mask(scores, 3, 4),
            select_masks([scores], 0.25, "global")[0],
            select_masks([scores], 0.25, "global", sample_fraction=1.0)[0],
            select_masks([scores], 0.25, "per_layer", sample_fraction=1.0)[0],
        )
        for mask in masks:
            assert not mask[0, 3] and not mask[2, 0]
        mask = lowest_k_mask(scores, 0.25)
        assert int(mask.sum()) == 8  # the quota is met from the finite scores
        assert_lowest_pruned(torch.nan_to_num(scores, nan=1e9, posinf=1e9, neginf=1e9), mask)
        # All scores non-finite (a diverged loss): nothing is pruned, whatever the quota.
        everything_bad = torch.full((4, 8), bad)
        assert not lowest_k_mask(everything_bad, 0.99).any() and not per_row_mask(everything_bad, 0.99).any()
        assert not nm_mask(everything_bad, 1, 4).any()
        assert not select_masks([everything_bad], 0.5, "global", sample_fraction=0.5)[0].any()

    def test_nan_not_pruned_at_zero_sparsity(self):
        scores = torch.tensor([float("nan"), 1.0, 2.0, 3.0])
        assert not select_masks([scores], 0.0, "global")[0].any()
        assert not select_masks([scores], 0.0, "global", sample_fraction=1.0)[0].any()
        assert not lowest_k_mask(scores, 0.0).any()

    @pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.5", None])
    def test_sparsity_out_of_range(self, sparsity):
        scores = torch.rand(4, 4)
        for fn in (
            lambda: lowest_k_mask(scores, sparsity),
            lambda: per_row_mask(scores, sparsity),
            lambda: select_masks([scores], sparsity, "global"),
            lambda: sampled_threshold([scores], sparsity),
            lambda: select_masks([scores], sparsity),
        ):
            with pytest.raises(ValueError, match=r"`sparsity` must be .*\[0, 1\)"):
                fn()

    def test_unknown_comparison_group(self):
        with pytest.raises(ValueError, match="`comparison_group`.*'global'.*one sparsity"):
            select_masks([torch.rand(4, 4)], [0.5], "global")


def uniform_pool(seed=0, sizes=((512, 1024), (256, 512), (300_000,))):
    """~950k scores from U(0, 1) in three tensors: the fraction below t is t itself, up to pool noise."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(size, generator=generator) for size in sizes]


def achieved(pool, threshold):
    """Fraction of the pool at or below ``threshold`` (what pruning with ``score <= threshold`` reaches)."""
    return sum(int((t <= threshold).sum()) for t in pool) / sum(t.numel() for t in pool)


def achieved_many(pool, thresholds):
    # One sort of the pool, then a binary search per threshold: cheaper than a pass over it for each.
    ordered = torch.cat([t.reshape(-1) for t in pool]).sort().values
    counts = torch.searchsorted(ordered, torch.tensor(thresholds), right=True)
    return (counts.double() / ordered.numel()).tolist()


class TestSampledThreshold:
    @pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
    def test_error_bound(self, sparsity):
        pool, fraction = uniform_pool(), 0.01
        m = sum(math.ceil(fraction * t.numel()) for t in pool)
        std = math.sqrt(sparsity * (1 - sparsity) / m)
        thresholds = [sampled_threshold(pool, sparsity, fraction, seed) for seed in range(5)]
        assert achieved(pool, thresholds[0]) == pytest.approx(achieved_many(pool, thresholds[:1])[0])
        for value in achieved_many(pool, thresholds):
            assert abs(value - sparsity) < 4 * std

    def test_documented_std_is_the_error(self):
        # The spread over seeds matches sqrt(p(1-p)/m): the docstring's error is neither loose nor optimistic.
        pool, fraction, p = uniform_pool(), 0.005, 0.5
        m = sum(math.ceil(fraction * t.numel()) for t in pool)
        thresholds = [sampled_threshold(pool, p, fraction, seed) for seed in range(40)]
        errors = torch.tensor(achieved_many(pool, thresholds)) - p
        assert 0.5 < errors.std().item() / math.sqrt(p * (1 - p) / m) < 1.6

    def test_same_seed_same_threshold(self):
        a, b = uniform_pool(seed=7), uniform_pool(seed=7)  # separately created, same values
        torch.manual_seed(123)  # the global RNG plays no part
        first = sampled_threshold(a, 0.5, 0.01, seed=11)
        torch.rand(1000)
        assert sampled_threshold(b, 0.5, 0.01, seed=11) == first
        # Same logical values in another memory layout (a transposed Conv1D weight, say).
        relaid = [t.t().contiguous().t() if t.dim() == 2 else t for t in b]
        assert sampled_threshold(relaid, 0.5, 0.01, seed=11) == first

    def test_different_seeds_differ(self):
        pool = uniform_pool()
        thresholds = {sampled_threshold(pool, 0.5, 0.01, seed) for seed in range(5)}
        assert len(thresholds) >= 4

    def test_full_sample_of_unique_scores_is_exact_quantile(self):
        scores = torch.randperm(1000).float()
        assert sampled_threshold([scores], 0.25, 1.0, seed=0) == pytest.approx(249, abs=12)

    def test_zero_sparsity(self):
        assert sampled_threshold(uniform_pool(), 0.0, 0.01) == -math.inf

    @pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
    def test_bad_sample_fraction(self, fraction):
        with pytest.raises(ValueError, match="`sample_fraction`"):
            sampled_threshold([torch.rand(10)], 0.5, fraction)

    def test_select_masks_sampled(self):
        pool, p, fraction = uniform_pool(), 0.6, 0.01
        masks = select_masks(pool, p, "global", sample_fraction=fraction, seed=3)
        threshold = sampled_threshold(pool, p, fraction, seed=3)
        assert all(torch.equal(mask, t <= threshold) for mask, t in zip(masks, pool, strict=True))
        m = sum(math.ceil(fraction * t.numel()) for t in pool)
        pruned = sum(int(mask.sum()) for mask in masks) / sum(t.numel() for t in pool)
        assert abs(pruned - p) < 4 * math.sqrt(p * (1 - p) / m)
        again = select_masks(uniform_pool(), p, "global", sample_fraction=fraction, seed=3)
        assert all(torch.equal(x, y) for x, y in zip(masks, again, strict=True))

    def test_select_masks_falls_back_to_sampling_above_exact_limit(self):
        pool = [torch.rand(40, 40), torch.rand(100)]
        masks = select_masks(pool, 0.5, "global", exact_limit=1000, seed=4)
        threshold = sampled_threshold(pool, 0.5, 0.02, seed=4)
        assert all(torch.equal(mask, t <= threshold) for mask, t in zip(masks, pool, strict=True))


class TestApplyMask:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_in_place(self, dtype):
        self._check_in_place(torch.device("cpu"), dtype)

    @require_cuda
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_in_place_cuda(self, dtype):
        self._check_in_place(torch.device("cuda"), dtype)

    @staticmethod
    def _check_in_place(device, dtype):
        layer = torch.nn.Linear(16, 8).to(device=device, dtype=dtype)  # a Parameter that requires grad
        before = layer.weight.detach().clone()
        mask = lowest_k_mask(layer.weight.abs(), 0.5).cpu()  # a mask from another device is fine
        pointer = layer.weight.data_ptr()
        out = apply_mask_(layer.weight, mask)
        assert out is layer.weight and layer.weight.data_ptr() == pointer
        assert layer.weight.dtype == dtype and layer.weight.device.type == device.type
        mask = mask.to(device)
        assert (layer.weight[mask] == 0).all()
        assert torch.equal(layer.weight[~mask], before[~mask])  # bit-exact elsewhere
        assert int((layer.weight == 0).sum()) == 64

    def test_integer_mask_is_read_as_bool(self):
        weight = torch.ones(2, 3)
        apply_mask_(weight, torch.tensor([[1, 0, 0], [0, 0, 2]], dtype=torch.uint8))
        assert weight.tolist() == [[0, 1, 1], [1, 1, 0]]

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"mask shape \(3, 2\) does not match weight shape \(2, 3\)"):
            apply_mask_(torch.ones(2, 3), torch.zeros(3, 2, dtype=torch.bool))


class TestSparsityReport:
    def test_counts_per_layer_and_totals(self):
        model = make_tiny_llama()
        layers = find_prunable_layers(model)
        q = layers[0]
        baseline = measure_sparsity(model).total_zeros  # e.g. the zero embedding row of the pad token
        with torch.no_grad():
            q.weight.view(-1)[:100] = 0
            model.model.embed_tokens.weight[:2] = 0  # zeros outside the prunable weights
        report = measure_sparsity(model)
        assert [entry.name for entry in report.layers] == [layer.name for layer in layers]
        assert report.layers[0].zeros == 100 and report.layers[0].shape == list(q.weight.shape)
        assert report.layers[0].sparsity == pytest.approx(100 / q.weight.numel())
        assert all(entry.zeros == 0 for entry in report.layers[1:])
        prunable = sum(layer.weight.numel() for layer in layers)
        assert report.prunable_numel == prunable and report.prunable_zeros == 100
        assert report.sparsity == pytest.approx(100 / prunable)
        hidden = model.config.hidden_size
        assert report.total_parameters == sum(p.numel() for p in model.parameters())
        assert report.total_zeros == baseline + 100 + 2 * hidden
        assert report.overall_sparsity == pytest.approx(report.total_zeros / report.total_parameters)
        assert report.nm_compliant is None
        as_dict = report.to_dict()
        assert as_dict["prunable_zeros"] == 100 and len(as_dict["layers"]) == len(layers)
        assert "**prunable total**" in report.to_markdown()

    def test_tied_weights_counted_once(self):
        model = make_tiny_gpt2()
        unique = {p.data_ptr(): p.numel() for p in model.state_dict().values() if p.dtype.is_floating_point}
        report = measure_sparsity(model)
        assert model.lm_head.weight is model.transformer.wte.weight
        assert report.total_parameters == sum(p.numel() for p in model.parameters())
        assert report.total_parameters == sum(unique.values())

    @pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_gpt2])
    def test_nm_compliance_and_where(self, make):
        model = make()
        layers = find_prunable_layers(model)
        for layer in layers:
            matrix = layer.out_in(layer.weight)
            apply_mask_(layer.weight, layer.from_out_in(nm_mask(matrix.abs(), 2, 4)))
        report = measure_sparsity(model, pattern="2:4")
        assert report.nm_compliant is True
        assert all(entry.nm_violating_groups == 0 and entry.nm_first_violation is None for entry in report.layers)
        assert report.sparsity == pytest.approx(0.5)

        # Revive one pruned weight at (out row 3, input column 9) of the last layer: group 9 // 4 = 2.
        target = layers[-1]
        matrix = target.out_in(target.weight)
        columns = (matrix[3, 8:12] == 0).nonzero().reshape(-1)
        with torch.no_grad():
            matrix[3, 8 + int(columns[0])] = 1.0  # a view: writes through to the (possibly transposed) weight
        report = measure_sparsity(model, pattern="2:4")
        assert report.nm_compliant is False
        assert report.layers[-1].nm_violating_groups == 1
        assert report.layers[-1].nm_first_violation == [3, 2]
        assert all(entry.nm_violating_groups == 0 for entry in report.layers[:-1])
        assert "2:4 violations" in report.to_markdown()

    def test_pattern_that_cannot_apply(self):
        report = measure_sparsity(make_tiny_llama(), pattern="2:5")  # input sizes 32 and 64 are not multiples of 5
        assert all(entry.nm_violating_groups == -1 for entry in report.layers)
        assert report.nm_compliant is False

    def test_bad_pattern(self):
        with pytest.raises(ValueError, match="`pattern`.*'2:4:8'"):
            measure_sparsity(make_tiny_llama(), pattern="2:4:8")

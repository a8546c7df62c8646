"""The probe rule as pure functions: candidates, protection, exact quotas."""

import pytest
import torch

from hf_gradprobe.oneshot.decision import (
    candidate_sparsity,
    nm_candidate_count,
    probe_masks,
    probed_gradient,
    propose_candidates,
    selection_keys,
)


def _ones(x):
    return torch.ones_like(x)


def test_grown_gradient_protects_a_candidate_and_flat_one_is_pruned():
    # One row of 8 weights, prune 2. Candidates (ratio 1.5) are the 3 lowest scores: columns 0, 1, 2.
    scores = torch.tensor([[0.1, 0.2, 0.3, 5.0, 6.0, 7.0, 8.0, 9.0]])
    candidates = propose_candidates([scores], 0.25, "per_row", None, 1.5)[0]
    assert candidates[0].tolist() == [True, True, True] + [False] * 5
    g0 = _ones(scores)
    g1 = _ones(scores)
    g1[0, 0] = 40.0  # the lowest-score candidate's gradient grew: the loss leans on it once others shrink
    masks = probe_masks([scores], [_ones(scores)], [candidates], [g0], [g1], 0.25, "per_row", None, 0.0, 1.0)
    assert masks[0][0].tolist() == [False, True, True] + [False] * 5
    # with no gradient weight, the strategy order alone decides
    plain = probe_masks([scores], [_ones(scores)], [candidates], [g0], [g1], 0.25, "per_row", None, 0.0, 0.0)
    assert plain[0][0].tolist() == [True, True, False] + [False] * 5


def test_threshold_decides_whether_growth_counts():
    scores = torch.tensor([[0.1, 0.2, 0.3, 5.0]])
    candidates = torch.tensor([[True, True, True, False]])
    g0 = _ones(scores)
    g1 = torch.tensor([[4.0, 1.0, 1.0, 1.0]])  # +300% on the first candidate
    below = probe_masks([scores], [_ones(scores)], [candidates], [g0], [g1], 0.25, "per_row", None, 2.0, 1.0)
    above = probe_masks([scores], [_ones(scores)], [candidates], [g0], [g1], 0.25, "per_row", None, 5.0, 1.0)
    assert below[0][0].tolist() == [False, True, False, False]  # growth 3 > 2: judged on g1, kept
    assert above[0][0].tolist() == [True, False, False, False]  # growth 3 <= 5: judged on g0


def test_probed_gradient_and_weight_magnitude():
    g0 = torch.tensor([1.0, 1.0, 0.0])
    g1 = torch.tensor([3.0, 0.5, 2.0])
    assert probed_gradient(g0, g1, 0.0).tolist() == [3.0, 1.0, 2.0]
    # |W| scales the gradient term: a tiny weight with a large gradient is still cheap to prune
    scores = torch.tensor([[1.0, 1.0, 9.0]])
    weights = torch.tensor([[0.001, 1.0, 1.0]])
    keys = selection_keys(
        scores, weights, torch.tensor([[True, True, False]]), _ones(scores), torch.tensor([[50.0, 1.0, 1.0]]), 0.0, 1.0
    )
    assert keys[0, 0] < keys[0, 1] and keys[0, 2] == float("inf")


@pytest.mark.parametrize("group", ["per_row", "per_layer", "global"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_exact_quota_in_every_group(group, sparsity):
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(16, 24, generator=gen), torch.rand(8, 40, generator=gen)]
    g0 = [torch.rand(s.shape, generator=gen) for s in scores]
    g1 = [torch.rand(s.shape, generator=gen) for s in scores]
    candidates = propose_candidates(scores, sparsity, group, None, 1.3)
    masks = probe_masks(scores, [_ones(s) for s in scores], candidates, g0, g1, sparsity, group, None, 0.0, 1.0)
    for m, c in zip(masks, candidates, strict=True):
        assert not (m & ~c).any(), "only candidates may be pruned"
    if group == "per_row":
        for m in masks:
            assert (m.sum(dim=1) == round(sparsity * m.shape[1])).all()
    elif group == "per_layer":
        for m in masks:
            assert m.sum() == round(sparsity * m.numel())
    else:
        total = sum(m.numel() for m in masks)
        assert sum(int(m.sum()) for m in masks) == round(sparsity * total)


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_nm_quota_and_candidates(pattern, n, m):
    gen = torch.Generator().manual_seed(1)
    scores = [torch.rand(6, 32, generator=gen)]
    g0 = [torch.rand(6, 32, generator=gen)]
    g1 = [torch.rand(6, 32, generator=gen)]
    candidates = propose_candidates(scores, 0.0, "per_row", pattern, 1.25)
    per_group = candidates[0].reshape(-1, m).sum(dim=1)
    assert (per_group == nm_candidate_count(n, m, 1.25)).all()
    masks = probe_masks(scores, scores, candidates, g0, g1, 0.0, "per_row", pattern, 0.0, 1.0)
    assert (masks[0].reshape(-1, m).sum(dim=1) == m - n).all()
    assert not (masks[0] & ~candidates[0]).any()


def test_candidate_counts():
    assert nm_candidate_count(2, 4, 1.0) == 2
    assert nm_candidate_count(2, 4, 1.25) == 3
    assert nm_candidate_count(2, 4, 3.0) == 4  # never more than the group
    assert candidate_sparsity(0.5, 1.25) == 0.625
    assert candidate_sparsity(0.9, 2.0) < 1.0
    assert candidate_sparsity(0.0, 2.0) == 0.0

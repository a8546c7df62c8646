# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Two CPU processes (gloo DDP) prune with the sampled threshold and end with identical masks."""

from pathlib import Path

import pytest
import torch
from testing_utils import run_on_two_gloo_ranks


SCRIPT = Path(__file__).with_name("training_ddp_script.py")


@pytest.mark.distributed
def test_masks_identical_on_two_gloo_ranks(tmp_path):
    run_on_two_gloo_ranks(SCRIPT, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    # The ranks ran this checkout's package, whatever else is installed.
    root = Path(__file__).resolve().parents[2]
    assert all(Path(rank["package"]).resolve().is_relative_to(root) for rank in ranks), ranks[0]["package"]
    assert ranks[0]["mask_updates"] == ranks[1]["mask_updates"] == 5  # steps 2, 4, 6, 8, 10
    assert ranks[0]["threshold"] == ranks[1]["threshold"]
    # Each rank computed its masks on its own and agreed with rank 0 before the broadcast.
    assert ranks[0]["rank_disagreements"] == ranks[1]["rank_disagreements"] == 0
    for mask_0, mask_1 in zip(ranks[0]["masks"], ranks[1]["masks"], strict=True):
        assert torch.equal(mask_0, mask_1)
    assert ranks[0]["sparsity"] == pytest.approx(0.5, abs=0.03)
    for name, weight in ranks[0]["weights"].items():
        assert torch.equal(weight, ranks[1]["weights"][name]), name

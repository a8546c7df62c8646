# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Real-model checks on SmolLM2-135M from the packaged GGUF (offline). Run with ``pytest -m slow``."""

import os

import pytest
import torch
from testing_utils import WIKITEXT_TEST, require_smollm2

from hf_gradprobe.evaluation import compute_perplexity
from hf_gradprobe.models import SMOLLM2_HUB_ID, load_model


pytestmark = [pytest.mark.slow, require_smollm2]

REFERENCE_PERPLEXITY = 24.01  # dense SmolLM2-135M-Instruct, fp32, first 32 windows of 1024 tokens of wiki.test.raw
TOLERANCE = 0.2


@pytest.fixture(scope="module")
def smollm2():
    # conftest pins one thread for tiny models; a 135M model wants every core.
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield load_model()  # HF_HUB_OFFLINE=1: the packaged GGUF, rebuilt as a float model
    finally:
        torch.set_num_threads(threads)


def test_plain_float_model_that_saves_and_reloads(smollm2, tmp_path):
    model, tokenizer = smollm2
    assert tokenizer is not None and tokenizer.bos_token_id is not None
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config._name_or_path == SMOLLM2_HUB_ID and not model.training
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6

    model.save_pretrained(tmp_path / "smollm2")
    tokenizer.save_pretrained(tmp_path / "smollm2")
    reloaded, reloaded_tokenizer = load_model(str(tmp_path / "smollm2"))
    original = model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    text = "The quick brown fox"
    assert reloaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.skipif(not WIKITEXT_TEST.is_file(), reason=f"reference data {WIKITEXT_TEST} is absent")
def test_reference_perplexity(smollm2):
    model, tokenizer = smollm2
    result = compute_perplexity(model, tokenizer, str(WIKITEXT_TEST), seq_len=1024, max_windows=32, progress=False)
    assert result.windows == 32 and result.tokens == 32 * 1023
    assert abs(result.perplexity - REFERENCE_PERPLEXITY) <= TOLERANCE, result

# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Offline test session and tiny-model fixtures (factories live in ``testing_utils.py``)."""

import os


# Before anything imports huggingface_hub/datasets/evaluate: they read these once, at import.
for _variable in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_variable] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from testing_utils import (  # noqa: E402
    make_tiny_bert,
    make_tiny_gpt2,
    make_tiny_llama,
    make_tiny_mistral,
    make_tiny_tokenizer,
)


# Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spinning threads make each
# forward pass ~100x slower. Tests that run a real model raise it back (see test_real_model.py).
torch.set_num_threads(int(os.environ.get("HF_GRADPROBE_TEST_THREADS", "1")))


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def tiny_mistral():
    return make_tiny_mistral()


@pytest.fixture
def tiny_gpt2():
    return make_tiny_gpt2()


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    # Read-only in every test, and the slowest thing to build: one per session.
    return make_tiny_tokenizer()

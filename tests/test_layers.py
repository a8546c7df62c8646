# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Discovery of prunable layers on Llama, Mistral, GPT-2 (Conv1D) and BERT."""

import re

import pytest
import torch
from testing_utils import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, make_tiny_mistral
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_gradprobe.core.layers import find_prunable_layers, find_repeated_blocks, group_by_block


# factory, blocks prefix, prunable layers per block
ARCHITECTURES = {
    "llama": (make_tiny_llama, "model.layers", 7),
    "mistral": (make_tiny_mistral, "model.layers", 7),
    "gpt2": (make_tiny_gpt2, "transformer.h", 4),
    "bert": (make_tiny_bert, "bert.encoder.layer", 6),
}


def expected_names(model, prefix):
    """Linear/Conv1D modules under the blocks, found independently of the library's walk."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.\d+\.")
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and pattern.match(name)
    ]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_discovery(arch):
    make, prefix, per_block = ARCHITECTURES[arch]
    model = make()
    layers = find_prunable_layers(model)
    names = [layer.name for layer in layers]
    assert names == expected_names(model, prefix)
    assert len(layers) == per_block * model.config.num_hidden_layers
    assert find_repeated_blocks(model)[0] == prefix
    for layer in layers:
        assert layer.weight is layer.module.weight and layer.weight.dim() == 2
        assert layer.param_name == f"{layer.name}.weight"
        assert layer.block_index == int(layer.name[len(prefix) + 1 :].split(".")[0])
    # Embeddings, LM/MLM heads, norms and biases stay dense.
    assert not any(re.search(r"embed|wte|wpe|lm_head|norm|ln_|LayerNorm|cls\.|pooler", n) for n in names)
    prunable_ids = {id(layer.weight) for layer in layers}
    for name, param in model.named_parameters():
        if name.endswith("bias") or param.dim() != 2:
            assert id(param) not in prunable_ids, name


@pytest.mark.parametrize("tied", [False, True])
def test_lm_head_excluded_tied_or_not(tied):
    model = make_tiny_llama(tie_word_embeddings=tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) is tied
    weights = {id(layer.weight) for layer in find_prunable_layers(model)}
    assert id(model.lm_head.weight) not in weights and id(model.model.embed_tokens.weight) not in weights


def test_bert_head_linear_outside_blocks_excluded():
    model = make_tiny_bert()
    assert isinstance(model.cls.predictions.transform.dense, nn.Linear)
    assert "cls.predictions.transform.dense" not in [layer.name for layer in find_prunable_layers(model)]


class TestConv1D:
    def test_transposed_orientation(self):
        model = make_tiny_gpt2()
        for layer in find_prunable_layers(model):
            module = layer.module
            assert isinstance(module, Conv1D) and layer.transposed
            # Conv1D stores (in, out); out_in gives (out, in) like nn.Linear.
            assert tuple(layer.out_in(layer.weight).shape) == (module.nf, module.weight.shape[0])
            assert torch.equal(layer.from_out_in(layer.out_in(layer.weight)), layer.weight)

    @pytest.mark.parametrize("make", [make_tiny_gpt2, make_tiny_llama])
    def test_out_in_row_is_an_output_unit(self, make):
        # Zeroing row r of the (out, in) view silences output feature r, whatever the storage layout.
        layer = find_prunable_layers(make())[0]
        module = layer.module
        with torch.no_grad():
            layer.out_in(layer.weight)[5] = 0
            x = torch.randn(3, layer.out_in(layer.weight).shape[1])
            out = module(x)
        bias = module.bias[5] if module.bias is not None else torch.tensor(0.0)
        assert torch.allclose(out[:, 5], bias.expand(3))
        assert not torch.allclose(out[:, 4], bias.expand(3))

    def test_linear_not_transposed(self):
        layer = find_prunable_layers(make_tiny_llama())[0]
        assert not layer.transposed and layer.out_in(layer.weight) is layer.weight


class TestTargetsIgnore:
    def test_targets_replace_scope(self):
        model = make_tiny_llama()
        layers = find_prunable_layers(model, targets=r"mlp\.down_proj")
        assert [layer.name for layer in layers] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]

    def test_targets_can_reach_outside_blocks(self):
        layers = find_prunable_layers(make_tiny_llama(), targets=["lm_head", r"layers\.1\.self_attn\.q_proj"])
        assert [(layer.name, layer.block_index) for layer in layers] == [
            ("model.layers.1.self_attn.q_proj", 1),
            ("lm_head", None),
        ]
        assert [block for block, _ in group_by_block(layers)] == [1, None]

    def test_ignore_removes(self):
        layers = find_prunable_layers(make_tiny_gpt2(), ignore=[r"\.attn\."])
        assert [layer.name.split(".", 3)[-1] for layer in layers] == ["mlp.c_fc", "mlp.c_proj"] * 2

    def test_ignore_applies_to_targets(self):
        layers = find_prunable_layers(make_tiny_mistral(), targets=r"proj$", ignore=r"layers\.0\.|o_proj|lm_head")
        assert len(layers) == 6 and all(layer.block_index == 1 for layer in layers)

    def test_targets_matching_nothing(self):
        with pytest.raises(ValueError, match=r"Nothing to prune.*targets=.*'no_such_layer'"):
            find_prunable_layers(make_tiny_llama(), targets="no_such_layer")

    def test_ignore_removing_everything(self):
        with pytest.raises(ValueError, match=r"Nothing to prune.*ignore='\.\*'"):
            find_prunable_layers(make_tiny_bert(), ignore=".*")

    @pytest.mark.parametrize("argument", ["targets", "ignore"])
    def test_bad_regex_names_argument(self, argument):
        with pytest.raises(ValueError, match=rf"`{argument}` entry '\(unclosed' is not a valid regular expression"):
            find_prunable_layers(make_tiny_llama(), **{argument: ["ok", "(unclosed"]})


class TestNothingToPrune:
    def test_blocks_without_linear(self):
        class NormsOnly(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(10, 4)
                self.layers = nn.ModuleList(nn.LayerNorm(4) for _ in range(3))
                self.head = nn.Linear(4, 10)

        with pytest.raises(ValueError, match="Nothing to prune in NormsOnly.*`layers`"):
            find_prunable_layers(NormsOnly())

    def test_no_blocks_at_all(self):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        with pytest.raises(ValueError, match="repeated blocks of Sequential.*`targets`"):
            find_prunable_layers(model)
        # targets make it prunable anyway
        assert [layer.name for layer in find_prunable_layers(model, targets=r"^\d+$")] == ["0", "2"]

    def test_repeated_blocks_prefer_no_split_modules(self):
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(4, 4)

        class Model(nn.Module):
            _no_split_modules = ("Block",)

            def __init__(self):
                super().__init__()
                self.blocks = nn.ModuleList(Block() for _ in range(2))
                self.adapters = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))  # longer, but not the blocks

        name, blocks = find_repeated_blocks(Model())
        assert name == "blocks" and len(blocks) == 2
        Model._no_split_modules = []
        assert find_repeated_blocks(Model())[0] == "adapters"  # otherwise the longest list wins

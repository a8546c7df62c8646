# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Model card rendering, the per-layer plot, and the rendered example in model_cards/."""

import importlib.resources
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hf_gradprobe.sharing.card import TEMPLATE_PATH, build_model_card, describe_dataset
from hf_gradprobe.sharing.plot import plot_layer_sparsity
from hf_gradprobe.sharing.redaction import format_command, redact


REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CARD = REPO_ROOT / "model_cards" / "example_smollm2_gradprobe_50.md"
EXAMPLE_METADATA = REPO_ROOT / "model_cards" / "example_smollm2_gradprobe_50.pruning_config.json"
EXAMPLE_REPO_ID = "your-name/SmolLM2-135M-Instruct-gradprobe-50"

LAYERS = [
    {"name": f"model.layers.{b}.{kind}", "shape": [8, 16], "numel": 128, "zeros": 64 + b, "sparsity": (64 + b) / 128}
    for b in range(3)
    for kind in ("self_attn.q_proj", "mlp.down_proj")
]
LEAD_METADATA = {  # the shape of prune_pretrained's report: settings under "config", measured figures on top
    "method": "gradprobe",
    "config": {
        "target_sparsity": 0.5,
        "strategy": "wanda",
        "probe": True,
        "pattern": "2:4",
        "comparison_group": "per_row",
        "calibration_seed": 0,
    },
    "sparsity": 0.5,
    "overall_sparsity": 0.37,
    "layers": LAYERS,
    "calibration": {"source": "/home/me/data/wikitext-2/valid.txt", "num_samples": 64, "seq_len": 512, "seed": 0},
    "hf_gradprobe_version": "0.1.0",
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "perplexity_before": 24.01,
    "perplexity_after": 40.1,
    "perplexity_eval": {"data": "wikitext-2-raw test", "seq_len": 1024, "windows": 32},
    "seconds": 123.4,
    "peak_memory_bytes": 2_500_000_000,
    "architecture": "LlamaForCausalLM",
}


def test_card_metadata_and_sections():
    card = build_model_card(LEAD_METADATA, repo_id="me/smol-2of4", card_data={"license": "apache-2.0"})
    parsed = ModelCard(str(card))  # what the Hub reads back
    data = parsed.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation" and data.license == "apache-2.0"
    assert {"pruned", "sparse", "hf_gradprobe", "gradprobe", "2-4-sparsity"} <= set(data.tags)
    assert data.datasets == ["Salesforce/wikitext"]
    (result,) = data.eval_results
    assert (
        result.metric_type,
        result.metric_value,
        result.dataset_type,
        result.dataset_config,
        result.dataset_split,
    ) == ("perplexity", 40.1, "Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    assert data.model_name == "smol-2of4"

    text = parsed.text
    assert "# smol-2of4" in text and 'from_pretrained("me/smol-2of4")' in text
    assert "24.01 before, **40.10** after" in text
    assert "![Sparsity of each prunable layer](sparsity_per_layer.png)" in text
    assert "| model.layers.2.mlp.down_proj | 8x16 | 66 | 51.56% | ? | ? |" in text
    assert "| target sparsity | 50% |" in text and "| seed | 0 |" in text
    assert "(strategy `wanda`, gradient probe)" in text and "| structure | 2:4 semi-structured" in text
    assert "The file is not smaller" in text and "not faster" in text
    assert "2:4 pattern is the exception" in text and "to_sparse_semi_structured" in text
    assert "`.../wikitext-2/valid.txt`" in text and "/home/me" not in text  # settings block shortened too
    assert '"source": ".../wikitext-2/valid.txt"' in text
    assert "hf-gradprobe inspect me/smol-2of4 --pattern 2:4" in text
    # No command recorded: code rebuilt from the recorded settings, and the card says so.
    assert "calibration='.../wikitext-2/valid.txt'," in text and "No command was recorded" in text


def test_unstructured_card_has_no_nm_claim_and_no_model_index_without_perplexity():
    meta = {k: v for k, v in LEAD_METADATA.items() if not k.startswith("perplexity")}
    meta.update(
        config={**LEAD_METADATA["config"], "pattern": "unstructured"},
        base_model="/local/folder",
        command="hf-gradprobe prune m --target-sparsity 0.5",
    )
    card = build_model_card(meta)
    assert card.data.eval_results is None and card.data.base_model is None  # local paths are not Hub ids
    assert "pattern is the exception" not in card.text and "unstructured sparse" in card.text
    assert "| perplexity | not measured |" in card.text
    assert "```bash\nhf-gradprobe prune m --target-sparsity 0.5\n```" in card.text
    assert "No command was recorded" not in card.text


def test_card_states_the_fine_tuning_after_pruning():
    training = {
        "pruning_method": "fixed",
        "max_steps": 32,
        "tokens": 32768,
        "train_file": "/home/me/data/wikitext-2/valid.txt",
        "learning_rate": 1e-4,
        "one_shot_perplexity": 38.67,
    }
    text = build_model_card({**LEAD_METADATA, "training": training}).text
    row = next(line for line in text.splitlines() if line.startswith("| fine-tuning after pruning |"))
    assert "the zeros kept (`fixed` masks), 32 steps (32,768 tokens)" in row and "learning rate 0.0001" in row
    assert "`.../wikitext-2/valid.txt`" in row and "/home/me" not in row and "perplexity 38.67 before it" in row
    assert "fine-tuning after pruning" not in build_model_card(LEAD_METADATA).text


def test_card_reads_settings_from_the_top_level_without_a_config():
    # e.g. metadata written by training code: no "config", the target and the method at the top level.
    card = build_model_card({"method": "bitter7", "target_sparsity": 0.6, "comparison_group": "per_layer"})
    assert "| target sparsity | 60% |" in card.text and "weights compared per layer" in card.text
    assert "    target_sparsity=0.6,\n    comparison_group='per_layer',\n)" in card.text


def test_card_renders_from_empty_or_partial_metadata():
    card = build_model_card({})
    assert "# pruned-model" in card.text and "Sparsity per layer" not in card.text
    assert card.data.tags == ["hf_gradprobe"]  # nothing says it was pruned
    assert build_model_card({"method": "wanda"}).data.tags == ["pruned", "sparse", "hf_gradprobe", "wanda"]
    card = build_model_card(
        {"method": "magnitude", "layers": [{"name": "fc", "numel": 4, "zeros": 2}]}, plot_file=None
    )
    assert "| fc | ? | 2 | 50.00% |" in card.text and "](sparsity_per_layer.png)" not in card.text
    with pytest.raises(TypeError, match="metadata"):
        build_model_card(["not", "a", "dict"])


def test_tokens_never_reach_the_card():
    token = "hf_" + "A1b2C3d4" * 5
    assert (
        format_command(["x", "--token", token, "--out", "d"], prefix="hf-gradprobe")
        == "hf-gradprobe --token *** --out d"
    )
    assert format_command(["x", f"--hub-token={token}"], prefix="p") == "p --hub-token=***"
    assert redact(f"HF_TOKEN={token} rest") == "HF_TOKEN=*** rest"
    card = build_model_card({"command": f"prune --secret {token}"})
    assert token not in str(card)


def test_every_secret_is_redacted_from_the_command_card_and_pruning_config(tmp_path):
    from testing_utils import make_tiny_llama

    from hf_gradprobe.sharing.save import save_pruned

    argv = ["x", "--token", "s3cr3t", "--hub_token=h0bt0k", "--api-key", "k3y", "--tokenizer", "tok", "--seq_len", "8"]
    assert (
        format_command(argv, prefix="p") == "p --token *** --hub_token=*** --api-key *** --tokenizer tok --seq_len 8"
    )
    assert format_command(["x", "HF_TOKEN=envt0k", "--out", "d"], prefix="p") == "p HF_TOKEN=*** --out d"
    assert (
        redact("DB_PASSWORD=pw1 python run.py --secret pw2 tokens: 5")
        == "DB_PASSWORD=*** python run.py --secret *** tokens: 5"
    )
    metadata = {
        "method": "magnitude",
        "token": "m3tat0k",
        "extra": {"nested": {"hub_token": "n3st3d", "notes": ["hf_" + "Zz9" * 8]}, "tokens": 12},
    }
    command = 'HF_TOKEN=envt0k python prune.py --token s3cr3t --hub_token=h0bt0k \'metadata={"password": "pw"}\''
    out = save_pruned(make_tiny_llama(), tmp_path / "out", metadata=metadata, command=command, plot=False)
    written = (out / "README.md").read_text() + (out / "pruning_config.json").read_text()
    for secret in ("s3cr3t", "h0bt0k", "envt0k", "m3tat0k", "n3st3d", "Zz9Zz9", '"pw"'):
        assert secret not in written, secret
    saved = json.loads((out / "pruning_config.json").read_text())
    assert saved["token"] == "***" and saved["extra"]["tokens"] == 12  # counts named "tokens" are kept


def test_a_model_never_pruned_is_not_described_as_pruned(tmp_path):
    from testing_utils import make_tiny_llama

    from hf_gradprobe.core.layers import find_prunable_layers
    from hf_gradprobe.sharing.save import save_pruned

    model = make_tiny_llama()
    with torch.no_grad():
        find_prunable_layers(model)[0].weight[0, :2] = 0  # a few zeros, as any dense model may hold
    with pytest.warns(UserWarning, match="not pruned"):
        out = save_pruned(model, tmp_path / "dense", plot=False)
    card = ModelCard.load(out / "README.md")
    assert "pruned" not in card.data.tags and "sparse" not in card.data.tags
    assert "pruned with" not in card.text and "(unknown" not in card.text
    assert "A model that is not pruned: no pruning is recorded" in card.text


def test_describe_dataset():
    assert describe_dataset("../shared/data/wikitext-2-raw/wiki.test.raw") == (
        "Salesforce/wikitext",
        "wikitext-2-raw-v1",
        "test",
    )
    assert describe_dataset("wikitext-2/valid.txt") == ("Salesforce/wikitext", "wikitext-2-v1", "validation")
    assert describe_dataset("allenai/c4") == ("allenai/c4", None, None)
    assert describe_dataset("my_corpus.txt")[0] is None and describe_dataset(None) == (None, None, None)


def test_plot_is_a_png_for_block_and_flat_layer_names(tmp_path):
    flat = [{"name": "fc1", "numel": 10, "zeros": 3}, {"name": "fc2", "numel": 10, "zeros": 6}, {"name": "fc3"}]
    for name, layers in [("blocks", LAYERS), ("flat", flat)]:
        path = plot_layer_sparsity(layers, tmp_path / f"{name}.png", target=0.5)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def _uniform_layers(stats):
    """Per-row pruning: every layer exactly 50% sparse, with the per-layer figures the one-shot report records."""
    return [
        {"name": f"model.layers.{b}.{kind}", "numel": 128, "zeros": 64, "sparsity": 0.5, **stats(b, i)}
        for b in range(3)
        for i, kind in enumerate(("self_attn.q_proj", "mlp.down_proj"))
    ]


def test_plot_of_a_uniform_sparsity_model_shows_what_differs_between_layers(tmp_path):
    from hf_gradprobe.sharing.plot import PLOT_KINDS, plot_kind

    probe = _uniform_layers(lambda b, i: {"candidates": 80, "restored": 16 - 4 * b + i})
    reconstruction = _uniform_layers(
        lambda b, i: {
            "candidates": 80,
            "restored": 16,
            "output_error_pruned": 0.3 + 0.1 * b,
            "output_error": 0.1 + b / 20,
        }
    )
    plain = _uniform_layers(lambda b, i: {"candidates": 64, "restored": 0})  # no probe: nothing restored
    assert (
        plot_kind(probe) == "restored"
        and plot_kind(reconstruction) == "output_error"
        and plot_kind(LAYERS) == "sparsity"
    )
    assert plot_kind(plain) is None
    images = {}
    for name, layers in [("probe", probe), ("reconstruction", reconstruction), ("sparsity", LAYERS)]:
        path = plot_layer_sparsity(layers, tmp_path / f"{name}.png", target=0.5)
        images[name] = path.read_bytes()
        assert images[name][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(set(images.values())) == 3
    assert plot_layer_sparsity(plain, tmp_path / "plain.png") is None and not (tmp_path / "plain.png").exists()
    # The card describes what the plot shows, or says that every layer has the same sparsity.
    card = build_model_card({"method": "gradprobe", "sparsity": 0.5, "layers": probe}).text
    assert f"![{PLOT_KINDS['restored'][2]}](sparsity_per_layer.png)" in card
    card = build_model_card({"method": "magnitude", "sparsity": 0.5, "layers": plain}).text
    assert (
        "Every prunable layer is 50% sparse (so there is no plot)." in card and "](sparsity_per_layer.png)" not in card
    )


def test_card_snippet_runs_as_written_with_valid_settings(monkeypatch):
    import dataclasses

    import hf_gradprobe

    calls = {}

    def fake_prune(model_or_id, config=None, calibration=None, **kwargs):
        calls.update(model_or_id=model_or_id, calibration=calibration, **kwargs)
        return "model", "tokenizer"

    monkeypatch.setattr(hf_gradprobe, "prune_pretrained", fake_prune)
    monkeypatch.setattr(hf_gradprobe, "save_pruned", lambda model, out, tokenizer=None: calls.update(saved=out))
    metadata = json.loads(EXAMPLE_METADATA.read_text())
    metadata.pop("command")
    for meta in (
        metadata,
        LEAD_METADATA,
        {"method": "bitter7", "target_sparsity": 0.6, "comparison_group": "per_layer"},
    ):
        calls.clear()
        text = build_model_card(meta, repo_id="me/x").text
        code = re.search(r"```python\n(import hf_gradprobe\n.*?)```", text, re.DOTALL).group(1)
        exec(compile(code, "card-snippet", "exec"), {})  # noqa: S102 - the card's own snippet, the point of the test
        settings = {
            k: calls.pop(k)
            for k in list(calls)
            if k in {f.name for f in dataclasses.fields(hf_gradprobe.GradProbeConfig)}
        }
        hf_gradprobe.GradProbeConfig(**settings)  # a valid config (its __post_init__ validates)
        assert calls.pop("return_tokenizer") is True and calls.pop("saved") == "x"
        assert set(calls) == {"model_or_id", "calibration"}, calls  # nothing prune_pretrained would refuse
        expected = {k: v for k, v in (meta.get("config") or meta).items() if k in settings}
        assert settings == expected
    assert calls["calibration"] is None and calls["model_or_id"] == "<base model>"


def test_missing_matplotlib_gives_a_card_without_plot(tmp_path, monkeypatch, tiny_llama):
    from hf_gradprobe.sharing.save import save_pruned

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_layer_sparsity(LAYERS, tmp_path / "x.png")
    with pytest.warns(UserWarning, match="not pruned"):
        out = save_pruned(tiny_llama, tmp_path / "out")
    assert not (out / "sparsity_per_layer.png").exists()
    assert "](sparsity_per_layer.png)" not in (out / "README.md").read_text()


def test_template_ships_inside_the_package():
    packaged = importlib.resources.files("hf_gradprobe") / "sharing" / "templates" / "pruned_model_card.md"
    assert packaged.is_file() and Path(str(packaged)) == TEMPLATE_PATH
    setup = (REPO_ROOT / "setup.py").read_text()
    assert '"sharing/templates/*.md"' in setup


# The example card: regenerated from the metadata saved beside it and compared, with the fields that
# change from run to run or version to version (versions, timing, memory) normalised on both sides.
_VOLATILE = [
    (re.compile(r"(- (?:hf_gradprobe|transformers|torch|huggingface_hub): ).*"), r"\1<version>"),
    (re.compile(r'("(?:hf_gradprobe_version|transformers|torch|huggingface_hub)": )"[^"]*"'), r'\1"<version>"'),
    (re.compile(r'("(?:seconds|peak_memory_bytes|memory_before_bytes|extra_memory_bytes)": )[0-9.e+-]+'), r"\1<n>"),
    (re.compile(r"(\| pruning cost \| ).*( \|)"), r"\1<cost>\2"),
    (re.compile(r'("device": )"[^"]*"'), r'\1"<device>"'),
]


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def render_example() -> str:
    metadata = json.loads(EXAMPLE_METADATA.read_text())
    card = build_model_card(
        metadata,
        repo_id=EXAMPLE_REPO_ID,
        plot_file="example_smollm2_gradprobe_50.png",
        card_data={"license": "apache-2.0", "language": ["en"]},
    )
    return str(card)


def test_example_card_is_what_the_template_renders():
    if os.environ.get("HF_GRADPROBE_REGENERATE_CARDS") == "1":
        EXAMPLE_CARD.write_text(render_example())
    expected = EXAMPLE_CARD.read_text()
    assert normalise(render_example()) == normalise(expected), (
        "model_cards/example card is out of date with the template: regenerate it with "
        "`HF_GRADPROBE_REGENERATE_CARDS=1 pytest tests/test_card.py -k example` and review the diff."
    )
    assert ModelCard(expected).data.eval_results  # the example shows a model-index


def test_card_carries_the_base_models_license(tmp_path, tiny_tokenizer):
    from testing_utils import make_tiny_llama

    from hf_gradprobe.models import SMOLLM2_HUB_ID, base_model_license, load_model
    from hf_gradprobe.sharing.metadata import build_pruning_metadata

    base = tmp_path / "base"
    make_tiny_llama().save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    (base / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n\n# A base model\n")
    model, _ = load_model(str(base))
    meta = build_pruning_metadata(model, {"method": "magnitude"})
    assert meta["base_model_license"] == "mit" == base_model_license(str(base))
    assert build_model_card(meta).data.license == "mit"
    assert build_model_card(meta, card_data={"license": "other"}).data.license == "other"  # the caller decides
    # The packaged SmolLM2 has no README beside it: the package knows its license.
    assert base_model_license(None, SMOLLM2_HUB_ID) == "apache-2.0"
    assert base_model_license(str(tmp_path / "nowhere"), "someone/unknown-model") is None
    assert "license" not in build_model_card({"method": "magnitude"}).data.to_dict()


def test_card_yaml_round_trips_through_huggingface_hub_offline():
    import yaml
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    text = str(build_model_card(LEAD_METADATA, repo_id="me/smol-2of4", card_data={"license": "apache-2.0"}))
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "apache-2.0" and header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    name, results = model_index_to_eval_results(header["model-index"])
    assert name == "smol-2of4" and eval_results_to_model_index(name, results) == header["model-index"]
    (result,) = results
    assert result.dataset_name == "WikiText-2 (raw, test)" and "/" not in result.dataset_name
    assert (result.dataset_type, result.metric_type, result.metric_value) == (
        "Salesforce/wikitext",
        "perplexity",
        40.1,
    )
    data = ModelCardData(**header)  # what huggingface_hub builds from the YAML, and writes back the same
    assert yaml.safe_load(data.to_yaml()) == header
    assert ModelCard(text).data.to_dict() == data.to_dict()


def test_top_level_settings_are_config_fields_in_their_order():
    import dataclasses

    from hf_gradprobe.oneshot.config import GradProbeConfig
    from hf_gradprobe.sharing.metadata import TOP_LEVEL_SETTINGS

    fields = [f.name for f in dataclasses.fields(GradProbeConfig)]
    assert set(TOP_LEVEL_SETTINGS) <= set(fields)
    assert sorted(TOP_LEVEL_SETTINGS, key=fields.index) == list(TOP_LEVEL_SETTINGS)


def test_the_snippet_passes_the_recorded_config_in_its_order():
    config = {"pattern": "2:4", "target_sparsity": 0.5, "gradient_threshold": None, "strategy": "wanda"}
    text = build_model_card({"method": "wanda", "config": config}).text
    assert "    pattern='2:4',\n    target_sparsity=0.5,\n    strategy='wanda',\n)" in text  # None left out

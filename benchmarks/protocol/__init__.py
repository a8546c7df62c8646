# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The benchmarks' shared protocol: data splits enforced in code, typed row specs, one fresh process per row.

Used by ``benchmarks/oneshot.py`` (test texts), ``benchmarks/tune_oneshot.py`` (validation texts only),
``benchmarks/order_time.py``, ``benchmarks/block_memory.py``, the finetune part of ``benchmarks/training.py`` and
``benchmarks/llmcompressor_baseline.py`` (in its own virtual environment)::

    python benchmarks/oneshot.py --rows wanda --patterns unstructured@0.5      # a row on the test texts
    python benchmarks/tune_oneshot.py --patterns 2:4                            # a grid on the validation texts

One concept per module:

* ``splits``: the texts (the full WikiText-2 test at 2048 among them), the calibration windows of each seed
  (``calibration_window_starts``), the validation windows disjoint from those of every seed, and the rule that
  tuning never reads a test text;
* ``specs``: the typed specs (``Pattern``, ``RowSpec``, ``RunOptions``) a row's process receives as JSON;
* ``rows``: the catalogue of our rows (each pinned to every setting it means; ``default``: the package's) and the
  peer (llm-compressor) rows, and the spec of a row name;
* ``child``: what a row's process does (load the model, prune it, measure it);
* ``runner``: the parent side (one fresh process per row, a pool of them, the results saved after each row);
* ``report``: the markdown header (with what the default model's weights are), footer and tables;
* ``plot``: perplexity against sparsity as a PNG (matplotlib, imported only when drawing);
* ``cli``: the options every one-shot benchmark script shares and its ``main``.

Nothing here imports more than ``torch`` and ``hf_gradprobe``'s public API at import time, so the
llm-compressor environment (``benchmarks/setup_llmcompressor.sh``) imports it as well.
"""

__all__ = ["child", "cli", "plot", "report", "rows", "runner", "specs", "splits"]

"""The `perplexity` metric folder: `evaluate.load(hf_gradprobe.evaluation.PERPLEXITY_METRIC_PATH)`."""

__all__: list[str] = []

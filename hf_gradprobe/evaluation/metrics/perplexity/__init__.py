"""The `perplexity` metric folder: `evaluate.load(hf_gradprobe.metric_path.PERPLEXITY_METRIC_PATH)`."""

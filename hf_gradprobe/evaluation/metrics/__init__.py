"""`evaluate` metric scripts shipped with hf_gradprobe; load them by path (see
`hf_gradprobe.evaluation.PERPLEXITY_METRIC_PATH`)."""

__all__: list[str] = []

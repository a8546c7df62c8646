"""`evaluate` metric scripts shipped with hf_gradprobe; load them by path (see `hf_gradprobe.metric_path`)."""

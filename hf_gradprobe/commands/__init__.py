"""Sub-commands of `hf-gradprobe`; see `hf_gradprobe/cli.py`."""

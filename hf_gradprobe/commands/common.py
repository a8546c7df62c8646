# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Arguments and helpers shared by the sub-commands."""

from __future__ import annotations

import json
import resource
import sys


def add_model_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", default="smollm2-135m",
                        help="local folder, Hub id, or 'smollm2-135m' (default: packaged offline copy when the Hub is unreachable)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "auto"],
                        help="weights dtype (default: the checkpoint's)")
    parser.add_argument("--device-map", default=None, help="Accelerate device map, e.g. 'auto' or 'cuda:0'")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")

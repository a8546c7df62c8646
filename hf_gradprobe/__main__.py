# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""`python -m hf_gradprobe`: the `hf-gradprobe` command line."""

import sys

from .cli import main


sys.exit(main())

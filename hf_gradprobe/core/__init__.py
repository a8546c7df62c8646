# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""What every pruning method shares: prunable layers, mask maths, sparsity measurement."""

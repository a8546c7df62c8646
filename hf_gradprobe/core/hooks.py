# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Hooks and forward overrides that are always removed: the one way the package instruments a model.

* :class:`HookSet`: a context manager that owns forward hooks and removes every one of them on exit, also on
  error. Statistics collectors and tracers subclass it and register their hooks in :meth:`HookSet.attach`.
* :func:`replaced_forward`: within a context, a module computes with another function; what was there before
  (an instance attribute such as Accelerate's wrapper, or nothing) is put back exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn
from typing_extensions import Self


__all__ = ["HookSet", "replaced_forward"]

_MISSING = object()


class HookSet:
    """Forward hooks registered together and removed together.

    Subclasses register hooks in :meth:`attach` with :meth:`pre_hook` / :meth:`post_hook`; entering the context
    calls it, leaving removes every hook (an error while attaching removes those already registered).
    """

    def __init__(self) -> None:
        self._handles: list = []

    def attach(self) -> None:
        """Register the hooks (subclasses)."""

    def pre_hook(self, module: nn.Module, hook: Callable, *, with_kwargs: bool = False) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs))

    def post_hook(self, module: nn.Module, hook: Callable) -> None:
        self._handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Self:
        try:
            self.attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@contextlib.contextmanager
def replaced_forward(module: nn.Module, forward: Callable) -> Iterator[None]:
    """Within the context, ``module(...)`` computes ``forward(...)`` instead of its own forward.

    An Accelerate hook (device map, offload) wraps ``forward`` and calls ``_old_forward`` after moving weights and
    inputs in: the inner function is replaced then, so the hook still runs. On exit the attribute holds exactly what
    it held before (an instance attribute, or nothing, falling back to the class's ``forward``).
    """
    attribute = "_old_forward" if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else "forward"
    saved = module.__dict__.get(attribute, _MISSING)
    setattr(module, attribute, forward)
    try:
        yield
    finally:
        if saved is _MISSING:
            module.__dict__.pop(attribute, None)
        else:
            setattr(module, attribute, saved)

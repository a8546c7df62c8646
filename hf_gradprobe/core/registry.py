# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Registries of named, pluggable parts: one-shot strategies and reconstructors, training methods.

A part is an object with a ``name``; its registry maps the name a config or a command line uses to it. Code that
orchestrates never compares names: it asks the part (``strategy.needs_activations``, ``method.updates_masks``).
A new part is one new registered class plus its tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar


__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named parts of one kind, in registration order.

    Args:
        kind (`str`):
            What the parts are, for messages (e.g. ``"strategy"``).
        argument (`str`):
            The config field or argument that names a part (e.g. ``"strategy"``), for messages.
    """

    def __init__(self, kind: str, argument: str) -> None:
        self.kind = kind
        self.argument = argument
        self._parts: dict[str, T] = {}

    def register(self, part: T) -> T:
        """Add ``part`` under ``part.name`` (lower case, unique); returns it, so it can decorate an instance."""
        name = getattr(part, "name", None)
        if not isinstance(name, str) or not name or name != name.lower():
            raise ValueError(f"A {self.kind} needs a lower-case `name`, got {name!r}.")
        if name in self._parts:
            raise KeyError(f"A {self.kind} named {name!r} is registered already.")
        self._parts[name] = part
        return part

    def get(self, name) -> T:
        """The part called ``name``; a ``ValueError`` lists the registered names otherwise."""
        if isinstance(name, str) and name in self._parts:
            return self._parts[name]
        raise ValueError(f"`{self.argument}` must be one of {self.names()}, got {name!r}.")

    def names(self) -> list[str]:
        return list(self._parts)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

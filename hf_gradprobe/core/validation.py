# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The package's one set of argument checks: each raises one ``ValueError`` naming the argument, the value
and what is allowed.

Every config field, function argument and command-line value is checked through these, so a bad value gives
the same kind of message wherever it is typed: ``` `name` must be <what is allowed> (<hint>), got <value>.```
Booleans are never accepted as numbers, strings never as numbers or booleans, and floats must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


__all__ = [
    "SEED_MAX",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_seed",
    "describe_value",
]

# Seeds go to `torch.Generator.manual_seed`, which takes 64-bit values; derived seeds add small offsets.
SEED_MAX = 2**63 - 1
_SHOWN = 60


def describe_value(value) -> str:
    """``repr(value)``, shortened to one readable line (a huge or nested value does not flood the message)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still described
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _fail(name: str, allowed: str, value, hint: str | None) -> ValueError:
    detail = f" ({hint})" if hint else ""
    return ValueError(f"`{name}` must be {allowed}{detail}, got {describe_value(value)}.")


def check_bool(name: str, value, *, hint: str | None = None) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise _fail(name, "true or false", value, hint)
    return value


def check_choice(name: str, value, choices: Iterable, *, hint: str | None = None):
    """``value`` if it is one of ``choices`` (compared by equality, never by type coercion)."""
    choices = list(choices)
    try:
        ok = any(type(value) is type(choice) and value == choice for choice in choices)
    except Exception:  # noqa: BLE001 - an object whose comparison fails is not a choice
        ok = False
    if not ok:
        raise _fail(name, f"one of {choices}", value, hint)
    return value


def _bounds_text(minimum, maximum, exclusive_minimum: bool, exclusive_maximum: bool, kind: str) -> str:
    if minimum is not None and maximum is not None:
        left, right = ("(" if exclusive_minimum else "["), (")" if exclusive_maximum else "]")
        return f"{kind} in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f"{kind} {'>' if exclusive_minimum else '>='} {minimum:g}"
    if maximum is not None:
        return f"{kind} {'<' if exclusive_maximum else '<='} {maximum:g}"
    return kind


def _in_bounds(value, minimum, maximum, exclusive_minimum: bool, exclusive_maximum: bool) -> bool:
    if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
        return False
    return maximum is None or not (value > maximum or (exclusive_maximum and value == maximum))


def check_float(
    name: str,
    value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    allow_none: bool = False,
    hint: str | None = None,
) -> float | None:
    """``value`` as a ``float`` if it is a finite real number (an ``int`` is fine, a ``bool`` is not) within the
    bounds; ``None`` passes with ``allow_none``."""
    if value is None and allow_none:
        return None
    kind = "a finite number" + (" or None" if allow_none else "")
    allowed = _bounds_text(minimum, maximum, exclusive_minimum, exclusive_maximum, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, allowed, value, hint)
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise _fail(name, allowed, value, hint) from None
    if not math.isfinite(number) or not _in_bounds(number, minimum, maximum, exclusive_minimum, exclusive_maximum):
        raise _fail(name, allowed, value, hint)
    return number


def check_int(
    name: str,
    value,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    hint: str | None = None,
) -> int | None:
    """``value`` if it is an ``int`` (not a ``bool``, not a float such as ``64.0``) within the bounds; ``None``
    passes with ``allow_none``."""
    if value is None and allow_none:
        return None
    kind = "an integer" + (" or None" if allow_none else "")
    allowed = _bounds_text(minimum, maximum, False, False, kind)
    if isinstance(value, bool) or not isinstance(value, int) or not _in_bounds(value, minimum, maximum, False, False):
        raise _fail(name, allowed, value, hint)
    return int(value)


def check_seed(name: str, value) -> int:
    """A random seed: an integer in ``[0, 2**63 - 1]`` (what ``torch.Generator.manual_seed`` takes)."""
    return check_int(name, value, minimum=0, maximum=SEED_MAX, hint="a random seed")

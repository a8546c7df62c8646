# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The package's one set of argument checks: each raises one ``ValueError`` naming the argument, the value
and what is allowed.

Every config field, function argument and command-line value is checked through these, so a bad value gives
the same kind of message wherever it is typed: ``` `name` must be <what is allowed> (<hint>), got <value>.```
Booleans are never accepted as numbers, strings never as numbers or booleans, and floats must be finite.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable


__all__ = [
    "COUNT_MAX",
    "SEED_MAX",
    "check_bool",
    "check_choice",
    "check_count",
    "check_float",
    "check_int",
    "check_positions",
    "check_seed",
    "check_token_ids",
    "describe_value",
    "input_vocab_size",
    "position_limit",
]

# Seeds go to `torch.Generator.manual_seed`, which takes 64-bit values; derived seeds add small offsets.
SEED_MAX = 2**63 - 1
# Counts (windows, tokens per window, batch sizes, iterations) stop at the int32 maximum: a tensor dimension or a
# loop beyond it is never what was meant, and past it some kernels fail with an unclear error.
COUNT_MAX = 2**31 - 1
# Where model configs keep their positional limit, in the order looked up.
POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions")
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


def _number_text(value) -> str:
    # Integers exactly (a seed's bound of 9223372036854775807 is not 9.22337e+18); floats short.
    if value is None:  # an open side of the bounds
        return ""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _bounds_text(minimum, maximum, exclusive_minimum: bool, exclusive_maximum: bool, kind: str) -> str:
    low, high = _number_text(minimum), _number_text(maximum)
    if minimum is not None and maximum is not None:
        left, right = ("(" if exclusive_minimum else "["), (")" if exclusive_maximum else "]")
        return f"{kind} in {left}{low}, {high}{right}"
    if minimum is not None:
        return f"{kind} {'>' if exclusive_minimum else '>='} {low}"
    if maximum is not None:
        return f"{kind} {'<' if exclusive_maximum else '<='} {high}"
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


def check_count(
    name: str, value, *, minimum: int = 1, unit: str | None = None, allow_none: bool = False, hint: str | None = None
) -> int | None:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, COUNT_MAX]``: a number of tokens, windows or
    samples, worded as one (``` `seq_len` must be at least 2 tokens, an integer at most 2147483647, got 1.```);
    ``None`` passes with ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= COUNT_MAX:
        return int(value)
    allowed = f"at least {minimum}" + (f" {unit}" if unit else "") + f", an integer at most {COUNT_MAX}"
    raise _fail(name, allowed + (", or None" if allow_none else ""), value, hint)


def check_seed(name: str, value) -> int:
    """A random seed: an integer in ``[0, 2**63 - 1]`` (what ``torch.Generator.manual_seed`` takes)."""
    return check_int(name, value, minimum=0, maximum=SEED_MAX, hint="a random seed")


def position_limit(model) -> tuple[str, int] | None:
    """``(attribute, value)`` of the longest input ``model`` was built for (``config.max_position_embeddings`` or
    ``n_positions``, also inside a composite model's text config); ``None`` when its config states none."""
    config = getattr(model, "config", None)
    configs = [config]
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        with contextlib.suppress(Exception):  # a config without a text part has no other place to look
            configs.append(get_text_config())
    for candidate in configs:
        for attribute in POSITION_ATTRIBUTES:
            value = getattr(candidate, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                # The key its config.json holds (GPT-2's max_position_embeddings is an alias of n_positions).
                aliases = getattr(candidate, "attribute_map", None)
                return (aliases.get(attribute, attribute) if isinstance(aliases, dict) else attribute), value
    return None


def check_positions(name: str, seq_len: int, model, *, hint: str | None = None) -> None:
    """Refuse windows of ``seq_len`` tokens longer than ``model``'s positional limit (models stating none pass):
    past it a learned position table is indexed out of range and rotary models run on positions never trained."""
    limit = position_limit(model)
    if limit is None or seq_len <= limit[1]:
        return
    attribute, value = limit
    detail = f" {hint}" if hint else ""
    raise ValueError(
        f"`{name}`={seq_len} is longer than {type(model).__name__}'s {attribute}={value}: its windows must be at "
        f"most {value} tokens.{detail} Lower `{name}` to {value} or less."
    )


def input_vocab_size(model) -> int | None:
    """The number of rows of ``model``'s input embedding (``config.vocab_size`` when it has no embedding module)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    size = getattr(embeddings, "num_embeddings", None)
    if isinstance(size, int) and size > 0:
        return size
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) and size > 0 else None


def check_token_ids(name: str, ids, vocab_size: int | None, *, hint: str) -> None:
    """Refuse a tensor of token ids that is not integer (floats would be cast to id 0, bools to 0/1) or holds ids
    outside ``[0, vocab_size)`` (an out-of-range id is an IndexError on CPU, a device assert on CUDA)."""
    import torch

    if not isinstance(ids, torch.Tensor):
        raise ValueError(f"`{name}` must be a tensor of integer token ids, got {type(ids).__name__}.")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise ValueError(
            f"`{name}` must hold integer token ids (dtype torch.long or another integer type), got dtype "
            f"{ids.dtype}: {hint}"
        )
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        size = f"has {vocab_size} entries (ids in [0, {vocab_size}))" if vocab_size is not None else "starts at id 0"
        raise ValueError(f"`{name}` holds token ids in [{low}, {high}] but the model's vocabulary {size}: {hint}")

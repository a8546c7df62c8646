# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Keep secrets out of cards, logs and errors: redact them, and format a command line with its secrets hidden.

A name is secret when one of its words (split at ``_``, ``-``, ``.`` and case changes) is ``token``, ``key``,
``secret``, ``password`` (or ``passwd``, ``apikey``, ``credentials``): ``--token``, ``--hub_token``, ``HF_TOKEN``,
``api_key``, ``aws_secret_access_key``, ``db_password``. The special-token names of tokenizers (``pad_token``...)
are not; ``authorization``, ``auth`` and ``cookie`` are. The value of a secret name is replaced by ``***`` in
``--name value``, ``--name=value``, ``NAME=value`` and ``"name": value``, and in mappings (recursively,
:func:`redact_secrets`). Wherever they appear, these credentials are replaced too: every string shaped like a
Hugging Face token (``hf_...``), the value of an ``Authorization``/``Proxy-Authorization`` header
(``Authorization: Bearer ***``), a ``Bearer`` credential, and the userinfo of a URL
(``https://user:password@host`` becomes ``https://***@host``).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence


__all__ = ["REDACTED", "format_command", "is_secret_name", "redact", "redact_secrets", "redact_tokens"]

REDACTED = "***"
_SECRET_WORDS = frozenset(
    {
        "token",
        "key",
        "secret",
        "secrets",
        "password",
        "passwd",
        "apikey",
        "credentials",
        "authorization",
        "auth",
        "cookie",
    }
)
_NOT_SECRET = frozenset(f"{kind}_token" for kind in ("bos", "eos", "pad", "unk", "sep", "cls", "mask"))
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
# The value of an Authorization header, its scheme included: "Authorization: Basic dXNlcjpwdw==".
_HEADER_RE = re.compile(
    r"""(?i)(?P<name>(?<![\w-])(?:proxy-)?authorization)(?P<sep>["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>(?:[A-Za-z][\w-]*[ \t]+)?[^\s"',;)}\]]+)"""
)
# "Bearer <credential>" anywhere (a header printed without its name); the credential holds a digit or a symbol,
# so that prose ("the bearer of ...") is left alone.
_BEARER_RE = re.compile(r"(?i)(?P<scheme>\bbearer[ \t]+)(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/-]{8,}=*")
# The userinfo of a URL ("scheme://user:password@host"): it never holds "/", so a path's "@" is not taken for it.
_URL_USERINFO_RE = re.compile(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@")
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_VALUE = r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;)}\]"']+)"""
# name=value, name: value, "name": "value", --name=value
_ASSIGN_RE = re.compile(r"""(?P<name>(?<![\w-])-{0,2}[A-Za-z][\w.-]*)(?P<sep>["']?\s*(?:=|:)\s*)""" + _VALUE)
# --name value
_OPTION_RE = re.compile(r"""(?P<name>(?<![\w-])--?[A-Za-z][\w.-]*)(?P<sep>\s+)(?!-)""" + _VALUE)


def is_secret_name(name) -> bool:
    """Whether the value of an argument, a variable or a key called ``name`` must be hidden.

    Args:
        name (`str`):
            The name, e.g. ``"--hub_token"`` or ``"HF_TOKEN"`` (anything else is not secret).

    Returns:
        `bool`: whether one of its words is a secret word (see the module docstring).
    """
    if not isinstance(name, str):
        return False
    name = name.lstrip("-")
    if name.lower().replace("-", "_") in _NOT_SECRET:
        return False
    return any(word.lower() in _SECRET_WORDS for word in _WORD_RE.findall(name))


def _hide_value(match: re.Match) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['name']}{match['sep']}{quote}{REDACTED}{quote}"


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """Hide the secrets in a text.

    Args:
        text (`str`):
            Any text, e.g. an error message or a command line.
        secrets (`Sequence[str]`, *optional*):
            Values to hide wherever they appear (``None`` entries are skipped).

    Returns:
        `str`: ``text`` with the given secrets, the values of secret names and every credential (Hugging Face
        tokens, Authorization headers, Bearer values, URL userinfo) replaced by ``***``.
    """
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = redact_tokens(text)
    return _hide_secret_values(_OPTION_RE, _hide_secret_values(_ASSIGN_RE, text))


def _hide_secret_values(pattern: re.Pattern, text: str) -> str:
    """``pattern.sub(_hide_value, text)``, except that the value after a name that is not secret is searched
    again: in "unrecognized arguments: --token=abc" the value of "arguments" holds "--token=abc"."""
    out, pos = [], 0
    while (match := pattern.search(text, pos)) is not None:
        if is_secret_name(match["name"]):
            out += [text[pos : match.start()], _hide_value(match)]
            pos = match.end()
        else:
            out.append(text[pos : match.end("sep")])
            pos = match.end("sep")
    out.append(text[pos:])
    return "".join(out)


def redact_tokens(text: str) -> str:
    """Hide the credentials in a text, and nothing else, so that it is safe on a model card's text.

    Args:
        text (`str`):
            Any text.

    Returns:
        `str`: ``text`` with every string shaped like a Hugging Face token, the value of an Authorization header,
        a Bearer value and the userinfo of a URL replaced by ``***``; ``key: value`` prose keeps its values.
    """
    text = _HEADER_RE.sub(lambda match: f"{match['name']}{match['sep']}{REDACTED}", str(text))
    text = _BEARER_RE.sub(lambda match: f"{match['scheme']}{REDACTED}", text)
    text = _URL_USERINFO_RE.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)
    return _TOKEN_RE.sub(REDACTED, text)


def redact_secrets(obj):
    """Hide the secrets in a JSON-like value.

    Args:
        obj:
            Dicts, lists and strings, nested; other values are kept.

    Returns:
        A copy of ``obj`` with the values of secret keys and every credential in its strings hidden.
    """
    if isinstance(obj, Mapping):
        return {
            key: (REDACTED if is_secret_name(key) and value not in (None, True, False) else redact_secrets(value))
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(value) for value in obj]
    if isinstance(obj, str):
        return redact(obj)
    return obj


def format_command(argv: Sequence[str] | None = None, prefix: str | None = None) -> str:
    """A shell-quoted command line, with secret values redacted.

    Args:
        argv (`Sequence[str]`, *optional*):
            The command and its arguments; defaults to this process's ``sys.argv``.
        prefix (`str`, *optional*):
            Replaces ``argv[0]`` (e.g. ``"hf-gradprobe"`` or ``"python examples/prune_and_push.py"``).

    Returns:
        `str`: the command line; the value after a secret flag is hidden whatever its shape.
    """
    argv = list(sys.argv if argv is None else argv)
    head = [prefix] if prefix is not None else ([shlex.quote(argv[0])] if argv else [])
    out, hide_next = [], False
    for arg in argv[1:]:
        if hide_next:
            hide_next = False
            if not arg.startswith("--"):
                out.append(REDACTED)
                continue
        name, eq, _ = arg.partition("=")
        if is_secret_name(name) and (name.startswith("-") or eq):
            if eq:
                out.append(f"{shlex.quote(name)}={REDACTED}")
            else:
                out.append(shlex.quote(arg))
                hide_next = True
            continue
        out.append(shlex.quote(redact(arg)))
    return redact(" ".join(head + out))

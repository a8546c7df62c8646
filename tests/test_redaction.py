# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""Redaction of credentials that are not Hugging Face tokens: Authorization headers and URL userinfo."""

import json

import pytest
from testing_utils import make_tiny_llama

from hf_gradprobe.sharing.redaction import REDACTED, format_command, redact, redact_secrets, redact_tokens


BEARER = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.s1gn4ture"
BASIC = "dXNlcjpodW50ZXIy"  # base64 of "user:hunter2"


@pytest.mark.parametrize(
    "text,secrets,kept",
    [
        (f"Authorization: Bearer {BEARER}", [BEARER], ["Authorization"]),
        (f"authorization=Basic {BASIC}", [BASIC], ["authorization"]),
        (f'{{"Authorization": "Bearer {BEARER}", "Accept": "json"}}', [BEARER], ['"Accept": "json"']),
        (f"curl -H 'Proxy-Authorization: Bearer {BEARER}' https://host/x", [BEARER], ["https://host/x"]),
        (f"sent the header Bearer {BEARER} to the server", [BEARER], ["to the server"]),
        ("https://user:hunter2@host.example/d.txt", ["hunter2", "user:"], ["host.example/d.txt"]),
        ("fetch git+https://ghp_abc123XYZ@github.com/o/r.git now", ["ghp_abc123XYZ"], ["github.com/o/r.git now"]),
        ("`--calibration`='https://u:p%40ss@h/d': no such file", ["p%40ss", "u:"], ["@h/d'", "no such file"]),
        ("s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/key", ["wJalrXUtnFEMI"], ["bucket/key"]),
    ],
)
def test_headers_and_url_credentials_are_redacted(text, secrets, kept):
    for function in (redact, redact_tokens):
        out = function(text)
        for secret in secrets:
            assert secret not in out, (function.__name__, out)
        for part in kept:
            assert part in out, (function.__name__, out)
        assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "basic pruning keeps the bearer of the largest weights",
        "see https://huggingface.co/docs and user@example.com",
        "git@github.com:org/repo.git",
        "tokens: 5, authored by someone",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text and redact_tokens(text) == text


def test_redact_secrets_hides_authorization_values_and_url_userinfo():
    metadata = {
        "headers": {"Authorization": f"Bearer {BEARER}", "Cookie": "session=abc123", "Accept": "text/plain"},
        "url": "https://user:pw-s3cret@host/d",
        "mirrors": ["ftp://anon:ftp-s3cret@mirror/d"],
        "auth": ("user", "tuple-s3cret"),
    }
    out = redact_secrets(metadata)
    text = json.dumps(out)
    for secret in (BEARER, "abc123", "pw-s3cret", "ftp-s3cret", "tuple-s3cret"):
        assert secret not in text
    assert out["headers"]["Accept"] == "text/plain"
    assert out["url"] == "https://***@host/d" and out["mirrors"] == ["ftp://***@mirror/d"]


def test_format_command_hides_headers_and_url_credentials():
    argv = ["x", "--header", f"Authorization: Bearer {BEARER}", "--calibration", "https://u:pw@host/d.txt", "--n", "2"]
    command = format_command(argv, prefix="p")
    assert BEARER not in command and "pw" not in command.replace("p --", "")
    assert "https://***@host/d.txt" in command and command.endswith("--n 2")
    assert "Authorization" in command


def test_save_pruned_writes_no_header_or_url_credential(tmp_path):
    from hf_gradprobe.sharing.save import save_pruned

    metadata = {
        "method": "magnitude",
        "headers": {"Authorization": f"Bearer {BEARER}"},
        "url": "https://user:pw-s3cret@host/d",
    }
    command = f"curl -H 'Authorization: Basic {BASIC}' https://user:cmd-s3cret@host/d && hf-gradprobe prune"
    out = save_pruned(make_tiny_llama(), tmp_path / "out", metadata=metadata, command=command, plot=False)
    written = (out / "README.md").read_text() + (out / "pruning_config.json").read_text()
    for secret in (BEARER, BASIC, "pw-s3cret", "cmd-s3cret"):
        assert secret not in written, secret
    saved = json.loads((out / "pruning_config.json").read_text())
    assert saved["url"] == "https://***@host/d"

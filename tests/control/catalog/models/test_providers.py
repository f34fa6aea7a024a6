"""Provider configuration checks for external models."""

from __future__ import annotations

import re

import msgspec
import pytest

from control.catalog.models.providers import OpenAIProvider, ProviderConfig, check_provider, public_provider


def decode(**fields: object) -> ProviderConfig:
    return msgspec.convert({"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o",
                            "apiKeyRef": "env:OPENAI_API_KEY", **fields}, ProviderConfig)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["env:OPENAI_API_KEY", "env:_x1", "env:SK_PROD", "secret://team-a/openai.key",
                                 "secret://prod/openai/2024-05-01-rotation", "secret://team-a/openai-production-key"])
def test_secret_references_are_accepted(ref: str) -> None:
    assert check_provider(decode(apiKeyRef=ref)) == []


@pytest.mark.parametrize("ref", ["sk-proj-abc123", "env:1BAD", "secret://"])
def test_malformed_references_break_the_declared_pattern(ref: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"matching regex .* at `\$.apiKeyRef`") as raised:
        decode(apiKeyRef=ref)
    assert ref not in str(raised.value).replace("secret://[", "")


@pytest.mark.parametrize("ref", ["secret://team-a/sk-proj-abcdefghijklmnop", "secret://x/Ab3dE9fGh2JkL5mNp8QrS1tUv",
                                 "env:sk_live_abc", "secret://aws/AKIAIOSFODNN7EXAMPLE"])
def test_references_that_look_like_keys_are_refused_without_echo(ref: str) -> None:
    errors = check_provider(decode(apiKeyRef=ref))
    assert [e.field for e in errors] == ["provider.apiKeyRef"]
    assert ref.rsplit("/", 1)[-1] not in errors[0].message


@pytest.mark.parametrize(("fields", "field"), [
    ({"apiKey": "sk-live"}, "provider.apiKey"),
    ({"baseUrl": "https://u:p@host/v1"}, "provider.baseUrl"),
    ({"baseUrl": "file:///etc/passwd"}, "provider.baseUrl"),
    ({"baseUrl": "http://"}, "provider.baseUrl"),
    ({"baseUrl": "http://host:99999"}, "provider.baseUrl"),
    ({"baseUrl": "http://host/v1?key=x"}, "provider.baseUrl"),
    ({"baseUrl": "http://ho st/v1"}, "provider.baseUrl"),
])
def test_bad_provider_fields_are_named(fields: dict[str, str], field: str) -> None:
    errors = check_provider(decode(**fields))
    assert [e.field for e in errors] == [field]
    assert all("sk-" not in e.message for e in errors)  # the rejected value is never echoed


def test_each_provider_has_its_own_required_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="apiKeyRef"):
        msgspec.convert({"kind": "openai", "baseUrl": "https://x", "model": "m"}, ProviderConfig)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="apiKeyRef"):  # ollama takes no key at all
        msgspec.convert({"kind": "ollama", "baseUrl": "http://x", "model": "m", "apiKeyRef": "env:K"},
                        ProviderConfig)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="kind"):
        msgspec.convert({"kind": "bedrock", "baseUrl": "https://x", "model": "m"}, ProviderConfig)  # type: ignore[arg-type]
    vllm = msgspec.convert({"kind": "vllm", "baseUrl": "http://vllm:8000/v1", "model": "meta/llama"},
                           ProviderConfig)  # type: ignore[arg-type]
    assert check_provider(vllm) == []
    shown = public_provider(decode(apiKey="sk-live"))
    assert isinstance(shown, OpenAIProvider) and b"sk-live" not in msgspec.json.encode(shown)


def test_the_declared_url_pattern_refuses_what_the_check_refuses_in_any_regex_engine() -> None:
    """The pattern spells whitespace out (``\\s`` differs between Python and ECMA 262), so a generator reading it
    either way cannot produce a URL the server refuses: schemathesis found \\x1c, which ECMA's ``\\s`` lacks."""
    from control.catalog.models.providers import _URL_PATTERN, _url_problem

    assert "\\s" not in _URL_PATTERN
    pattern = re.compile(_URL_PATTERN)
    admitted = [hex(c) for c in range(0x110000) if pattern.match(url := f"http://host/a{chr(c)}b")
                and _url_problem(url)]
    assert admitted == []

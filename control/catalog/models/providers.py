"""Provider configuration of ``external`` models, validated per provider.

Secrets never enter the catalog: a provider names where its key lives with
``apiKeyRef`` (``env:OPENAI_API_KEY`` or ``secret://team-a/openai``) and the
gateway resolves it when it builds the upstream. A raw key sent as ``apiKey`` is
refused with a message saying what to send instead, and is neither stored nor
echoed; so is a reference that looks like a key, and a base URL with
credentials in it. Because only references are stored, API responses and audit
entries can show the provider config as-is.

    {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
     "apiKeyRef": "env:OPENAI_API_KEY", "organization": null}
    {"kind": "ollama", "baseUrl": "http://ollama:11434", "model": "llama3.1:8b"}
    {"kind": "vllm",   "baseUrl": "http://vllm:8000/v1", "model": "meta-llama/Llama-3.1-8B", "apiKeyRef": null}
"""

from __future__ import annotations

import math
import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from adapters.adminapi import FieldError

__all__ = [
    "OllamaProvider", "OpenAIProvider", "ProviderConfig", "VllmProvider", "check_provider", "looks_like_key",
    "secret_errors", "url_errors",
]

# What _url_problem accepts, stated for the OpenAPI document: http(s), a host, an optional port 1-65535,
# no credentials, query or fragment, no whitespace.
# (IPv6 literals are accepted too, but left out of the pattern.)
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# Whitespace is spelled out as what str.isspace() refuses: ``\s`` differs between regex engines (ECMA's has
# no \x1c-\x1f or \x85), and a generator reading the pattern the ECMA way must not produce a refused URL.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_URL_PATTERN = rf"^https?://[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*\.?(?::{_PORT})?(?:/[^{_SPACE}?#]*)?$"
_Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000,
                                   extra_json_schema={"extra": {"pattern": _URL_PATTERN}})]
_UpstreamModel = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")]
_SECRET_REF_PATTERN = r"^(?:env:[A-Za-z_][A-Za-z0-9_]{0,127}|secret://[A-Za-z0-9][A-Za-z0-9._/-]{0,199})$"
_SecretRef = Annotated[str, msgspec.Meta(
    max_length=250, pattern=_SECRET_REF_PATTERN,
    description="env:VAR_NAME or secret://name. It names a secret: a value that looks like a key itself "
                "(a known key prefix such as sk-, or a part of 24+ characters mixing letters and digits "
                "with high entropy) is refused.")]
_SECRET_REF = re.compile(_SECRET_REF_PATTERN)
# Prefixes of well-known API key formats (OpenAI, Anthropic, Slack, GitHub, AWS, Google, Hugging Face, ours).
# Case-sensitive, as the keys are: an environment variable named SK_PROD is fine, sk_live_... is not.
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "xoxb-", "xoxp-", "ghp_", "gho_", "github_pat_", "hf_", "llmops_",
                 "AKIA", "AIza")
_KEY_LIKE_MIN_CHARS = 24
_KEY_LIKE_MIN_ENTROPY_BITS = 3.5  # per character; English-like names stay well below, random tokens above
_RAW_KEY_HINT = ("raw secrets are not accepted; store the key in the environment or a secret store "
                 "and send apiKeyRef (env:VAR_NAME or secret://name)")


class _Provider(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel",
                omit_defaults=True, tag_field="kind"):
    base_url: _Url
    model: _UpstreamModel
    # Declared only to answer a raw key with a precise hint; never stored or returned.
    api_key: Annotated[str | None, msgspec.Meta(description="never accepted: send apiKeyRef")] = None


class OpenAIProvider(_Provider, frozen=True, tag="openai"):
    api_key_ref: _SecretRef
    organization: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class OllamaProvider(_Provider, frozen=True, tag="ollama"):
    pass


class VllmProvider(_Provider, frozen=True, tag="vllm"):
    api_key_ref: _SecretRef | None = None


ProviderConfig = OpenAIProvider | OllamaProvider | VllmProvider


def check_provider(provider: ProviderConfig, prefix: str = "provider") -> list[FieldError]:
    """Every check msgspec cannot make; field paths are camelCase like the wire."""
    return secret_errors(provider, prefix) + url_errors(provider, prefix)


def url_errors(provider: ProviderConfig, prefix: str = "provider") -> list[FieldError]:
    """``baseUrl`` against the rules its declared pattern states (a 400: the schema says so)."""
    problem = _url_problem(provider.base_url)
    return [FieldError(field=f"{prefix}.baseUrl", message=problem)] if problem else []


def secret_errors(provider: ProviderConfig, prefix: str = "provider") -> list[FieldError]:
    """A raw key, or a reference that looks like one: schema-valid, refused on meaning (a 422)."""
    errors: list[FieldError] = []
    if provider.api_key is not None:
        errors.append(FieldError(field=f"{prefix}.apiKey", message=_RAW_KEY_HINT))
    ref = getattr(provider, "api_key_ref", None)
    if ref is not None and (not _SECRET_REF.match(ref) or looks_like_key(ref)):
        # The message never repeats the value: it may be a real key pasted in the wrong field.
        errors.append(FieldError(field=f"{prefix}.apiKeyRef",
                                 message="must be a secret reference (env:VAR_NAME or secret://name) that "
                                         "names a secret, never the key itself"))
    return errors


def looks_like_key(ref: str) -> bool:
    """Whether any part of a reference looks like an API key rather than a name."""
    name = ref.partition(":")[2].lstrip("/")
    for part in re.split(r"[/:]", name):
        if part.startswith(_KEY_PREFIXES):
            return True
        if (len(part) >= _KEY_LIKE_MIN_CHARS and any(c.isdigit() for c in part) and any(c.isalpha() for c in part)
                and _entropy_bits(part) >= _KEY_LIKE_MIN_ENTROPY_BITS):
            return True
    return False


def _entropy_bits(text: str) -> float:
    counts = [text.count(c) for c in set(text)]
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as err:
        return f"not a valid URL: {err}"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials; use apiKeyRef for the key"
    if parts.fragment or parts.query:
        return "must not have a query string or fragment"
    if port == 0:
        return "port must be between 1 and 65535"
    if any(ch.isspace() for ch in url):
        return "must not contain whitespace"
    return None


def public_provider(provider: ProviderConfig | None) -> ProviderConfig | None:
    """The config as stored and shown: the (always ``None`` after validation) raw key dropped."""
    return None if provider is None else msgspec.structs.replace(provider, api_key=None)

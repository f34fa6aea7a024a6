"""Errors shared by the data plane and its adapters.

Adapters translate their HTTP client's exceptions into these at their own
boundary; one gateway handler turns any of them into OpenAI's error schema.

    GatewayError                      500 server_error
    ├── PluginFailed                  500 server_error / plugin_failed (a plug-in that fails closed raised)
    ├── InvalidRequest                400 invalid_request_error
    │   └── PayloadTooLarge           413 invalid_request_error / request_too_large
    ├── AuthenticationFailed          401 authentication_error
    ├── PermissionDenied              403 permission_error
    ├── NotFound                      404 not_found_error
    ├── MethodNotAllowed              405 invalid_request_error
    ├── RateLimited                   429 rate_limit_error
    ├── EndpointNotSupported          501 invalid_request_error / unsupported_endpoint (a provider kind that
    │                                 cannot serve e.g. /v1/embeddings; not retried, no breaker failure)
    └── UpstreamError                 502 upstream_error        (retryable)
        ├── UpstreamUnreachable       502 upstream_error        (retryable; no connection: refused,
        │                                                        unreachable, name resolution)
        ├── UpstreamUnavailable       503 upstream_unavailable   (retryable; breaker open, 503 upstream)
        ├── UpstreamTimeout           504 upstream_timeout       (retryable)
        │   └── UpstreamConnectTimeout 504 upstream_timeout      (retryable; connecting timed out)
        └── UpstreamStatus            upstream's own status      (retryable only for 429 / 5xx;
                                      401/403/407 become 502 upstream_auth_failed)
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = [
    "AuthenticationFailed",
    "EndpointNotSupported",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PluginFailed",
    "RateLimited",
    "UpstreamConnectTimeout",
    "UpstreamError",
    "UpstreamStatus",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UpstreamUnreachable",
    "error_body",
]


class GatewayError(Exception):
    """Base of every error the data plane reports to a client."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = False
    # No connection to the upstream could be made, so nothing was sent: the replica is not there (yet)
    connect_failed: ClassVar[bool] = False
    fallback: bool = False  # set by the relay on what it raises: the last target tried was not the first planned
    first_provider: str | None = None  # with `fallback`: the provider of the first target planned

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    @property
    def http_status(self) -> int:
        return self.status

    def body(self) -> bytes:
        """OpenAI's error schema, encoded once."""
        return error_body(self.message, self.kind, self.param, self.code)

    def headers(self) -> dict[str, str]:
        return {}


class PluginFailed(GatewayError):
    """A gateway plug-in raised something other than a `GatewayError`, and it fails closed.

    The client learns only that the server failed; the plug-in's name and traceback are logged."""

    def __init__(self, plugin: str) -> None:
        super().__init__("Internal server error", code="plugin_failed")
        self.plugin = plugin


class InvalidRequest(GatewayError):
    status = 400
    kind = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status = 413

    def __init__(self, message: str) -> None:
        super().__init__(message, code="request_too_large")


class AuthenticationFailed(GatewayError):
    status = 401
    kind = "authentication_error"


class PermissionDenied(GatewayError):
    status = 403
    kind = "permission_error"


class NotFound(GatewayError):
    status = 404
    kind = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    kind = "invalid_request_error"

    def __init__(self, message: str, *, allow: str = "POST") -> None:
        super().__init__(message, code="method_not_allowed")
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"allow": self.allow}  # RFC 9110: a 405 must list the methods that are allowed


class RateLimited(GatewayError):
    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after_s)))}


class EndpointNotSupported(GatewayError):
    """The route's provider is of a kind that cannot serve this endpoint (Ollama-native, litellm)."""

    status = 501
    kind = "invalid_request_error"

    def __init__(self, provider: str, provider_kind: str, endpoint: str) -> None:
        super().__init__(
            f"provider {provider} (kind {provider_kind!r}) cannot serve /v1/{endpoint}; "
            f"route it to an 'openai'-kind provider (vLLM, OpenAI, Ollama's /v1)",
            param="model", code="unsupported_endpoint",
        )


class UpstreamError(GatewayError):
    """The upstream could not be reached or answered something unusable."""

    status = 502
    kind = "upstream_error"
    retryable = True


class UpstreamUnreachable(UpstreamError):
    """Connecting failed (refused, unreachable, name resolution): the request never reached the upstream.
    Answered like any `UpstreamError`; a route that scales from zero waits on it (gateway/relay.py)."""

    connect_failed = True


class UpstreamUnavailable(UpstreamError):
    status = 503
    kind = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "upstream_timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """Connecting timed out: nothing was sent (a replica gone, or packets dropped). Answered as a timeout."""

    connect_failed = True


class UpstreamStatus(UpstreamError):
    """The upstream answered an HTTP error; its status and body are relayed as-is."""

    def __init__(self, upstream_status: int, raw_body: bytes, provider: str) -> None:
        message = _upstream_message(raw_body) or f"upstream {provider} answered HTTP {upstream_status}"
        super().__init__(message)
        self.upstream_status = upstream_status
        self.raw_body = raw_body
        self.provider = provider

    @property
    def retryable(self) -> bool:  # type: ignore[override]  # a ClassVar elsewhere; depends on the status here
        return self.upstream_status == 429 or self.upstream_status >= 500

    @property
    def http_status(self) -> int:
        # Client errors are the client's to see; a broken upstream is a bad gateway.
        if self.upstream_status >= 500 and self.upstream_status not in (502, 503, 504):
            return 502
        if self.upstream_status in _UPSTREAM_AUTH:
            return 502
        return self.upstream_status

    def body(self) -> bytes:
        if self.upstream_status in _UPSTREAM_AUTH:
            # The upstream rejected the *operator's* credentials. Relaying its 401 would tell the
            # client that its own key is wrong; its body may also quote the (masked) provider key.
            return error_body(
                f"upstream provider {self.provider} rejected the gateway's credentials "
                f"(HTTP {self.upstream_status}); the operator must fix the provider's api_key",
                "upstream_error", None, "upstream_auth_failed",
            )
        if _upstream_message(self.raw_body) is not None:
            return self.raw_body
        kind = "rate_limit_error" if self.upstream_status == 429 else (
            "upstream_error" if self.upstream_status >= 500 else "invalid_request_error"
        )
        return error_body(self.message, kind, None, None)


_UPSTREAM_AUTH = frozenset({401, 403, 407})


class _ErrorDetail(msgspec.Struct):
    message: str


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail


_envelope_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_encoder = msgspec.json.Encoder()


def _upstream_message(raw: bytes) -> str | None:
    """The message of an upstream body already in OpenAI's error schema, else None."""
    try:
        return _envelope_decoder.decode(raw).error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def error_body(message: str, kind: str, param: str | None, code: Any) -> bytes:
    return _encoder.encode({"error": {"message": message, "type": kind, "param": param, "code": code}})

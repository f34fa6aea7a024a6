"""The one place that maps aiohttp's exceptions onto the gateway's errors.

Every aiohttp-based adapter wraps its calls in its provider's `ClientErrors`,
as httpx wraps each transport call in `map_httpcore_exceptions()`:

    aiohttp.ConnectionTimeoutError       -> UpstreamConnectTimeout (504, retryable; nothing was sent)
    asyncio.TimeoutError / TimeoutError  -> UpstreamTimeout   (504, retryable)
    aiohttp.ClientConnectorError         -> UpstreamUnreachable (502, retryable; refused, unreachable, DNS;
                                            TLS errors stay UpstreamError: a replica answered)
    aiohttp.ClientError, ValueError      -> UpstreamError     (502, retryable)
    GatewayError                         -> passes through unchanged
    anything else (GeneratorExit, CancelledError, bugs) -> passes through unchanged

The message never carries a URL, an address or a key: clients see it.
"""

from __future__ import annotations

import os
from types import TracebackType

import aiohttp

from adapters.errors import UpstreamConnectTimeout, UpstreamError, UpstreamTimeout, UpstreamUnreachable

__all__ = ["ClientErrors", "describe"]

_TLS = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError)


class ClientErrors:
    """A reusable, stateless context manager: one per provider, built once, entered per call.

    A class rather than `@contextmanager`, so entering it allocates nothing on the hot path."""

    __slots__ = ("_failed", "_timed_out")

    def __init__(self, provider: str) -> None:
        self._timed_out = f"upstream {provider} timed out"
        self._failed = f"upstream {provider} failed: "

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, TimeoutError):
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamConnectTimeout(self._timed_out) from None
            raise UpstreamTimeout(self._timed_out) from None
        if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, _TLS):
            raise UpstreamUnreachable(self._failed + describe(exc)) from None
        if isinstance(exc, aiohttp.ClientError | ValueError):
            raise UpstreamError(self._failed + describe(exc)) from None


def describe(exc: BaseException) -> str:
    """A short description of a client error without URLs, addresses or keys: clients see it.

    Not `os_error.strerror`: for a refused connection it reads "Connect call failed
    ('10.0.0.5', 8000)", which hands the upstream's address to anyone who asks."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "cannot connect (name resolution failed)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "cannot connect (TLS error)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if isinstance(errno, int) and errno > 0 else exc.os_error.__class__.__name__
        return f"cannot connect ({reason})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response payload incomplete"
    return exc.__class__.__name__

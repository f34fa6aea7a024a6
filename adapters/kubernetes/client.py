"""Talking to the API server through the official ``kubernetes`` client, the same way for every runtime.

The client is synchronous: each call here runs in a worker thread (``asyncio.to_thread``) with a request timeout
(``TIMEOUT_S``), so the event loop never blocks on the API server. Calls raise the client's own errors
(``CLIENT_ERRORS``, and ``msgspec.DecodeError`` from ``read``); each runtime turns them into its own
``RuntimeFailure`` at its boundary, from what ``describe_error`` says (a short reason naming the object, with
the API server's message stripped of credentials by the runtime's ``scrub``, and whether a retry may help).

A connection goes back to urllib3's pool only with its answer read off it: a connection released with an unread
answer on it breaks the next request that gets it. ``call`` lets the client read the answer (into its models),
``read`` and ``read_text`` read it whole, ``send`` drains it, and ``probe``, which never needs the body, closes
the connection (``close()`` before ``release_conn()``) instead of returning it.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import msgspec
import urllib3
from kubernetes import client, config

__all__ = [
    "CLIENT_ERRORS",
    "MERGE_PATCH",
    "TIMEOUT_S",
    "ErrorReport",
    "call",
    "describe_error",
    "describe_refusal",
    "make_api_client",
    "not_found",
    "probe",
    "read",
    "read_text",
    "send",
]

T = TypeVar("T")
TIMEOUT_S = (5.0, 30.0)  # connect, read
MERGE_PATCH = "application/merge-patch+json"
CLIENT_ERRORS = (client.ApiException, urllib3.exceptions.HTTPError, OSError)


def make_api_client(kubeconfig: str | None, *, setting: str,
                    failure: Callable[[str], Exception]) -> client.ApiClient:
    """``kubeconfig`` when set, else the pod's service account, else ``~/.kube/config``. Without any, raises
    ``failure(reason)`` (the runtime's own ``RuntimeFailure``), the reason naming ``setting`` (``*_KUBECONFIG``)."""
    cfg = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
    except (config.ConfigException, OSError) as exc:
        raise failure(f"no usable Kubernetes configuration ({type(exc).__name__}): set "
                      f"{setting} or run in a pod with a service account") from None
    return client.ApiClient(cfg)


class ErrorReport(NamedTuple):
    """What a runtime's ``RuntimeFailure`` says about one of the client's errors."""

    reason: str
    retryable: bool


def describe_error(exc: Exception, what: str, scrub: Callable[[str], str]) -> ErrorReport:
    """``exc`` from a call about ``what`` (e.g. ``Job/tiny-a1``): an API refusal (``describe_refusal``), an answer
    that is not the object, or an API server out of reach (urllib3's and the OS's errors, and the client's
    status-0 ``ApiException`` for a TLS failure: no answer came), the last two retryable."""
    if isinstance(exc, client.ApiException) and exc.status:
        return describe_refusal(exc, what, scrub)
    if isinstance(exc, msgspec.DecodeError):
        return ErrorReport(f"Kubernetes API answered {what} with an unreadable object", True)
    return ErrorReport(f"Kubernetes API unreachable ({type(exc).__name__}) at {what}", True)


def describe_refusal(exc: client.ApiException, what: str, scrub: Callable[[str], str]) -> ErrorReport:
    """The status, its reason and the API server's own message (through ``scrub``); retryable for a 5xx, a
    conflict (409) or throttling (429), not for the other 4xx."""
    detail = scrub(_api_message(exc))
    status = exc.status or 0
    reason = f"Kubernetes refused {what}: {status} {exc.reason or ''}".rstrip()
    return ErrorReport(f"{reason}: {detail}" if detail else reason, status >= 500 or status in (409, 429))


def _api_message(exc: client.ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (ValueError, TypeError):
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def not_found(exc: Exception) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 404


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One call whose answer the client reads and decodes into its own models (a write's small answer)."""
    return await asyncio.to_thread(functools.partial(fn, *args, _request_timeout=TIMEOUT_S, **kwargs))


async def read(fn: Callable[..., Any], into: type[T], *args: Any, **kwargs: Any) -> T:
    """One call, its JSON decoded by msgspec into ``into`` (see ``objects``), all off the event loop."""
    def fetch() -> T:
        response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
        try:
            return msgspec.json.decode(response.data, type=into)
        finally:
            response.release_conn()

    return await asyncio.to_thread(fetch)


async def read_text(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """One call whose answer is text (a pod's log), undecodable bytes replaced."""
    def fetch() -> str:
        response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
        try:
            return bytes(response.data).decode("utf-8", errors="replace")
        finally:
            response.release_conn()

    return await asyncio.to_thread(fetch)


async def send(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """A call whose answer is not needed (a create, a patch, a delete): the body is drained, not decoded, before
    the connection goes back to the pool."""
    def run() -> None:
        response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
        try:
            response.drain_conn()
        finally:
            response.release_conn()

    await asyncio.to_thread(run)


async def probe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Raises the client's error when the object cannot be read; its body (a CRD's schema runs to hundreds of KiB)
    is never read: the connection is closed instead of going back to the pool with the body still on it."""
    def run() -> None:
        response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
        response.close()
        response.release_conn()

    await asyncio.to_thread(run)

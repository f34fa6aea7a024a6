"""The calls the training runtime makes, per kind, through the official (synchronous) client, each in a worker
thread with a request timeout so the event loop never blocks on the API server.

The client's errors are translated in one place (``refusal``): an API refusal becomes ``RuntimeFailure`` with a
short reason naming the object and the API server's message stripped of credentials (not retryable for a 4xx
but 409/429), an unreachable API server or a 5xx a retryable one. Reads decode the JSON with msgspec (``objects``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import urllib3
from kubernetes import client

from adapters.training.base import RuntimeFailure
from adapters.training.kubernetes.manifests import CUSTOM
from adapters.training.kubernetes.status import safe_message

__all__ = ["CLIENT_ERRORS", "KubeApi", "not_found", "refusal"]

T = TypeVar("T")
TIMEOUT_S = (5.0, 30.0)  # connect, read
MERGE_PATCH = "application/merge-patch+json"
CLIENT_ERRORS = (client.ApiException, urllib3.exceptions.HTTPError, OSError)


def _api_message(exc: client.ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (ValueError, TypeError):
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def refusal(exc: Exception, what: str) -> RuntimeFailure:
    """The one translation of the client's errors; ``what`` names the object, e.g. ``Job/tiny-a1``."""
    if isinstance(exc, client.ApiException) and exc.status:
        detail = safe_message(_api_message(exc))
        status = exc.status
        reason = f"Kubernetes refused {what}: {status} {exc.reason or ''}".rstrip()
        return RuntimeFailure(f"{reason}: {detail}" if detail else reason,
                              retryable=status >= 500 or status in (409, 429))
    if isinstance(exc, msgspec.DecodeError):
        return RuntimeFailure(f"Kubernetes API answered {what} with an unreadable object", retryable=True)
    return RuntimeFailure(f"Kubernetes API unreachable ({type(exc).__name__}) at {what}", retryable=True)


def not_found(exc: Exception) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 404


class KubeApi:
    """Create, read, list, patch and delete by kind (``Secret``, ``Service``, ``Job``, ``Pod`` and the Kubeflow
    kinds), in one namespace; every method raises the client's own errors for the caller to translate."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.crds = client.ApiextensionsV1Api(api)

    async def raw(self, fn: Callable[..., Any], into: type[T], *args: Any, **kwargs: Any) -> T:
        """One call, its JSON decoded by msgspec into ``into``, all off the event loop."""
        def fetch() -> T:
            response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
            try:
                return msgspec.json.decode(response.data, type=into)
            finally:
                response.release_conn()

        return await asyncio.to_thread(fetch)

    async def send(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A call whose answer is not needed (a patch, a delete). The body is still read before the connection goes
        back to the pool: a connection with an unread answer on it breaks the next request that gets it."""
        def run() -> None:
            response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
            try:
                response.drain_conn()
            finally:
                response.release_conn()

        await asyncio.to_thread(run)

    async def exists(self, fn: Callable[..., Any], *args: Any) -> None:
        """Raises the client's error when the object cannot be read; its body (a CRD's schema runs to hundreds of
        KiB) is never read: the connection is closed instead of going back to the pool."""
        def run() -> None:
            response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False)
            response.close()
            response.release_conn()

        await asyncio.to_thread(run)

    async def text(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        def fetch() -> str:
            response = fn(*args, _request_timeout=TIMEOUT_S, _preload_content=False, **kwargs)
            try:
                return bytes(response.data).decode("utf-8", errors="replace")
            finally:
                response.release_conn()

        return await asyncio.to_thread(fetch)

    # -- per kind: ``fn(*args)`` with the namespace bound --------------------------------------------------------

    def creator(self, kind: str) -> Callable[..., Any]:
        """``(body, **request options)``"""
        ns = self.namespace
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return lambda body, **kw: self.custom.create_namespaced_custom_object(group, version, ns, plural, body,
                                                                                  **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Secret": self.core.create_namespaced_secret, "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job}
        method = methods[kind]
        return lambda body, **kw: method(ns, body, **kw)

    def reader(self, kind: str) -> Callable[..., Any]:
        """``(name, **request options)``"""
        ns = self.namespace
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return lambda name, **kw: self.custom.get_namespaced_custom_object(group, version, ns, plural, name, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Secret": self.core.read_namespaced_secret, "Service": self.core.read_namespaced_service,
            "Job": self.batch.read_namespaced_job}
        method = methods[kind]
        return lambda name, **kw: method(name, ns, **kw)

    def lister(self, kind: str) -> Callable[..., Any]:
        """``(**request options)``, ``label_selector`` among them (also ``watch=True`` for a watch stream)."""
        ns = self.namespace
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return lambda **kw: self.custom.list_namespaced_custom_object(group, version, ns, plural, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Secret": self.core.list_namespaced_secret, "Service": self.core.list_namespaced_service,
            "Job": self.batch.list_namespaced_job, "Pod": self.core.list_namespaced_pod}
        method = methods[kind]
        return lambda **kw: method(ns, **kw)

    def patcher(self, kind: str) -> Callable[..., Any]:
        """``(name, body, **request options)``: a JSON merge patch."""
        ns = self.namespace
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return lambda name, body, **kw: self.custom.patch_namespaced_custom_object(
                group, version, ns, plural, name, body, _content_type=MERGE_PATCH, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Secret": self.core.patch_namespaced_secret, "Service": self.core.patch_namespaced_service,
            "Job": self.batch.patch_namespaced_job}
        method = methods[kind]
        return lambda name, body, **kw: method(name, ns, body, _content_type=MERGE_PATCH, **kw)

    def deleter(self, kind: str) -> Callable[..., Any]:
        """``(name, **request options)``"""
        ns = self.namespace
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            return lambda name, **kw: self.custom.delete_namespaced_custom_object(group, version, ns, plural, name,
                                                                                  **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Secret": self.core.delete_namespaced_secret, "Service": self.core.delete_namespaced_service,
            "Job": self.batch.delete_namespaced_job, "Pod": self.core.delete_namespaced_pod}
        method = methods[kind]
        return lambda name, **kw: method(name, ns, **kw)

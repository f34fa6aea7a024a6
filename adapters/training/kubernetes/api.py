"""The calls the training runtime makes, per kind, through the official (synchronous) client. They are made with
``adapters.kubernetes.client`` (``read``, ``send``, ``probe``, ``read_text``), each in a worker thread with a
request timeout so the event loop never blocks on the API server.

The client's errors are translated in one place (``refusal``): an API refusal becomes ``RuntimeFailure`` with a
short reason naming the object and the API server's message stripped of credentials (not retryable for a 4xx
but 409/429), an unreachable API server or a 5xx a retryable one. Reads decode the JSON with msgspec (``objects``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from adapters.kubernetes.client import MERGE_PATCH, describe_error
from adapters.training.base import RuntimeFailure
from adapters.training.kubernetes.manifests import CUSTOM
from adapters.training.kubernetes.status import safe_message

__all__ = ["KubeApi", "refusal"]


def refusal(exc: Exception, what: str) -> RuntimeFailure:
    """The one translation of the client's errors; ``what`` names the object, e.g. ``Job/tiny-a1``."""
    report = describe_error(exc, what, safe_message)
    return RuntimeFailure(report.reason, retryable=report.retryable)


class KubeApi:
    """Create, read, list, patch and delete by kind (``Secret``, ``Service``, ``Job``, ``Pod`` and the Kubeflow
    kinds), in one namespace: the client's methods, for ``adapters.kubernetes.client`` to call; they raise the
    client's own errors for the caller to translate."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.crds = client.ApiextensionsV1Api(api)

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

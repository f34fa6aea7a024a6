"""The Kubernetes plumbing both runtimes share: how the client's errors are described, how a client is built, and
how each call hands its connection back (off the event loop, with the timeout). The runtimes' own tests (kmock)
cover the same calls against an API server; these pin the contract with a scripted response."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import urllib3
import yaml
from kubernetes import client

from adapters.kubernetes.client import (
    TIMEOUT_S,
    ErrorReport,
    describe_error,
    describe_refusal,
    make_api_client,
    not_found,
    probe,
    read,
    read_text,
    send,
)
from adapters.kubernetes.objects import PodList


def _scrub(text: str) -> str:
    return text.replace("s3cret", "***")


def _api_error(status: int, reason: str | None = "Forbidden", body: Any = None) -> client.ApiException:
    exc = client.ApiException(status=status, reason=reason)
    exc.body = body
    return exc


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (403, False), (404, False), (409, True),
                                                   (422, False), (429, True), (500, True), (503, True)])
def test_a_refusal_names_the_object_and_status_and_is_retried_only_where_it_may_help(status: int,
                                                                                    retryable: bool) -> None:
    report = describe_error(_api_error(status, "Nope"), "Job/tiny-a1", _scrub)
    assert report == ErrorReport(f"Kubernetes refused Job/tiny-a1: {status} Nope", retryable)


def test_the_api_servers_message_is_scrubbed_and_a_body_that_is_not_a_status_is_left_out() -> None:
    body = msgspec.json.encode({"kind": "Status", "message": "jobs is forbidden: token=s3cret"})
    report = describe_error(_api_error(403, body=body), "Job/x", _scrub)
    assert report.reason == "Kubernetes refused Job/x: 403 Forbidden: jobs is forbidden: token=***"
    for junk in ("not json", "[1]", 5, None):
        report = describe_error(_api_error(403, body=junk), "Job/x", _scrub)
        assert report.reason == "Kubernetes refused Job/x: 403 Forbidden"


def test_no_answer_is_unreachable_and_retryable_unless_the_caller_counts_a_status_0_as_a_refusal() -> None:
    tls = _api_error(0, "SSLError\ncertificate verify failed")  # what the client raises for a TLS failure
    assert describe_error(tls, "Pods", _scrub) == ErrorReport("Kubernetes API unreachable (ApiException) at Pods", True)
    assert describe_refusal(tls, "Pods", _scrub) == ErrorReport(
        "Kubernetes refused Pods: 0 SSLError\ncertificate verify failed", False)
    down = urllib3.exceptions.MaxRetryError(None, "/api")  # type: ignore[arg-type]
    assert describe_error(down, "Pods", _scrub) == ErrorReport(
        "Kubernetes API unreachable (MaxRetryError) at Pods", True)
    assert describe_error(ConnectionRefusedError(), "Pods", _scrub).retryable
    with pytest.raises(msgspec.DecodeError) as caught:
        msgspec.json.decode(b"{", type=PodList)
    assert describe_error(caught.value, "Pods", _scrub) == ErrorReport(
        "Kubernetes API answered Pods with an unreadable object", True)
    assert not_found(_api_error(404)) and not not_found(_api_error(403)) and not not_found(OSError())


class _Failure(Exception):
    pass


def test_a_client_from_a_kubeconfig_and_a_clear_failure_without_one(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://kube.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    api = make_api_client(str(path), setting="X_KUBECONFIG", failure=_Failure)
    try:
        assert api.configuration.host == "https://kube.example:6443"
    finally:
        api.close()
    with pytest.raises(_Failure, match=r"no usable Kubernetes configuration .*set X_KUBECONFIG") as caught:
        make_api_client(str(tmp_path / "missing"), setting="X_KUBECONFIG", failure=_Failure)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


class _Response:
    """The raw urllib3 response the client returns with ``_preload_content=False``; records what was done to it."""

    def __init__(self, data: bytes, done: list[str]) -> None:
        self._data = data
        self.done = done

    @property
    def data(self) -> bytes:
        self.done.append("read")
        return self._data

    def drain_conn(self) -> None:
        self.done.append("drain")

    def close(self) -> None:
        self.done.append("close")

    def release_conn(self) -> None:
        self.done.append("release")


class _Method:
    """A client method: answers ``data``, remembering its options and the thread it ran on."""

    def __init__(self, data: bytes = b"{}") -> None:
        self.done: list[str] = []
        self.data = data
        self.kwargs: dict[str, Any] = {}
        self.thread: int | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> _Response:
        self.kwargs = kwargs
        self.thread = threading.get_ident()
        return _Response(self.data, self.done)


async def test_read_decodes_off_the_loop_with_the_timeout_and_releases_even_an_unreadable_answer() -> None:
    method = _Method(b'{"items": [{"metadata": {"name": "p1"}, "status": {"phase": "Running"}}]}')
    pods = await read(method, PodList, label_selector="a=b")
    assert [(p.metadata.name, p.status.phase) for p in pods.items] == [("p1", "Running")]
    assert method.kwargs == {"label_selector": "a=b", "_request_timeout": TIMEOUT_S, "_preload_content": False}
    assert method.thread != threading.get_ident() and method.done == ["read", "release"]
    broken = _Method(b"{")
    with pytest.raises(msgspec.DecodeError):
        await read(broken, PodList)
    assert broken.done == ["read", "release"]


async def test_send_drains_read_text_reads_and_probe_closes_before_it_releases() -> None:
    sent = _Method()
    await send(sent, "name", propagation_policy="Background")
    assert sent.done == ["drain", "release"] and sent.kwargs["_request_timeout"] == TIMEOUT_S
    logged = _Method(b"line 1\n\xff")
    assert await read_text(logged, "pod") == "line 1\n\ufffd" and logged.done == ["read", "release"]
    probed = _Method(b"x" * 1000)  # a CRD's schema: never read
    await probe(probed, "scaledobjects.keda.sh")
    assert probed.done == ["close", "release"] and probed.kwargs["_preload_content"] is False

"""ServingClient against an in-memory double of the serving REST API and the gateway (httpx.MockTransport).

The double answers with the real wire types of control/serving/protocol.py, encoded as the server encodes
them, so the client's decoding is tested against the contract; the live server is test_end_to_end_local.py's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

import control.serving.client as client_module
from control.serving.client import ServingClient, ServingError
from control.serving.protocol import DeleteResult, Endpoint, SlotHealth

KEY = "sk-admin-0123456789abcdefSECRET"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _endpoint(endpoint_id: str, **changes: Any) -> Endpoint:
    fields: dict[str, Any] = dict(
        id=endpoint_id, name=endpoint_id.removeprefix("ep_"), route=endpoint_id.removeprefix("ep_"),
        environment="DEV", model_id="mdl_1", model={"name": "tiny", "status": "approved"}, runtime="local",
        runtime_image="vllm/vllm-openai:v0.11.0", use_gpu=False, gpu_count=0, min_replicas=1, max_replicas=1,
        autoscaling=client_module.AutoscalingPolicy(), vllm_args=[], queue_timeout_s=60.0, status="deploying",
        status_reason=None, current_revision=1, canary_revision=None, traffic_split={"1": 100}, slots={},
        replicas={"ready": 0, "desired": 1}, checked_at=None, created_at=NOW, created_by="alice", updated_at=NOW,
        updated_by="alice")
    fields.update(changes)
    return Endpoint(**fields)


def _slot(revision: int, phase: str = "ready", weight: int = 100) -> SlotHealth:
    return SlotHealth(revision=revision, phase=phase, reason=None, message="", ready_replicas=int(phase == "ready"),
                      desired_replicas=1, weight_percent=weight)


def _envelope(status: int, data: Any, message: str = "OK") -> httpx.Response:
    kind = "success" if status < 400 else "fail" if status < 500 else "error"
    return httpx.Response(status, content=msgspec.json.encode({"status": kind, "message": message, "data": data}),
                          headers={"content-type": "application/json", "x-request-id": "req-1"})


class FakeServing:
    """The path table of control/serving/protocol.py, in memory; `script` plays a sequence of GET answers."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.script: dict[str, list[Endpoint]] = {}
        self.listed: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.delete_answer: tuple[int, DeleteResult] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": r} for r in sorted(self.listed)]})
        if path == "/v1/chat/completions":
            return self._chat(json.loads(request.content))
        assert path.startswith("/llm-ops/v1/serving/endpoints"), path
        parts = request.url.raw_path.decode().split("?")[0].split("/")[5:]
        if not parts:
            return self._collection(request)
        endpoint = self.endpoints.get(parts[0])
        if endpoint is None:
            return _envelope(404, None, f"Endpoint {parts[0]!r} not found")
        if request.method == "GET" and len(parts) == 1:
            script = self.script.get(endpoint.id)
            return _envelope(200, msgspec.to_builtins(script.pop(0) if script else endpoint))
        if request.method == "DELETE":
            status, result = self.delete_answer or (200, DeleteResult(
                endpoint_id=endpoint.id, deleted=True, resources_deleted=["process 4242"],
                resources_already_gone=[], resources_failed={}))
            return _envelope(status, msgspec.to_builtins(result), "Deleted" if status == 200 else "Partial delete")
        return _envelope(200, msgspec.to_builtins(endpoint))  # redeploy, traffic, rollback, promote: echo

    def _collection(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            if body["name"] in {e.name for e in self.endpoints.values()}:
                return _envelope(409, None, f"Endpoint name {body['name']!r} is taken")
            endpoint = _endpoint("ep_" + body["name"], model_id=body["modelId"])
            self.endpoints[endpoint.id] = endpoint
            return _envelope(201, msgspec.to_builtins(endpoint), "Endpoint created")
        query = request.url.params
        matches = [e for e in self.endpoints.values()
                   if query.get("environment") in (None, e.environment) and query.get("modelId") in (None, e.model_id)]
        page, size = int(query["page"]), int(query["pageSize"])
        items = matches[(page - 1) * size:page * size]
        return _envelope(200, {"items": msgspec.to_builtins(items), "page": page, "pageSize": size,
                               "total": len(matches)})

    def _chat(self, body: dict[str, Any]) -> httpx.Response:
        if body["model"] not in self.listed:
            return httpx.Response(404, json={"error": {"message": f"The model `{body['model']}` does not exist",
                                                       "type": "invalid_request_error", "param": "model",
                                                       "code": "model_not_found"}})
        answer = {"id": "c1", "object": "chat.completion", "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"},
                               "finish_reason": "stop"}]}
        return httpx.Response(200, json=answer, headers={"x-llmops-provider": f"serving:ep_{body['model']}:stable"})


@pytest.fixture
def fake() -> FakeServing:
    return FakeServing()


@pytest.fixture
def client(fake: FakeServing) -> ServingClient:
    return ServingClient("http://control.test:4000", KEY, transport=httpx.MockTransport(fake.handle), timeout=5)


def test_deploy_sends_the_wire_body_with_the_key_and_decodes_the_endpoint(
        client: ServingClient, fake: FakeServing) -> None:
    endpoint = client.deploy("chat-small", "mdl_7", environment="DEV", use_gpu=False, vllm_args=["--max-model-len",
                                                                                                "2048"])
    assert isinstance(endpoint, Endpoint) and endpoint.id == "ep_chat-small" and endpoint.model_id == "mdl_7"
    sent = fake.requests[-1]
    assert sent.method == "POST" and sent.url.path == "/llm-ops/v1/serving/endpoints"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(sent.content)
    assert body["name"] == "chat-small" and body["modelId"] == "mdl_7" and body["useGpu"] is False
    assert body["vllmArgs"] == ["--max-model-len", "2048"] and body["autoscaling"]["targetQueueLength"] == 5.0


def test_a_refusal_carries_status_and_envelope_message_but_never_the_key(client: ServingClient) -> None:
    client.deploy("dup", "mdl_1")
    with pytest.raises(ServingError) as refused:
        client.deploy("dup", "mdl_1")
    assert refused.value.status == 409 and refused.value.message == "Endpoint name 'dup' is taken"
    assert refused.value.request_id == "req-1"
    with pytest.raises(ServingError) as missing:
        client.get("ep_nope")
    assert missing.value.status == 404 and "not found" in str(missing.value)
    for text in (str(refused.value), repr(refused.value), str(missing.value), repr(client)):
        assert KEY not in text


def test_list_reads_every_page_and_passes_the_filters(client: ServingClient, fake: FakeServing) -> None:
    for i in range(450):
        e = _endpoint(f"ep_e{i}", environment="PROD" if i % 3 == 0 else "DEV")
        fake.endpoints[e.id] = e
    assert len(client.list()) == 450
    prod = client.list(environment="PROD", model_id="mdl_1")
    assert len(prod) == 150 and {e.environment for e in prod} == {"PROD"}
    assert fake.requests[-1].url.params["environment"] == "PROD" and fake.requests[-1].url.params["modelId"] == "mdl_1"
    assert client.list(environment="STG") == []


def test_ids_stay_one_path_segment(client: ServingClient, fake: FakeServing) -> None:
    for hostile in ("../../catalog/models", "a/b", "x?page=2#f", ".."):
        with pytest.raises(ServingError) as missing:
            client.get(hostile)
        assert missing.value.status == 404
        assert fake.requests[-1].url.raw_path.decode().startswith("/llm-ops/v1/serving/endpoints/")
        assert fake.requests[-1].url.raw_path.decode().count("/") == 5


def test_wait_for_healthy_waits_for_the_wanted_revision_and_the_route(
        client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_w", current_revision=2, status="ready", slots={"stable": _slot(2)})
    fake.endpoints[e.id] = e
    # deploying; ready but still the old revision in the stable slot (a surge); then the new one (and on)
    fake.script[e.id] = [
        _endpoint("ep_w", current_revision=2, status="deploying"),
        _endpoint("ep_w", current_revision=2, status="ready", slots={"stable": _slot(1)}),
    ]
    seen_routes = []

    def list_route_on_third_look(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            seen_routes.append(1)
            if len(seen_routes) == 2:  # listed from the second look on
                fake.listed.add("w")
        return fake.handle(request)

    client = ServingClient("http://control.test:4000", KEY, transport=httpx.MockTransport(list_route_on_third_look))
    ready = client.wait_for_healthy("ep_w", timeout_s=5, poll_s=0.001)
    assert ready.slots["stable"].revision == 2
    gets = [r for r in fake.requests if r.url.path.endswith("/endpoints/ep_w")]
    assert len(gets) == 4 and len(seen_routes) == 2  # 2 unhealthy looks, 1 with the route missing, then ready


def test_wait_for_healthy_raises_the_failure_reason(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_f", status="failed", status_reason="ImagePullBackOff: invalid/vllm:none not found")
    fake.endpoints[e.id] = e
    with pytest.raises(ServingError) as failed:
        client.wait_for_healthy("ep_f", timeout_s=5)
    assert "ImagePullBackOff" in str(failed.value) and failed.value.endpoint == e


def test_wait_for_healthy_raises_when_the_revision_rolling_out_fails(
        client: ServingClient, fake: FakeServing) -> None:
    crashing = SlotHealth(revision=2, phase="failed", reason="CrashLoopBackOff", message="exit code 3",
                          ready_replicas=0, desired_replicas=1, weight_percent=20)
    e = _endpoint("ep_c", status="degraded", status_reason="CanaryNotReady", canary_revision=2,
                  slots={"stable": _slot(1, weight=80), "canary": crashing})
    fake.endpoints[e.id] = e
    with pytest.raises(ServingError) as failed:
        client.wait_for_healthy("ep_c", timeout_s=5)
    assert "canary revision 2: CrashLoopBackOff (exit code 3)" in str(failed.value)


def test_wait_for_healthy_times_out_with_the_last_status(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_t", status="deploying", status_reason="ContainerCreating")
    fake.endpoints[e.id] = e
    with pytest.raises(ServingError) as late:
        client.wait_for_healthy("ep_t", timeout_s=0.1, poll_s=0.01)
    assert late.value.status is None and "deploying (ContainerCreating)" in str(late.value)
    assert late.value.endpoint is not None and late.value.endpoint.status == "deploying"


def test_external_endpoints_without_slots_are_healthy_when_ready() -> None:
    assert client_module.is_healthy(_endpoint("ep_x", runtime="external", status="ready"))
    assert not client_module.is_healthy(_endpoint("ep_l", runtime="local", status="ready"))
    canary = _endpoint("ep_c", status="ready", current_revision=1, canary_revision=2,
                       slots={"stable": _slot(1, weight=50), "canary": _slot(2, "progressing", 50)})
    assert not client_module.is_healthy(canary)
    assert client_module.is_healthy(msgspec.structs.replace(
        canary, slots={"stable": _slot(1, weight=50), "canary": _slot(2, weight=50)}))


def test_check_health_reports_slots_replicas_and_the_gateway(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_h", status="degraded", status_reason="CrashLoopBackOff",
                  slots={"stable": _slot(1)}, replicas={"ready": 1, "desired": 2})
    fake.endpoints[e.id] = e
    health = client.check_health("ep_h")
    assert not health.healthy and health.route_listed is False and health.status_reason == "CrashLoopBackOff"
    assert (health.ready_replicas, health.desired_replicas) == (1, 2) and health.slots["stable"].revision == 1
    fake.endpoints[e.id] = msgspec.structs.replace(e, status="ready", status_reason=None)
    fake.listed.add("h")
    assert client.check_health("ep_h").healthy


def test_lifecycle_calls_send_their_bodies(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_l")
    fake.endpoints[e.id] = e
    calls: list[tuple[Callable[[], Endpoint], str, dict[str, Any]]] = [
        (lambda: client.redeploy("ep_l", use_gpu=True, serving_runtime_image="vllm/vllm-openai:v0.11.1",
                                 canary_percent=10, reason="new image"), "redeploy",
         {"useGpu": True, "servingRuntimeImage": "vllm/vllm-openai:v0.11.1", "canaryPercent": 10,
          "reason": "new image"}),
        (lambda: client.set_traffic("ep_l", 50), "traffic", {"canaryPercent": 50, "reason": ""}),
        (lambda: client.rollback("ep_l"), "rollback", {"revision": None, "reason": ""}),
        (lambda: client.rollback("ep_l", 3, reason="bad answers"), "rollback", {"revision": 3,
                                                                                "reason": "bad answers"}),
        (lambda: client.promote("ep_l", "STG"), "promote", {"environment": "STG", "override": False, "reason": ""}),
    ]
    for call, action, expected in calls:
        assert isinstance(call(), Endpoint)
        sent = fake.requests[-1]
        assert sent.method == "POST" and sent.url.path == f"/llm-ops/v1/serving/endpoints/ep_l/{action}"
        body = json.loads(sent.content)
        assert {k: body[k] for k in expected} == expected, action


def test_delete_complete_and_partial(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_d")
    fake.endpoints[e.id] = e
    result = client.delete("ep_d")
    assert result.deleted and result.resources_deleted == ["process 4242"]
    fake.delete_answer = (502, DeleteResult(endpoint_id="ep_d", deleted=False, resources_deleted=[],
                                            resources_already_gone=["Service/llm-d"],
                                            resources_failed={"Deployment/llm-d": "forbidden"}))
    with pytest.raises(ServingError) as partial:
        client.delete("ep_d")
    assert partial.value.status == 502 and partial.value.message == "Partial delete"
    assert partial.value.data["resourcesFailed"] == {"Deployment/llm-d": "forbidden"}


def test_revisions_decode(fake: FakeServing) -> None:
    revision = {"endpointId": "ep_r", "revision": 2, "state": "active", "modelId": "mdl_1", "modelVersion": 1,
                "image": "vllm/vllm-openai:v0.11.0", "useGpu": False, "gpuCount": 0, "resources": {"cpu": "2"},
                "minReplicas": 1, "maxReplicas": 1, "vllmArgs": [], "manifests": [{"kind": "LocalProcess"}],
                "reason": "", "createdAt": "2026-12-02T09:00:00Z", "createdBy": "alice"}

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/llm-ops/v1/serving/endpoints/ep_r/revisions"
        return _envelope(200, {"items": [revision], "page": 1, "pageSize": 200, "total": 1})

    client = ServingClient("http://c:1", KEY, transport=httpx.MockTransport(handle))
    [got] = client.revisions("ep_r")
    assert got.revision == 2 and got.state == "active" and got.created_at == NOW


def test_call_chat_model_by_route_by_endpoint_and_unknown(client: ServingClient, fake: FakeServing) -> None:
    e = _endpoint("ep_chat", route="chat")
    fake.endpoints[e.id] = e
    fake.listed.add("chat")
    reply = client.call_chat_model("chat", [{"role": "user", "content": "Hi"}], max_tokens=5)
    assert reply.content == "hello there" and reply.provider == "serving:ep_chat:stable"
    sent = json.loads(fake.requests[-1].content)
    assert sent == {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    assert client.call_chat_model("ep_chat", [{"role": "user", "content": "Hi"}]).body["model"] == "chat"
    assert client.call_chat_model(e, [{"role": "user", "content": "Hi"}]).body["model"] == "chat"
    with pytest.raises(ServingError) as missing:
        client.call_chat_model("gone", [{"role": "user", "content": "Hi"}])
    assert missing.value.status == 404 and missing.value.code == "model_not_found"
    with pytest.raises(ValueError, match="stream"):
        client.call_chat_model("chat", [{"role": "user", "content": "Hi"}], stream=True)


def test_unreachable_and_foreign_answers_are_serving_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServingError) as down:
        ServingClient("http://10.0.0.1:4000", KEY, transport=httpx.MockTransport(refuse)).get("ep_1")
    assert down.value.status is None and "cannot reach 10.0.0.1:4000" in str(down.value)
    assert KEY not in str(down.value) and down.value.__cause__ is None and down.value.__suppress_context__

    html = ServingClient("http://c:1", KEY, transport=httpx.MockTransport(
        lambda r: httpx.Response(502, text=f"<html>proxy error for key {KEY}</html>")))
    with pytest.raises(ServingError) as foreign:
        html.get("ep_1")
    assert foreign.value.status == 502 and foreign.value.message == "HTTP 502 Bad Gateway"
    with pytest.raises(ServingError) as foreign_chat:
        html.call_chat_model("r", [])
    assert KEY not in str(foreign_chat.value) and foreign_chat.value.status == 502

    garbled = ServingClient("http://c:1", KEY, transport=httpx.MockTransport(
        lambda r: _envelope(200, {"id": 1})))
    with pytest.raises(ServingError, match="unexpected answer"):
        garbled.get("ep_1")


def test_a_real_refused_connection(unused_port: int) -> None:
    with ServingClient(f"http://127.0.0.1:{unused_port}", KEY, timeout=2) as closed, \
            pytest.raises(ServingError, match="cannot reach"):
        closed.list()


@pytest.fixture
def unused_port() -> int:
    from tests.servers import free_port

    return free_port()


def test_public_names() -> None:
    assert set(client_module.__all__) == {"ChatReply", "EndpointHealth", "ServingClient", "ServingError",
                                          "failed_reason", "is_healthy"}
    assert all(hasattr(client_module, name) for name in client_module.__all__)

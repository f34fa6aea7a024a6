"""``ServingClient``: the operator's Python client for the serving module and the gateway in front of it.

Synchronous (httpx), for scripts, notebooks and CI jobs: one call per REST operation of
``/llm-ops/v1/serving/`` (the path table is in ``control/serving/protocol.py``), plus ``wait_for_healthy``,
``check_health`` and ``call_chat_model`` through the gateway's ``/v1/chat/completions``.

Answers are the wire types of ``control.serving.protocol`` (``Endpoint``, ``Revision``, ``DeleteResult``) as
msgspec structs, decoded strictly, so a script reads ``endpoint.status`` and ``endpoint.traffic_split``
instead of digging through camelCase dicts; ``msgspec.to_builtins(x)`` turns any of them back into JSON.

Every failure is one exception type::

    ServingError            status: the HTTP status (None when nothing answered or a wait ran out),
                            message: the envelope's (or OpenAI error's) message, code: OpenAI's error code,
                            data: the envelope's data (a partial delete's DeleteResult, field errors),
                            endpoint: the last Endpoint seen by wait_for_healthy

The API key is sent as a header and appears in no message, ``repr`` or exception.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from control.serving.protocol import (
    AutoscalingPolicy,
    DeleteResult,
    Endpoint,
    EndpointCreate,
    Environment,
    Promote,
    Redeploy,
    Revision,
    Rollback,
    SlotHealth,
    TrafficChange,
)

__all__ = ["ChatReply", "EndpointHealth", "ServingClient", "ServingError", "failed_reason", "is_healthy"]

T = TypeVar("T")
_PREFIX = "/llm-ops/v1/serving"
_PAGE_SIZE = 200  # the admin API's largest page: list() and revisions() read every page
HEALTHY = frozenset({"ready", "scaled_to_zero"})  # routable: scaled_to_zero requests wait at the gateway


class ServingError(Exception):
    """A refused call, an unreachable server, a failed endpoint or a wait that ran out (see module docstring)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 data: Any = None, request_id: str | None = None, endpoint: Endpoint | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.message = message
        self.status = status
        self.code = code
        self.data = data
        self.request_id = request_id
        self.endpoint = endpoint


class ChatReply(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion through the gateway: the text, the OpenAI body, and which provider answered."""

    content: str
    body: dict[str, Any]
    provider: str | None  # x-llmops-provider: serving:<endpoint id>:stable / :canary for an endpoint's slots
    request_id: str | None


class EndpointHealth(msgspec.Struct, frozen=True, kw_only=True):
    endpoint_id: str
    route: str
    status: str
    status_reason: str | None
    healthy: bool  # routable, every slot on its wanted revision and ready
    ready_replicas: int
    desired_replicas: int
    slots: dict[str, SlotHealth]
    traffic_split: dict[str, int]
    route_listed: bool | None  # the gateway lists the route in /v1/models; None when it could not be asked


class _Envelope(msgspec.Struct, Generic[T]):
    status: str
    message: str
    data: T


class _Page(msgspec.Struct, Generic[T], rename="camel"):
    items: list[T]
    page: int
    page_size: int
    total: int


_ERROR_BODY = msgspec.json.Decoder(dict[str, Any])


def is_healthy(endpoint: Endpoint) -> bool:
    """Routable, and every slot runs the revision the endpoint wants there and is ready.

    After a redeploy the endpoint's status can still read ``ready`` while the old process serves during the
    surge; the slot's revision tells the two apart."""
    if endpoint.status not in HEALTHY:
        return False
    wanted = {"stable": endpoint.current_revision, "canary": endpoint.canary_revision}
    for slot, revision in wanted.items():
        health = endpoint.slots.get(slot)
        if revision is None or (health is None and endpoint.runtime == "external"):
            continue
        if health is None or health.revision != revision or health.phase not in HEALTHY:
            return False
    return True


def failed_reason(endpoint: Endpoint) -> str | None:
    """Why the endpoint, or the revision a slot is rolling out, failed; None while nothing has.

    A redeploy whose new revision crashes leaves the endpoint ``degraded`` (the old one still serves), so the
    slot's own phase is read too."""
    if endpoint.status == "failed":
        return endpoint.status_reason or "no reason given"
    wanted = {"stable": endpoint.current_revision, "canary": endpoint.canary_revision}
    for slot, revision in wanted.items():
        health = endpoint.slots.get(slot)
        if health is not None and health.revision == revision and health.phase == "failed":
            return f"{slot} revision {revision}: {health.reason or 'failed'}" + (
                f" ({health.message})" if health.message else "")
    return None


class ServingClient:
    """One client per control plane; ``base_url`` is the server root (``http://127.0.0.1:4000``).

    ``gateway_url`` defaults to ``base_url`` (one process serves both); ``gateway_api_key`` to ``api_key``
    (a key holding an admin role and ``inference``). ``transport`` lets tests hand in ``httpx.MockTransport``.
    """

    def __init__(self, base_url: str, api_key: str, *, gateway_url: str | None = None,
                 gateway_api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        root = base_url.rstrip("/").removesuffix("/llm-ops/v1")
        self._admin = httpx.Client(base_url=root + _PREFIX, timeout=timeout, transport=transport,
                                   headers={"authorization": f"Bearer {api_key}"})
        gateway = (gateway_url or root).rstrip("/").removesuffix("/v1")
        self._gateway = httpx.Client(base_url=gateway, timeout=timeout, transport=transport,
                                     headers={"authorization": f"Bearer {gateway_api_key or api_key}"})

    def __repr__(self) -> str:
        return f"ServingClient({str(self._admin.base_url)!r}, gateway={str(self._gateway.base_url)!r})"

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._admin.close()
        self._gateway.close()

    # -- endpoints -------------------------------------------------------------------------------------------

    def deploy(self, name: str, model_id: str, *, environment: Environment = "DEV", route: str | None = None,
               serving_runtime_image: str | None = None, use_gpu: bool | None = None,
               gpu_count: int | None = None, min_replicas: int = 1, max_replicas: int = 1,
               autoscaling: AutoscalingPolicy | None = None, vllm_args: Sequence[str] = (),
               queue_timeout_s: float | None = None) -> Endpoint:
        """Create an endpoint (revision 1); it is ``deploying`` until ``wait_for_healthy`` says otherwise."""
        body = EndpointCreate(
            name=name, model_id=model_id, environment=environment, route=route,
            serving_runtime_image=serving_runtime_image, use_gpu=use_gpu, gpu_count=gpu_count,
            min_replicas=min_replicas, max_replicas=max_replicas, autoscaling=autoscaling or AutoscalingPolicy(),
            vllm_args=builtins.list(vllm_args), queue_timeout_s=queue_timeout_s)
        return self._call("POST", "/endpoints", Endpoint, body)

    def list(self, *, environment: Environment | None = None, model_id: str | None = None,
             status: str | None = None) -> builtins.list[Endpoint]:
        """Every endpoint matching the filters (all pages)."""
        query = {"environment": environment, "modelId": model_id, "status": status}
        return self._all_pages("/endpoints", Endpoint, {k: v for k, v in query.items() if v is not None})

    def get(self, endpoint_id: str) -> Endpoint:
        return self._call("GET", f"/endpoints/{_segment(endpoint_id)}", Endpoint)

    def revisions(self, endpoint_id: str) -> builtins.list[Revision]:
        """The endpoint's revisions, newest first (all pages)."""
        return self._all_pages(f"/endpoints/{_segment(endpoint_id)}/revisions", Revision, {})

    def redeploy(self, endpoint_id: str, *, use_gpu: bool | None = None, serving_runtime_image: str | None = None,
                 gpu_count: int | None = None, min_replicas: int | None = None, max_replicas: int | None = None,
                 vllm_args: Sequence[str] | None = None, canary_percent: int | None = None,
                 reason: str = "") -> Endpoint:
        """A new revision from the model's current version; with ``canary_percent`` it takes that share."""
        body = Redeploy(use_gpu=use_gpu, serving_runtime_image=serving_runtime_image, gpu_count=gpu_count,
                        min_replicas=min_replicas, max_replicas=max_replicas,
                        vllm_args=None if vllm_args is None else builtins.list(vllm_args),
                        canary_percent=canary_percent, reason=reason)
        return self._call("POST", f"/endpoints/{_segment(endpoint_id)}/redeploy", Endpoint, body)

    def set_traffic(self, endpoint_id: str, canary_percent: int, *, reason: str = "") -> Endpoint:
        """The canary's share: 100 makes it the stable revision, 0 drops it."""
        body = TrafficChange(canary_percent=canary_percent, reason=reason)
        return self._call("POST", f"/endpoints/{_segment(endpoint_id)}/traffic", Endpoint, body)

    def rollback(self, endpoint_id: str, revision: int | None = None, *, reason: str = "") -> Endpoint:
        """Drop a running canary, else go back to ``revision`` (default: the previous active one)."""
        body = Rollback(revision=revision, reason=reason)
        return self._call("POST", f"/endpoints/{_segment(endpoint_id)}/rollback", Endpoint, body)

    def promote(self, endpoint_id: str, environment: Literal["STG", "PROD"], *, override: bool = False,
                reason: str = "") -> Endpoint:
        """DEV -> STG -> PROD, one step; ``override`` (admin, with a reason) passes a failed promotion gate."""
        body = Promote(environment=environment, override=override, reason=reason)
        return self._call("POST", f"/endpoints/{_segment(endpoint_id)}/promote", Endpoint, body)

    def delete(self, endpoint_id: str) -> DeleteResult:
        """Remove the endpoint and every runtime resource. A partial delete raises ``ServingError`` (502) whose
        ``data`` is the DeleteResult; calling again finishes it."""
        return self._call("DELETE", f"/endpoints/{_segment(endpoint_id)}", DeleteResult)

    # -- health ----------------------------------------------------------------------------------------------

    def wait_for_healthy(self, endpoint_id: str, *, timeout_s: float = 120.0, poll_s: float = 0.5,
                         route_listed: bool = True) -> Endpoint:
        """Poll until the endpoint is healthy (``is_healthy``) and, with ``route_listed``, the gateway lists its
        route; raise ``ServingError`` with the endpoint's ``status_reason`` when it fails or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            endpoint = self.get(endpoint_id)
            failure = failed_reason(endpoint)
            if failure is not None:
                raise ServingError(f"endpoint {endpoint_id} failed: {failure}", endpoint=endpoint)
            if is_healthy(endpoint) and (not route_listed or self._route_listed(endpoint.route)):
                return endpoint
            if time.monotonic() >= deadline:
                raise ServingError(
                    f"endpoint {endpoint_id} not healthy after {timeout_s:g} s: status {endpoint.status}"
                    + (f" ({endpoint.status_reason})" if endpoint.status_reason else ""), endpoint=endpoint)
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def check_health(self, endpoint_id: str) -> EndpointHealth:
        """One look: the endpoint's status, slots and replicas, and whether the gateway routes it."""
        endpoint = self.get(endpoint_id)
        try:
            listed: bool | None = self._route_listed(endpoint.route)
        except ServingError:
            listed = None
        return EndpointHealth(
            endpoint_id=endpoint.id, route=endpoint.route, status=endpoint.status,
            status_reason=endpoint.status_reason, healthy=is_healthy(endpoint) and listed is not False,
            ready_replicas=endpoint.replicas.get("ready", 0), desired_replicas=endpoint.replicas.get("desired", 0),
            slots=endpoint.slots, traffic_split=endpoint.traffic_split, route_listed=listed)

    # -- the gateway -----------------------------------------------------------------------------------------

    def call_chat_model(self, route_or_endpoint: str | Endpoint, messages: Sequence[Mapping[str, Any]],
                        **params: Any) -> ChatReply:
        """One non-streamed chat completion through the gateway. ``route_or_endpoint``: a route name, an
        ``Endpoint``, or an endpoint id (``ep_…``, looked up for its route); ``params`` go into the body."""
        if params.get("stream"):
            raise ValueError("call_chat_model does not stream; use the openai SDK against the gateway for that")
        route = self._route_of(route_or_endpoint)
        body = {**params, "model": route, "messages": builtins.list(messages)}
        with _translated(self._gateway.base_url):
            response = self._gateway.post("/v1/chat/completions", json=body)
        answer = _decode_gateway(response)
        choices = answer.get("choices") or [{}]
        content = ((choices[0] or {}).get("message") or {}).get("content") or ""
        return ChatReply(content=content, body=answer, provider=response.headers.get("x-llmops-provider"),
                         request_id=response.headers.get("x-request-id"))

    # -- plumbing --------------------------------------------------------------------------------------------

    def _route_of(self, target: str | Endpoint) -> str:
        if isinstance(target, Endpoint):
            return target.route
        if target.startswith("ep_"):
            try:
                return self.get(target).route
            except ServingError as exc:
                if exc.status != 404:
                    raise
        return target

    def _route_listed(self, route: str) -> bool:
        with _translated(self._gateway.base_url):
            response = self._gateway.get("/v1/models")
        models = _decode_gateway(response).get("data") or []
        return any(isinstance(m, dict) and m.get("id") == route for m in models)

    def _call(self, method: str, path: str, answer: type[T], body: msgspec.Struct | None = None,
              params: Mapping[str, Any] | None = None) -> T:
        content = None if body is None else msgspec.json.encode(body)
        headers = {"content-type": "application/json"} if content is not None else None
        with _translated(self._admin.base_url):
            response = self._admin.request(method, path, content=content, headers=headers, params=params)
        if not response.is_success:
            raise _envelope_error(response)
        try:
            return msgspec.json.decode(response.content, type=_Envelope[answer]).data  # type: ignore[valid-type]
        except msgspec.DecodeError as exc:
            raise ServingError(f"unexpected answer from {method} {path}: {exc}", status=response.status_code,
                               request_id=response.headers.get("x-request-id")) from None

    def _all_pages(self, path: str, item: type[T], query: dict[str, Any]) -> builtins.list[T]:
        items: builtins.list[T] = []
        page = 1
        while True:
            got = self._call("GET", path, _Page[item], params={**query, "page": page,  # type: ignore[valid-type]
                                                                 "pageSize": _PAGE_SIZE})
            items.extend(got.items)
            if not got.items or len(items) >= got.total:
                return items
            page += 1


def _segment(value: str) -> str:
    """An id as one path segment: '/', '?', '#' and dot segments must not reach another path."""
    return "%2E" * len(value) if value in (".", "..") else quote(value, safe="")


@contextlib.contextmanager
def _translated(url: httpx.URL) -> Iterator[None]:
    """httpx's transport errors become ServingError (status None): the one place they are translated."""
    try:
        yield
    except httpx.TimeoutException:
        raise ServingError(f"{url.host}:{url.port}: no answer in time") from None
    except httpx.HTTPError as exc:
        raise ServingError(f"cannot reach {url.host}:{url.port}: {type(exc).__name__}") from None


def _envelope_error(response: httpx.Response) -> ServingError:
    body = _json_or_none(response)
    message = body.get("message") if isinstance(body, dict) else None
    return ServingError(message if isinstance(message, str) else _fallback_message(response),
                        status=response.status_code, data=body.get("data") if isinstance(body, dict) else None,
                        request_id=response.headers.get("x-request-id"))


def _decode_gateway(response: httpx.Response) -> dict[str, Any]:
    body = _json_or_none(response)
    if response.is_success and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        raise ServingError(str(error.get("message") or _fallback_message(response)), status=response.status_code,
                           code=code if isinstance(code, str) else None, data=error,
                           request_id=response.headers.get("x-request-id"))
    raise ServingError(_fallback_message(response), status=response.status_code,
                       request_id=response.headers.get("x-request-id"))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return _ERROR_BODY.decode(response.content)
    except msgspec.DecodeError:
        return None


def _fallback_message(response: httpx.Response) -> str:
    """An answer that is not ours (a proxy's HTML page): its status line only, never its body."""
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()

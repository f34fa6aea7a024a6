"""`/_mock/*` endpoints: drive the mock upstream from another process (load tests, `llmops mock-upstream`).

In-process tests use `MockServer` attributes directly; these routes expose the
same knobs over HTTP. They never require the upstream API key, so they answer
403 unless `MockConfig.faults` is on (`llmops mock-upstream --faults`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from adapters.testdoubles.mock_responses import openai_error
from adapters.testdoubles.mock_state import Fault, MockConfig, MockState

__all__ = ["add_control_routes"]

_CONFIG_FIELDS = frozenset(MockConfig.__struct_fields__)
_encode = msgspec.json.encode


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json")


def _bad(message: str) -> web.Response:
    return web.Response(body=openai_error(message, "invalid_request_error"), status=400,
                        content_type="application/json")


def add_control_routes(app: web.Application, key: web.AppKey[MockState]) -> None:
    Handler = Callable[[web.Request], Awaitable[web.Response]]

    def faults_only(handler: Handler) -> Handler:
        """Every `/_mock/*` route needs fault injection switched on: they can break the double
        for everyone, and `/_mock/requests` shows the headers the double was sent. (Per route,
        not a middleware: the chat routes the benchmark drives should not pay for the check.)"""

        async def guarded(request: web.Request) -> web.Response:
            if not request.app[key].config.faults:
                body = openai_error("mock control endpoints are off; start with --faults", "permission_error")
                return web.Response(body=body, status=403, content_type="application/json")
            return await handler(request)

        return guarded

    async def push_faults(request: web.Request) -> web.Response:
        """Body: a JSON list of Fault objects, appended to the FIFO queue."""
        try:
            faults = msgspec.json.decode(await request.read(), type=list[Fault])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _bad(f"expected a JSON list of faults: {exc}")
        state = request.app[key]
        state.push_faults(*faults)
        return _json({"queued": len(state.faults)})

    async def patch_config(request: web.Request) -> web.Response:
        """Body: a partial MockConfig; the named fields replace the current ones."""
        state = request.app[key]
        try:
            patch = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as exc:
            return _bad(f"invalid JSON: {exc}")
        if not isinstance(patch, dict):
            return _bad("expected a JSON object")
        unknown = sorted(set(patch) - _CONFIG_FIELDS)
        if unknown:
            return _bad(f"unknown config fields: {', '.join(unknown)}")
        try:
            state.config = msgspec.convert({**msgspec.structs.asdict(state.config), **patch}, MockConfig)
        except msgspec.ValidationError as exc:
            return _bad(str(exc))
        return _json(state.config)

    async def get_requests(request: web.Request) -> web.Response:
        return _json(request.app[key].requests)

    async def get_stats(request: web.Request) -> web.Response:
        state = request.app[key]
        return _json({"requests": len(state.requests), "disconnects": state.disconnects,
                      "active": state.active, "queued_faults": len(state.faults)})

    async def reset(request: web.Request) -> web.Response:
        """Clear requests, faults and counters, and restore the config the server started with."""
        state = request.app[key]
        state.clear()
        state.config = state.initial_config
        return _json({"ok": True})

    app.router.add_post("/_mock/faults", faults_only(push_faults))
    app.router.add_post("/_mock/config", faults_only(patch_config))
    app.router.add_get("/_mock/requests", faults_only(get_requests))
    app.router.add_get("/_mock/stats", faults_only(get_stats))
    app.router.add_post("/_mock/reset", faults_only(reset))

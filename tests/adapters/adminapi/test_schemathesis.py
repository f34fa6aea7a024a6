"""Schemathesis fuzzes every admin operation in the served OpenAPI document: no input may cause a 5xx.

The app is the real control plane with every installed module (entry-point
discovery), served by uvicorn on a loopback socket against PostgreSQL, the
stricter backend (it refuses NUL characters and out-of-range values that
SQLite would store). Requests carry the bootstrap admin key so they get past
auth and reach the handlers. Examples per operation are capped to keep the
suite fast; raise ``LLMOPS_FUZZ_EXAMPLES`` for a deeper local run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.checks import not_a_server_error

from adapters.adminapi import ControlCfg, load_control_plane

BOOTSTRAP = "fuzz-bootstrap-key"
EXAMPLES = int(os.environ.get("LLMOPS_FUZZ_EXAMPLES", "15"))


def build_app(database_url: str | None, data_dir: str) -> Litestar:
    plane = load_control_plane(ControlCfg(database_url=database_url, data_dir=data_dir), environ={},
                               bootstrap_admin_key=BOOTSTRAP)
    return Litestar(route_handlers=plane.route_handlers, lifespan=[plane.lifespan],
                    exception_handlers=plane.exception_handlers, openapi_config=plane.openapi_config)


# The document only depends on the installed modules, so it can be built without a database.
schema = schemathesis.openapi.from_dict(build_app(None, tempfile.mkdtemp()).openapi_schema.to_schema())


@pytest.fixture(scope="module")
def server_url(postgres_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = postgres_server.acquire_database()
    app = build_app(postgres_server.url(name), tempfile.mkdtemp())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False, lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.02)
        assert server.started, "admin app did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        postgres_server.release_database(name)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_input_causes_a_server_error(case: schemathesis.Case, server_url: str) -> None:
    response = case.call(base_url=server_url, headers={"Authorization": f"Bearer {BOOTSTRAP}"}, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
    if case.method.upper() in ("OPTIONS", "HEAD"):  # Litestar answers these itself, without a body
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    assert body["status"] == ("success" if response.status_code < 400 else "fail"), body

"""Schemathesis, every check, against the served OpenAPI document: the document must tell the truth.

The app is the real control plane with every installed module (entry-point discovery), served by
uvicorn on a loopback socket against SQLite (where unbounded integers used to overflow; the PostgreSQL
paths are covered by the module tests). Requests carry the bootstrap admin key so they reach the
handlers. The run is schemathesis' own engine (what ``st run --checks all`` drives): examples,
coverage, fuzzing and stateful phases, with a fixed seed (``LLMOPS_FUZZ_SEED`` picks another) and
``LLMOPS_FUZZ_EXAMPLES`` examples per operation (default 30). Any failure fails the test, listed with the
check, the operation (with its query) and the response.

Schema-valid requests may get 2XX, 401, 403, 404, 409 or 422 (``positive_data_acceptance``'s
``expected-statuses``, for every operation): a 422 is the API's answer to a body the schema accepts but whose
content it refuses (an unconfigured ``piiRules`` name, a missing ``parentModelId``, a raw ``provider.apiKey``,
a pattern both allowed and denied). A 400 or a 500 for schema-valid data fails.

Configured exceptions, each deliberate (see docs/admin-api.md, "OpenAPI document"):

* ``use_after_free`` is off for ``/admin/keys/{keyId}``: revoking a key keeps it readable, with its
  ``revokedAt``, so an operator can see who revoked what and when; and for a policy's versions: a
  deleted policy's history stays readable, for the same reason, as does a deleted prompt template's.
* The two multipart upload operations get no generated requests: their bodies are streamed files
  whose accepted extensions and contents the schema cannot state. Their declared responses are
  checked by ``tests/adapters/adminapi/test_openapi.py``.
* Schemathesis' own generation errors (hypothesis' flaky-generation and lambda-description errors
  in the coverage phase) are reported, not failed on; a server error is a ``not_a_server_error`` failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from litestar import Litestar
from schemathesis import engine, openapi
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.engine import events
from schemathesis.engine.recorder import ScenarioRecorder

from adapters.adminapi import ADMIN_PREFIX, ControlCfg, load_control_plane

BOOTSTRAP = "fuzz-bootstrap-key"
EXAMPLES = int(os.environ.get("LLMOPS_FUZZ_EXAMPLES", "30"))
SEED = int(os.environ.get("LLMOPS_FUZZ_SEED", "20240501"))
# What schema-valid data may get: success, an auth refusal, a missing reference (404), a conflict with
# the current state (409) or a semantic refusal (422). A 400 says the data broke the schema, so it fails.
ACCEPTED = ["2XX", "401", "403", "404", "409", "422"]


def build_app(database_url: str | None, data_dir: str) -> Litestar:
    plane = load_control_plane(ControlCfg(database_url=database_url, data_dir=data_dir), environ={},
                               bootstrap_admin_key=BOOTSTRAP)
    return Litestar(route_handlers=plane.route_handlers, lifespan=[plane.lifespan],
                    exception_handlers=plane.exception_handlers, openapi_config=plane.openapi_config)


def fuzz_config(base_url: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {BOOTSTRAP}"},
        "workers": 2,
        "request-timeout": 10,
        "generation": {"max-examples": EXAMPLES, "deterministic": True},
        "checks": {"enabled": True, "positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        "suppress-health-check": ["all"],
        "warnings": False,
        "operations": [
            {"include-path": f"{ADMIN_PREFIX}/admin/keys/{{keyId}}", "checks": {"use_after_free": {"enabled": False}}},
            {"include-path-regex": "/governance/policies/", "checks": {"use_after_free": {"enabled": False}}},
            {"include-path-regex": "/prompts/templates/", "checks": {"use_after_free": {"enabled": False}}},
            {"include-path-regex": "/upload$", "enabled": False},
        ],
    })


_SERVE = """
import sys, uvicorn
from litestar import Litestar
from adapters.adminapi import ControlCfg, load_control_plane
port, data_dir, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
plane = load_control_plane(ControlCfg(database_url=f"sqlite+aiosqlite:///{data_dir}/llmops.db", data_dir=data_dir),
                           environ={}, bootstrap_admin_key=key)
app = Litestar(route_handlers=plane.route_handlers, lifespan=[plane.lifespan],
               exception_handlers=plane.exception_handlers, openapi_config=plane.openapi_config)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
"""


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    # A process of its own: sharing the test's GIL with schemathesis' generation doubles the run time.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", _SERVE, str(port), tempfile.mkdtemp(), BOOTSTRAP],
                              cwd=Path(__file__).parents[3])
    try:
        deadline = time.monotonic() + 90  # importing every module takes ~20 s on a busy 2-core machine
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert server.poll() is None, "admin app exited"
            time.sleep(0.05)
        else:
            pytest.fail("admin app did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(15)


def _failures(recorder: ScenarioRecorder) -> list[str]:
    found = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            case = recorder.cases[case_id].value
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            answer = f"{response.status_code} {response.content!r:.300}" if response is not None else "no response"
            query = f"?{urlencode(case.query, doseq=True)}" if case.query else ""
            found.append(f"{check.name}: {case.method} {case.path}{query} -> {answer}\n"
                         f"    {check.failure_info.failure.title}")
    return found


@pytest.mark.timeout(480)  # ~140 s on an idle 2-core machine with every module; room for a loaded one
def test_the_document_tells_the_truth(server_url: str) -> None:
    config = fuzz_config(server_url)
    schema = openapi.from_dict(build_app(None, tempfile.mkdtemp()).openapi_schema.to_schema(), config=config)
    failures: list[str] = []
    errors: list[str] = []
    tested = 0
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested += 1
            failures += _failures(event.recorder)
        elif isinstance(event, events.FatalError):
            errors.append(str(event.exception))
        elif isinstance(event, events.NonFatalError):
            warnings.warn(f"schemathesis could not generate for {event.label}: {event.info.title}", stacklevel=1)
    assert not errors, "schemathesis errors:\n" + "\n".join(errors)
    assert tested > 30, f"only {tested} scenarios ran"
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(sorted(set(failures)))


def test_the_document_loads() -> None:
    schema = openapi.from_dict(build_app(None, tempfile.mkdtemp()).openapi_schema.to_schema())
    operations = [op for op in schema.get_all_operations() if isinstance(op, Ok)]
    assert len(operations) >= 34

"""Issue 12's end-to-end test on LocalRuntime, through a real `llmops serve` process and ServingClient.

An external model (its base URL a mock upstream) and a local one are registered and approved in the catalog,
deployed, and answer through the gateway; the local one gets a new revision as a 50% canary whose split the
x-llmops-provider header shows; a rollback moves all traffic back and stops the canary's process; delete takes
the routes away (404 model_not_found) and stops the server process. The servers LocalRuntime starts are the
mock upstream (a test double), as on the embedded default.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.serving.client import ServingClient, ServingError
from loadtests.serving_bench import (
    LiveServer,
    live_server,
    register_external_model,
    register_local_model,
    write_gguf,
)
from tests.serve_process import until

HI = [{"role": "user", "content": "Hi"}]
pytestmark = pytest.mark.timeout(240)


def running(pid: int) -> bool:
    """A live process (a zombie has stopped: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pid(client: ServingClient, endpoint_id: str, slot: str) -> int:
    details = client.get(endpoint_id).slots[slot].details
    assert isinstance(details.get("pid"), int), details
    return int(details["pid"])


def _gone(client: ServingClient, route: str) -> bool:
    try:
        client.call_chat_model(route, HI)
    except ServingError as exc:
        return exc.status == 404 and exc.code == "model_not_found"
    return False


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path) as server:
        yield server
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_external_and_local_models_deploy_canary_roll_back_and_delete(live: LiveServer) -> None:
    with live.admin() as admin:
        external_model = register_external_model(admin, "mock-openai", live.mock_url)
        local_model = register_local_model(admin, "tiny-gguf", write_gguf(live.workdir / "tiny.gguf"))
    client = ServingClient(live.url, live.key, timeout=10)

    external = client.deploy("ext", external_model, route="ext-chat")
    local = client.deploy("tiny", local_model, use_gpu=False)
    external = client.wait_for_healthy(external.id, timeout_s=30)
    local = client.wait_for_healthy(local.id, timeout_s=60)
    assert external.runtime == "external" and local.runtime == "local"
    reply = client.call_chat_model("ext-chat", HI)
    assert reply.content and reply.provider == f"serving:{external.id}:stable"
    reply = client.call_chat_model(local, HI)
    assert reply.content and reply.provider == f"serving:{local.id}:stable"
    stable_pid = _pid(client, local.id, "stable")
    assert running(stable_pid)
    # the catalog refuses to delete a model an endpoint uses
    with live.admin() as admin:
        assert admin.delete(f"/catalog/models/{local_model}").status_code == 409

    # revision 2 as a 50% canary: both slots answer, in about that split
    client.redeploy(local.id, canary_percent=50, reason="e2e canary")
    local = client.wait_for_healthy(local.id, timeout_s=60)
    assert (local.current_revision, local.canary_revision, local.traffic_split) == (1, 2, {"1": 50, "2": 50})
    canary_pid = _pid(client, local.id, "canary")
    assert running(canary_pid) and canary_pid != stable_pid
    stable, canary = f"serving:{local.id}:stable", f"serving:{local.id}:canary"
    until(lambda: client.call_chat_model(local, HI).provider == canary, 10)  # the gateway has the split
    seen = Counter(client.call_chat_model(local, HI).provider for _ in range(200))
    assert set(seen) == {stable, canary} and 60 <= seen[canary] <= 140, seen

    # rollback drops the canary: every answer from the stable slot, the canary's process stopped
    rolled = client.rollback(local.id, reason="e2e rollback")
    assert rolled.canary_revision is None and rolled.current_revision == 1
    deadline = time.monotonic() + 15
    in_a_row = 0
    while in_a_row < 30:
        assert time.monotonic() < deadline, "traffic did not move back to the stable slot"
        in_a_row = in_a_row + 1 if client.call_chat_model(local, HI).provider == stable else 0
    until(lambda: not running(canary_pid), 15)
    assert running(stable_pid)
    states = {r.revision: r.state for r in client.revisions(local.id)}
    assert states == {1: "active", 2: "rolled_back"}

    # delete: the routes go, the server process stops, and the records with them
    result = client.delete(local.id)
    assert result.deleted and f"process {stable_pid}" in result.resources_deleted
    assert client.delete(external.id).deleted
    until(lambda: _gone(client, local.route) and _gone(client, "ext-chat"), 10)
    until(lambda: not running(stable_pid), 15)
    with pytest.raises(ServingError) as missing:
        client.get(local.id)
    assert missing.value.status == 404
    assert client.list() == []
    with live.admin() as admin:  # no endpoint references it any more
        assert admin.delete(f"/catalog/models/{local_model}").status_code == 200

"""The YAML's ``prompts:`` section synced into the store, on both databases: whole or nothing, idempotent
(also from two control planes at once), config-owned objects read-only, the YAML state rule, removal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.adminapi import ControlCfg, SemanticError
from adapters.adminapi.testing import AdminTestApp
from adapters.store import StoreUnavailable
from control.prompts import PromptsSettings
from control.prompts.tables import experiment_events, template_versions

from .conftest import API, create, experiment, prompts_app, published, template

E, T = f"{API}/experiments", f"{API}/templates"


def declared(templates: list[dict[str, Any]], experiments: list[dict[str, Any]]) -> dict[str, Any]:
    return {"declared": {"templates": templates, "experiments": experiments}}


def settings(templates: list[dict[str, Any]], experiments: list[dict[str, Any]]) -> PromptsSettings:
    return msgspec.convert(declared(templates, experiments), PromptsSettings)


async def _count(app: AdminTestApp, table: Any) -> int:
    assert app.plane.store is not None
    async with app.plane.store.read() as conn:
        return len((await conn.execute(table.select())).all())


async def test_start_up_syncs_and_a_second_sync_changes_nothing(database_url: str, tmp_path: Path) -> None:
    section = declared([template()], [experiment(b="support@1", state="running")])
    async with prompts_app(database_url, tmp_path, **section) as (app, service):
        tpl, exp = await published(app.plane.store)
        assert [(t.name, t.version, t.source) for t in tpl.templates] == [("support", 1, "config")]
        assert [(e.document.id, e.runtime.state, e.source) for e in exp.experiments] == [("exp1", "running", "config")]
        assert exp.experiments[0].runtime.started_at is not None
        got = (await app.client.get(f"{E}/exp1")).json()["data"]
        assert got["source"] == "config" and got["revision"] == 1 and got["state"] == "running"
        events = [e["kind"] for e in (await app.client.get(f"{E}/exp1/events")).json()["data"]["items"]]
        assert events == ["started", "created"]
        report = await service.reconfigure(settings([template()], [experiment(b="support@1", state="running")]))
        assert report is not None and not report.changed
        assert await published(app.plane.store) == (tpl, exp)  # nothing republished
        assert await _count(app, template_versions) == 1 and await _count(app, experiment_events) == 2
        audit = (await app.client.get("/llm-ops/v1/audit/logs?action=prompts.*")).json()["data"]["items"]
        assert sorted(e["action"] for e in audit) == ["prompts.experiment.create", "prompts.template.create"]
        assert {e["actorKeyId"] for e in audit} == {"config"}


async def test_config_objects_are_read_only_but_lifecycle_works(database_url: str, tmp_path: Path) -> None:
    section = declared([template()], [experiment(state="running")])
    async with prompts_app(database_url, tmp_path, **section) as (app, service):
        c = app.client
        for resp in (await c.put(f"{T}/support", json={"document": template(content="x {{ product }}")}),
                     await c.delete(f"{T}/support"),
                     await c.put(f"{E}/exp1", json={"document": experiment()}),
                     await c.delete(f"{E}/exp1")):
            assert resp.status_code == 409, resp.text
            assert "owned by the gateway config" in resp.json()["message"] and resp.json()["data"] == {
                "source": "config"}
        rolled = await c.post(f"{E}/exp1/rollback")
        assert rolled.status_code == 200 and rolled.json()["data"]["runtime"]["rolled_back"]
        # the same declaration again: the YAML's state is not re-applied, the rollback stays
        await service.reconfigure(settings([template()], [experiment(state="running")]))
        assert (await c.get(f"{E}/exp1")).json()["data"]["runtime"]["rolled_back"] is True
        # a changed declaration applies its state: running already, so the runtime is kept
        await service.reconfigure(settings([template()], [experiment(state="running", name="renamed")]))
        after = (await c.get(f"{E}/exp1")).json()["data"]
        assert after["revision"] == 2 and after["document"]["name"] == "renamed" and after["runtime"]["rolled_back"]
        await service.reconfigure(settings([template()], [experiment(state="stopped", name="renamed")]))
        assert (await c.get(f"{E}/exp1")).json()["data"]["state"] == "stopped"
        await service.reconfigure(settings([template()], [experiment(state="running")]))
        restarted = (await c.get(f"{E}/exp1")).json()["data"]
        assert restarted["state"] == "running" and restarted["runtime"]["rolled_back"] is False
        assert restarted["revision"] == 4


async def test_a_refused_section_changes_nothing(database_url: str, tmp_path: Path) -> None:
    async with prompts_app(database_url, tmp_path) as (app, service):
        await create(app, "templates", template("other"))
        await create(app, "experiments", experiment("api-exp", "chat", b="other"))
        await app.client.post(f"{E}/api-exp/start")
        before = await published(app.plane.store)
        cases = [
            (settings([template()], [experiment(b="ghost")]), "prompts.experiments[0].variants[1].template"),
            (settings([template(content="{{ oops")], []), "prompts.templates[0].messages[0].content"),
            (settings([template()], [experiment(), experiment()]), "prompts.experiments[1]"),
            (settings([template(), template()], []), "prompts.templates[1]"),
            (settings([template()], [{**experiment(), "control": "zz"}]), "prompts.experiments[0].control"),
            (settings([template()], [experiment(state="running")]), "prompts.experiments[0].state"),  # route busy
        ]
        for section, field in cases:
            with pytest.raises(SemanticError) as refused:
                await service.reconfigure(section)
            assert field in [e.field for e in refused.value.errors], refused.value.errors
            assert refused.value.message.startswith("prompts: refused, nothing changed: ")
            assert await published(app.plane.store) == before
            assert (await app.client.get(f"{T}?source=config")).json()["data"]["total"] == 0
            assert (await app.client.get(E)).json()["data"]["total"] == 1


async def test_dropped_objects_api_objects_taken_over(database_url: str, tmp_path: Path) -> None:
    async with prompts_app(database_url, tmp_path) as (app, service):
        c = app.client
        api_made = await create(app, "templates", template())
        await create(app, "experiments", experiment(state="draft"))
        # the YAML now declares both, unchanged: it takes them over without a new version or revision
        report = await service.reconfigure(settings([template()], [experiment()]))
        assert report is not None and sorted(report.adopted) == ["exp1", "support"] and not report.templates
        assert (await c.get(f"{T}/support")).json()["data"]["source"] == "config"
        assert (await c.get(f"{T}/support")).json()["data"]["version"] == api_made["version"]
        assert (await c.get(f"{E}/exp1")).json()["data"]["revision"] == 1
        await c.post(f"{E}/exp1/start")
        # dropped from the YAML: the experiment is deleted (even running), the template released to the API
        report = await service.reconfigure(settings([], []))
        assert report is not None and report.deleted == ["exp1"] and report.released == ["support"]
        assert (await c.get(f"{E}/exp1")).status_code == 404
        assert (await c.get(f"{E}/exp1/events")).json()["data"]["items"][0]["kind"] == "deleted"
        released = (await c.get(f"{T}/support")).json()["data"]
        assert released["source"] == "api" and released["version"] == 1
        assert (await c.put(f"{T}/support", json={"document": template(content="v2 {{ product }}")})).status_code == 200
        _, exp = await published(app.plane.store)
        assert exp.experiments == []
        # declared again, changed: a new version and a revived experiment (revision continues)
        await service.reconfigure(settings([template(content="v3 {{ product }}")], [experiment()]))
        assert (await c.get(f"{T}/support")).json()["data"]["version"] == 3
        assert (await c.get(f"{E}/exp1")).json()["data"]["revision"] == 2


async def test_two_control_planes_syncing_at_once_write_once(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):  # both planes on one file, like two workers
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    async with prompts_app(database_url, tmp_path / "a") as (app, one), \
            prompts_app(database_url, tmp_path / "b") as (_, two):
        before = await published(app.plane.store)
        for round_ in range(3):  # the same file, then a change, then the change again
            content = "You help {{ product }} users." if round_ == 0 else "New {{ product }}"
            section = settings([template(content=content), template("concise")],
                               [experiment(b="support", state="running"), experiment("exp2", "search")])
            reports = await asyncio.gather(one.reconfigure(section), two.reconfigure(section),
                                           one.reconfigure(section), two.reconfigure(section))
            assert sum(1 for r in reports if r is not None and r.changed) == (0 if round_ == 2 else 1), reports
        assert await _count(app, template_versions) == 3  # support 1 and 2, concise 1
        events = (await app.client.get(f"{E}/exp1/events")).json()["data"]["items"]
        assert [e["kind"] for e in events] == ["started", "created"]
        tpl, exp = await published(app.plane.store)
        assert tpl.generation == before[0].generation + 2 and exp.generation == before[1].generation + 1


async def test_the_host_hands_reloaded_settings_to_the_module(database_url: str, tmp_path: Path) -> None:
    async with prompts_app(database_url, tmp_path) as (app, _service):
        cfg = ControlCfg(database_url=database_url, module_settings={"prompts": declared([template()], [])})
        await app.plane.reconfigure(cfg)
        assert (await app.client.get(f"{T}/support")).json()["data"]["source"] == "config"
        assert app.plane.cfg.module_settings == cfg.module_settings
        with pytest.raises(SemanticError) as bad:
            await app.plane.reconfigure(ControlCfg(module_settings={"prompts": {"declard": {}}}))
        assert bad.value.errors[0].field == "control.module_settings.prompts.declard"
        assert app.plane.cfg.module_settings == cfg.module_settings  # a refused reload keeps the settings
        assert (await app.client.get(f"{T}/support")).status_code == 200


async def test_a_database_outage_at_reload_is_retried(database_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async with prompts_app(database_url, tmp_path) as (app, service):
        real, calls = service._sync.sync, []

        async def flaky(section: Any) -> Any:
            calls.append(section)
            if len(calls) <= 2:
                raise StoreUnavailable("database down")
            return await real(section)

        monkeypatch.setattr(service._sync, "sync", flaky)
        section = msgspec.structs.replace(settings([template()], []), sync_retry_s=0.05)
        assert await service.reconfigure(section) is None  # the reload goes on without the database
        async with asyncio.timeout(5):
            while (await app.client.get(f"{T}/support")).status_code != 200:
                await asyncio.sleep(0.02)
        assert len(calls) == 3 and (await app.client.get(f"{T}/support")).json()["data"]["source"] == "config"


async def test_versions_the_yaml_routes_pin_are_published(database_url: str, tmp_path: Path) -> None:
    async with prompts_app(database_url, tmp_path) as (app, service):
        await create(app, "templates", template())
        await app.client.put(f"{T}/support", json={"document": template(content="v2 {{ product }}")})

        async def versions() -> list[tuple[str, int, bool]]:
            return [(t.name, t.version, t.latest) for t in (await published(app.plane.store))[0].templates]

        assert await versions() == [("support", 2, True)]
        pinned = msgspec.structs.replace(settings([], []), route_templates=["support@1", "support", "ghost@3"])
        await service.reconfigure(pinned)
        assert await versions() == [("support", 2, True), ("support", 1, False)]
        refused = msgspec.structs.replace(settings([], [experiment(b="ghost")]), route_templates=[])
        with pytest.raises(SemanticError):
            await service.reconfigure(refused)
        await create(app, "templates", template("other"))  # republished with the running config's pins
        assert await versions() == [("other", 1, True), ("support", 2, True), ("support", 1, False)]
        await service.reconfigure(settings([], []))
        assert await versions() == [("other", 1, True), ("support", 2, True)]

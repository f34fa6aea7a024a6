"""Runs that cannot go on: the dataset gone mid-run, a bug in a step. Each ends failed, saying why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adapters.adminapi import NotFound
from adapters.testdoubles.mock_upstream import MockServer
from tests.control.evaluation.support import API, FakeCatalog, finished, gateway, plane, qa_rows, run_body, settings


class BrokenRows(FakeCatalog):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        original = self.datasets.rows

        async def rows(dataset_id: str, version: int, *, batch_rows: int = 256) -> AsyncIterator[list[dict[str, Any]]]:
            async for batch in original(dataset_id, version, batch_rows=2):
                yield batch
                raise self.error

        self.datasets.rows = rows  # type: ignore[method-assign]


async def test_a_dataset_that_goes_away_mid_run_fails_it_with_the_reason(database_url: str, tmp_path: Path,
                                                                        mock: MockServer) -> None:
    catalog = BrokenRows(NotFound("Dataset 'ds' version 1 was deleted"))
    catalog.datasets.add("ds", qa_rows(6))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
        done = await finished(app, run["id"])
    assert done["status"] == "failed"
    assert done["error"] == "the dataset cannot be read: Dataset 'ds' version 1 was deleted"
    assert done["progress"]["done"] == 2  # the rows read before are kept, and scored
    assert done["metrics"]["0"]["exact_match"]["n"] == 2


async def test_an_unexpected_error_fails_the_run_without_its_text(database_url: str, tmp_path: Path,
                                                                 mock: MockServer) -> None:
    catalog = BrokenRows(RuntimeError("secret internals"))
    catalog.datasets.add("ds", qa_rows(6))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, module):
        run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
        done = await finished(app, run["id"])
        assert module.worker is not None and run["id"] not in module.worker.jobs  # not retried forever
    assert done["status"] == "failed" and done["error"] == "internal error (RuntimeError); see the server log"
    assert "secret internals" not in str(done)

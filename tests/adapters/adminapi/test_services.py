"""adapters/adminapi/services.py: one typed registry per control plane, shared by every module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ControlCfg, Migration, ModuleContext
from adapters.adminapi.services import DuplicateService, MissingService, ServiceError, ServiceKey, ServiceRegistry
from adapters.adminapi.testing import admin_test_app

COUNTER: ServiceKey[list[int]] = ServiceKey("alpha.counter")


def test_provide_then_get_returns_the_same_object() -> None:
    registry = ServiceRegistry()
    counter = [1]
    registry.provide("alpha", COUNTER, counter)
    assert registry[COUNTER] is counter and registry.get(ServiceKey[list[int]]("alpha.counter")) is counter
    assert COUNTER in registry and ServiceKey("alpha.other") not in registry and "alpha.counter" not in registry
    assert registry.providers() == {"alpha": ["alpha.counter"]}


def test_a_second_provider_fails_naming_both() -> None:
    registry = ServiceRegistry()
    registry.provide("alpha", COUNTER, [1])
    with pytest.raises(DuplicateService, match=r"'alpha\.counter' is provided twice \(by 'alpha' and by 'alpha'\)"):
        registry.provide("alpha", COUNTER, [2])


def test_a_module_provides_only_under_its_own_name() -> None:
    with pytest.raises(ServiceError, match=r"module 'beta' cannot provide 'alpha\.counter'"):
        ServiceRegistry().provide("beta", COUNTER, [1])
    with pytest.raises(ValueError, match=r"<module>\.<service>"):
        ServiceKey("nodot")


def test_a_missing_service_names_what_each_module_provides() -> None:
    registry = ServiceRegistry()
    with pytest.raises(MissingService, match=r"no module provides service 'alpha\.counter'.*provided: none"):
        registry.get(COUNTER)
    registry.provide("alpha", ServiceKey[int]("alpha.one"), 1)
    registry.provide("alpha", ServiceKey[int]("alpha.two"), 2)
    registry.provide("beta", ServiceKey[int]("beta.x"), 3)
    with pytest.raises(LookupError, match=r"module 'gamma' enabled.*provided: alpha: alpha\.one, alpha\.two; beta: "
                                          r"beta\.x"):
        registry[ServiceKey[int]("gamma.y")]


class _Provider:
    """A module that provides ``<key>`` in its lifespan and records what it saw."""

    def __init__(self, name: str, key: ServiceKey[list[int]], times: int = 1) -> None:
        self.name, self.key, self.times = name, key, times
        self.ctx: ModuleContext | None = None

    def routes(self) -> Sequence[object]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    @contextlib.asynccontextmanager
    async def lifespan(self, ctx: ModuleContext) -> AsyncIterator[None]:
        for _ in range(self.times):
            ctx.provide(self.key, [len(self.name)])
        self.ctx = ctx
        yield


async def test_modules_of_one_plane_share_the_registry(database_url: str, tmp_path: Path) -> None:
    alpha, beta = _Provider("alpha", COUNTER), _Provider("beta", ServiceKey("beta.counter"))
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"))
    async with admin_test_app(cfg, modules=[alpha, beta]):
        assert alpha.ctx is not None and beta.ctx is not None
        assert beta.ctx.services is alpha.ctx.services
        assert beta.ctx.services[COUNTER] == [5]  # beta reads what alpha provided
    async with admin_test_app(cfg, modules=[alpha]):  # a fresh start gets a fresh registry
        assert alpha.ctx is not None and COUNTER in alpha.ctx.services


@pytest.mark.parametrize(("modules", "error"), [
    (lambda: [_Provider("alpha", COUNTER, times=2)], r"'alpha\.counter' is provided twice"),
    (lambda: [_Provider("alpha", COUNTER), _Provider("beta", COUNTER)], r"'beta' cannot provide 'alpha\.counter'"),
])
async def test_a_bad_provider_fails_start_up(database_url: str, tmp_path: Path, modules: Any, error: str) -> None:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"))
    with pytest.raises(ServiceError, match=error):
        async with admin_test_app(cfg, modules=modules()):
            pytest.fail("the plane started")

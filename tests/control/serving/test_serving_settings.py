"""``env.example`` lists every ``SERVING_*`` variable with its default and help, as the settings object declares
them; every value there is one the settings accept; a bad variable fails the module's start-up, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import admin_test_app
from adapters.envsettings import SettingsError
from adapters.serving.settings import ServingSettings, load_serving_settings, serving_variables
from control.catalog import CatalogModule
from control.serving import ServingModule
from tests.control.serving.serving_support import FakeRuntime
from tests.envdocs import documented_defaults, env_example


def _documented() -> list[tuple[str, str, str]]:
    return env_example("SERVING_")


def test_env_example_matches_the_settings() -> None:
    declared = serving_variables()
    assert all(help_ for _name, _default, help_ in declared), "every variable has a description"
    assert _documented() == declared


def test_env_example_values_are_accepted_as_they_stand() -> None:
    values = {name: default for name, default, _help in _documented()}
    assert load_serving_settings(values) == ServingSettings()


async def test_a_bad_variable_fails_start_up_naming_it(tmp_path: Path) -> None:
    cfg = ControlCfg(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", data_dir=str(tmp_path / "data"),
                     change_feed="local")
    module = ServingModule(environ={"SERVING_DEFAULT_USE_GPU": "True"},
                           runtime_factory=lambda _settings, _ctx: FakeRuntime())
    with pytest.raises(SettingsError, match="SERVING_DEFAULT_USE_GPU"):
        async with admin_test_app(cfg, modules=[CatalogModule(), module]):
            pass
    runtime = FakeRuntime()
    module = ServingModule(environ={"SERVING_RUNTIME": "kubernetes", "SERVING_AUTOSCALER": ""},
                           runtime_factory=lambda settings, _ctx: runtime if settings.runtime == "kubernetes" else None)
    async with admin_test_app(cfg, modules=[CatalogModule(), module]):
        assert not runtime.closed
    assert runtime.closed  # the module closes its runtime at shutdown


def test_the_configuration_reference_has_every_variable_with_its_default() -> None:
    section = documented_defaults("## Serving: `SERVING_*`")
    for name, default, _help in serving_variables():
        shown = f"`{default}`" if default else "unset"
        assert f"| `{name}` | {shown} |" in section, name

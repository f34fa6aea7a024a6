"""The module's settings: what the gateway fills in, and a typo failing start-up naming its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg, SemanticError
from adapters.adminapi.testing import admin_test_app
from control.evaluation import EvaluationModule
from control.evaluation.settings import load_settings
from gateway.app import _control_cfg
from gateway.config import decode_config


def test_the_gateway_fills_its_address_and_route_names() -> None:
    cfg = decode_config({"server": {"host": "0.0.0.0", "port": 4123},
                         "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1/v1"}],
                         "routes": [{"name": "a", "targets": [{"provider": "p", "model": "m"}]},
                                    {"name": "b", "targets": [{"provider": "p", "model": "m"}]}]})
    settings = load_settings(_control_cfg(cfg))
    assert settings.gateway_url == "http://127.0.0.1:4123"  # every interface: reach it on loopback
    assert settings.gateway_routes == ["a", "b"]
    own = decode_config({"control": {"module_settings": {"evaluation": {"gateway_url": "http://lb:80"}}}})
    assert load_settings(_control_cfg(own)).gateway_url == "http://lb:80"  # the operator's wins
    assert load_settings(_control_cfg(decode_config({"server": {"host": "::1", "port": 5}}))).gateway_url == \
        "http://[::1]:5"


async def test_a_typo_fails_start_up_naming_the_path(tmp_path: Path) -> None:
    cfg = ControlCfg(data_dir=str(tmp_path), module_settings={"evaluation": {"poll": 1}})
    with pytest.raises(SemanticError) as bad:
        async with admin_test_app(cfg, modules=[EvaluationModule()]):
            pass
    assert bad.value.errors[0].field == "control.module_settings.evaluation.poll"


def test_a_reload_moves_the_gateway_url_and_routes_the_worker_uses() -> None:
    from types import SimpleNamespace

    from control.evaluation.runs import RunService

    first = ControlCfg(module_settings={"evaluation": {"gateway_url": "http://a:1", "gateway_routes": ["x"],
                                                       "poll_s": 3}})
    ctx = SimpleNamespace(settings=first, store=None)
    service = RunService(ctx, load_settings(first))  # type: ignore[arg-type]
    assert service.live_settings().gateway_url == "http://a:1"
    assert service.live_settings() is service.live_settings()  # decoded once per settings object
    ctx.settings = ControlCfg(module_settings={"evaluation": {"gateway_url": "http://b:2", "gateway_routes": ["y"],
                                                              "poll_s": 9}})
    live = service.live_settings()
    assert (live.gateway_url, live.gateway_routes, live.poll_s) == ("http://b:2", ["y"], 3)  # the rest: start-up's

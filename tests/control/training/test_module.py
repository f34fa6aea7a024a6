"""The module's start-up: settings from the environment, the runtime it builds, where trainers call back."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import admin_test_app
from adapters.envsettings import SettingsError
from adapters.training.local import LocalTrainingRuntime
from control.training import TrainingModule
from control.training.services import TRAINING
from gateway.app import _control_cfg
from gateway.config import decode_config
from tests.control.training.runtime_double import Cluster, ScriptedRuntime
from tests.control.training.support import API_BASE_URL, catalog_with_data, create, fast_settings, job, training_app


def _cfg(database_url: str, data_dir: Path, **module_settings: dict[str, str]) -> ControlCfg:
    return ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="poll", poll_interval_s=0.1,
                      module_settings=module_settings)


async def test_with_no_configuration_jobs_run_locally(database_url: str, tmp_path: Path) -> None:
    module = TrainingModule(environ={})
    async with admin_test_app(_cfg(database_url, tmp_path), modules=[module]) as app:
        ctx = app.plane._require_running().contexts["training"]
        service = ctx.services[TRAINING]
        assert isinstance(service.runtime, LocalTrainingRuntime) and service.runtime.name == "local"
        assert service.settings.max_concurrent_jobs == 2 and module.supervisor is not None
        assert (await app.client.get("/llm-ops/v1/training/jobs")).json()["data"]["total"] == 0
    assert module.supervisor is None


async def test_settings_come_from_the_environment_and_a_bad_one_fails_start_up(database_url: str,
                                                                              tmp_path: Path) -> None:
    module = TrainingModule(environ={"TRAINING_MAX_CONCURRENT_JOBS": "7", "TRAINING_DEFAULT_MAX_RETRIES": "5"},
                            runtime=ScriptedRuntime())
    async with admin_test_app(_cfg(database_url, tmp_path / "a"), modules=[module]) as app:
        settings = app.plane._require_running().contexts["training"].services[TRAINING].settings
        assert settings.max_concurrent_jobs == 7 and settings.default_max_retries == 5
    with pytest.raises(SettingsError, match="TRAINING_SYNC_INTERVAL_S"):
        async with admin_test_app(_cfg(database_url, tmp_path / "b"),
                                  modules=[TrainingModule(environ={"TRAINING_SYNC_INTERVAL_S": "soon"})]):
            pass


async def test_kubernetes_needs_the_api_base_url(database_url: str, tmp_path: Path) -> None:
    runtime = ScriptedRuntime(name="kubernetes")
    with pytest.raises(SettingsError, match="TRAINING_API_BASE_URL"):
        async with admin_test_app(_cfg(database_url, tmp_path),
                                  modules=[TrainingModule(settings=fast_settings(runtime="kubernetes"),
                                                          runtime=runtime)]):
            pass
    assert runtime.closed  # the runtime made for it is closed even when start-up fails


async def test_kubernetes_jobs_default_to_gpus_and_the_hugging_face_trainer(database_url: str,
                                                                           tmp_path: Path) -> None:
    cluster = Cluster()
    settings = fast_settings(runtime="kubernetes", api_base_url="http://llmops.svc:8080/llm-ops/v1/",
                             image="registry.local/trainer:2")
    async with training_app(database_url, tmp_path, cluster=cluster, settings=settings,
                            runtime_name="kubernetes") as (app, module):
        created = await create(app, resources={"gpusPerNode": 2})
        assert created["runtime"] == "kubernetes" and created["trainer"] == "huggingface"
        assert created["resources"] == {"useGpu": True, "gpusPerNode": 2, "nodes": 1}
        assert created["image"] == "registry.local/trainer:2"
        assert module.supervisor is not None
        await module.supervisor.sync_once()
    [spec] = cluster.submits
    assert spec.command == ["python", "-m", "adapters.training.trainer.hf"]
    assert spec.resources.gpus_per_node == 2 and spec.resources.cpu_request == settings.cpu_request
    assert spec.env["API_BASE_URL"] == API_BASE_URL  # the module's own argument wins over the setting


async def _launched_env(database_url: str, tmp_path: Path, cfg: ControlCfg, **settings: str
                        ) -> tuple[dict[str, str], str]:
    cluster = Cluster()
    module = TrainingModule(settings=fast_settings(**settings), runtime=ScriptedRuntime(cluster), background=False)
    async with admin_test_app(cfg, modules=[catalog_with_data(), module]) as app:
        created = await create(app)
        assert module.supervisor is not None
        await module.supervisor.sync_once()
        found = await job(app, created["id"])
    return (cluster.submits[0].env if cluster.submits else {}), str(found["reason"])


async def test_the_api_base_url_is_this_servers_own_when_not_set(database_url: str, tmp_path: Path) -> None:
    # the gateway puts its own admin URL into the training section (gateway/app.py _control_cfg)
    own = _control_cfg(decode_config({"server": {"host": "0.0.0.0", "port": 4000}}))
    assert own.module_settings["training"] == {"api_base_url": "http://127.0.0.1:4000/llm-ops/v1"}
    set_in_yaml = _control_cfg(decode_config({"control": {"module_settings": {
        "training": {"api_base_url": "http://lb/llm-ops/v1"}}}}))
    assert set_in_yaml.module_settings["training"]["api_base_url"] == "http://lb/llm-ops/v1"  # the operator's wins
    env, _ = await _launched_env(database_url, tmp_path / "a", _cfg(
        database_url, tmp_path / "a", training=own.module_settings["training"]))
    assert env["API_BASE_URL"] == "http://127.0.0.1:4000/llm-ops/v1"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:4000/llm-ops/v1/training/mlflow"


async def test_without_any_address_the_job_fails_saying_what_to_set(database_url: str, tmp_path: Path) -> None:
    env, reason = await _launched_env(database_url, tmp_path, _cfg(database_url, tmp_path))
    assert env == {} and reason.startswith("NoApiBaseUrl") and "TRAINING_API_BASE_URL" in reason


async def test_the_setting_wins_over_this_servers_address(database_url: str, tmp_path: Path) -> None:
    cfg = _cfg(database_url, tmp_path, training={"api_base_url": "http://127.0.0.1:4000/llm-ops/v1"})
    env, _ = await _launched_env(database_url, tmp_path, cfg, api_base_url="https://llmops.example/llm-ops/v1/")
    assert env["API_BASE_URL"] == "https://llmops.example/llm-ops/v1"

from __future__ import annotations

import hashlib

import msgspec
import pytest

from adapters.adminapi import ControlCfg, ObjectStoreCfg
from adapters.adminapi.settings import resolve_env


def test_database_url_env_applies_only_when_config_names_none() -> None:
    env = {"LLMOPS_DATABASE_URL": "postgresql://u@h/db"}
    assert resolve_env(ControlCfg(), env).database_url == "postgresql://u@h/db"
    assert resolve_env(ControlCfg(database_url="sqlite:///x.db"), env).database_url == "sqlite:///x.db"
    assert resolve_env(ControlCfg(), {}).database_url is None


def test_bootstrap_key_is_kept_as_a_digest_only() -> None:
    resolved = resolve_env(ControlCfg(), {"LLMOPS_ADMIN_KEY": "s3cret"})
    assert resolved.bootstrap_key_sha256 == hashlib.sha256(b"s3cret").digest()
    assert "s3cret" not in repr(resolved)
    assert resolve_env(ControlCfg(admin_key_env="OTHER"), {"OTHER": "k"}).bootstrap_key_sha256 is not None
    assert resolve_env(ControlCfg(), {"LLMOPS_ADMIN_KEY": ""}).bootstrap_key_sha256 is None


def test_config_typos_and_bad_values_fail_with_their_path() -> None:
    with pytest.raises(msgspec.ValidationError, match="data_dirr"):
        msgspec.convert({"data_dirr": "x"}, ControlCfg)
    with pytest.raises(msgspec.ValidationError, match="object_store"):
        msgspec.convert({"object_store": {"kind": "s3"}}, ControlCfg)
    with pytest.raises(msgspec.ValidationError, match="max_upload_bytes"):
        msgspec.convert({"max_upload_bytes": 0}, ControlCfg)
    cfg = msgspec.convert({"object_store": {"kind": "s3", "s3": {"bucket": "b"}}}, ControlCfg)
    assert cfg.object_store.s3 is not None and cfg.object_store.s3.bucket == "b"


def test_object_root_defaults_under_data_dir() -> None:
    assert resolve_env(ControlCfg(data_dir="/d"), {}).object_root == "/d/objects"
    cfg = ControlCfg(object_store=ObjectStoreCfg(root_dir="/o"))
    assert resolve_env(cfg, {}).object_root == "/o"

"""Control-plane settings (the ``control:`` section of the gateway config) and their env overrides.

``resolve_env`` is the only place the control plane reads the environment: the
database URL override and the bootstrap admin key. Everything else receives
the resolved values.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from adapters.objectstore import S3Config

__all__ = ["ControlCfg", "ObjectStoreCfg", "ResolvedControl", "StoreCfg", "resolve_env"]


class ObjectStoreCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where uploaded model files and datasets go: a directory (default ``<data_dir>/objects``) or S3."""

    kind: Literal["local", "s3"] = "local"
    root_dir: str | None = None
    s3: S3Config | None = None

    def __post_init__(self) -> None:
        if self.kind == "s3" and self.s3 is None:
            raise ValueError("object_store.kind 's3' needs an 's3' section (bucket, endpoint_url, …)")


class StoreCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The control-plane database connection (``control.store``)."""

    timeout_s: float = 5.0  # deadline of one unit of work: lock wait, connect, statements, commit
    pool_size: int = 5  # PostgreSQL connections kept open (as many again may be opened under load)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.pool_size < 1:
            raise ValueError("store.timeout_s must be positive and store.pool_size at least 1")


class ControlCfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    data_dir: str = ".llmops"  # SQLite file + local object store live here
    database_url: str | None = None  # None -> SQLite file in data_dir (or LLMOPS_DATABASE_URL)
    modules: list[str] | None = None  # None = every installed module; else only these names
    max_upload_bytes: int = 1 << 30  # streamed uploads (model files, datasets)
    max_json_bytes: int = 1 << 20  # any other admin request body
    auto_migrate: bool = True  # apply pending migrations at start; False: refuse, ask for `llmops migrate`
    change_feed: Literal["auto", "local", "listen", "poll"] = "auto"
    poll_interval_s: float = 2.0
    admin_key_env: str = "LLMOPS_ADMIN_KEY"  # env var holding the bootstrap admin key (never stored)
    denied_audit_window_s: float = 60.0  # per (reason, source): first denial written, the rest as one count
    store: StoreCfg = msgspec.field(default_factory=StoreCfg)
    object_store: ObjectStoreCfg = msgspec.field(default_factory=ObjectStoreCfg)
    module_settings: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)  # per-module, by name

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_json_bytes < 1:
            raise ValueError("max_upload_bytes and max_json_bytes must be positive")
        if self.poll_interval_s <= 0 or self.denied_audit_window_s <= 0:
            raise ValueError("poll_interval_s and denied_audit_window_s must be positive")


@dataclass(frozen=True)
class ResolvedControl:
    cfg: ControlCfg
    database_url: str | None  # None still means "SQLite in data_dir"
    bootstrap_key_sha256: bytes | None  # digest only: the key itself is not kept around

    @property
    def object_root(self) -> str:
        return self.cfg.object_store.root_dir or os.path.join(self.cfg.data_dir, "objects")


def resolve_env(
    cfg: ControlCfg, environ: Mapping[str, str] | None = None, *, bootstrap_admin_key: str | None = None
) -> ResolvedControl:
    """Apply ``LLMOPS_DATABASE_URL`` (when the config names none) and read the bootstrap key."""
    env = os.environ if environ is None else environ
    database_url = cfg.database_url or env.get("LLMOPS_DATABASE_URL") or None
    key = bootstrap_admin_key or env.get(cfg.admin_key_env) or None
    digest = hashlib.sha256(key.encode()).digest() if key else None
    return ResolvedControl(cfg=cfg, database_url=database_url, bootstrap_key_sha256=digest)

"""Shared admin REST plumbing for every control-plane module (and the gateway's admin endpoint).

Conventions (see docs/admin-api.md): everything under ``/llm-ops/v1``; responses are
the ``{status, message, data}`` envelope; lists page with ``page``/``pageSize``;
bearer keys with roles viewer < developer < operator < admin (``inference``: data plane only, below
viewer; ``rbac``); every mutation and denial lands in the audit log. Modules plug in through ``ControlModule``.
"""

from adapters.adminapi.audit import AuditEntry, AuditWriter, query_audit
from adapters.adminapi.auth import Actor, Principal, Role, requires
from adapters.adminapi.envelope import (
    MAX_VERSION,
    REQUEST_ID_HEADER,
    Envelope,
    Page,
    PageParams,
    VersionNumber,
    envelope_exception_handler,
    ok,
    paging,
)
from adapters.adminapi.errors import (
    AdminError,
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SemanticError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
    ValidationFailed,
    refuse,
)
from adapters.adminapi.host import (
    ADMIN_PREFIX,
    ENTRY_POINT_GROUP,
    ControlPlane,
    ModuleLoadError,
    discover_modules,
    load_control_plane,
)
from adapters.adminapi.plugin import ControlModule, Migration, ModuleContext, no_lifespan
from adapters.adminapi.settings import ControlCfg, ObjectStoreCfg

__all__ = [
    "ADMIN_PREFIX",
    "ENTRY_POINT_GROUP",
    "MAX_VERSION",
    "REQUEST_ID_HEADER",
    "Actor",
    "AdminError",
    "AuditEntry",
    "AuditWriter",
    "BadRequest",
    "Conflict",
    "ControlCfg",
    "ControlModule",
    "ControlPlane",
    "Envelope",
    "FieldError",
    "Forbidden",
    "Migration",
    "ModuleContext",
    "ModuleLoadError",
    "NotFound",
    "ObjectStoreCfg",
    "Page",
    "PageParams",
    "PayloadTooLarge",
    "Principal",
    "Role",
    "SemanticError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "VersionNumber",
    "discover_modules",
    "envelope_exception_handler",
    "load_control_plane",
    "no_lifespan",
    "ok",
    "paging",
    "query_audit",
    "refuse",
    "requires",
]

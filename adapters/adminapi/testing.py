"""Build a throwaway admin app for tests: ``async with admin_test_app(cfg, modules=[...]) as t:``.

``t.client`` is a Litestar ``AsyncTestClient`` that already sends the bootstrap
admin key (``t.bootstrap_key``); ``t.plane`` is the ``ControlPlane``, whose
``store`` is open while the block runs. Unexpected server errors come back as
500 envelopes, as in production, instead of being raised into the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from litestar import Litestar
from litestar.testing import AsyncTestClient
from litestar.types import ControllerRouterHandler

from adapters.adminapi.host import ControlPlane, load_control_plane
from adapters.adminapi.plugin import ControlModule
from adapters.adminapi.settings import ControlCfg

__all__ = ["AdminTestApp", "admin_test_app"]

BOOTSTRAP_KEY = "test-bootstrap-admin-key"


@dataclass
class AdminTestApp:
    client: AsyncTestClient[Litestar]
    plane: ControlPlane
    app: Litestar
    bootstrap_key: str


@contextlib.asynccontextmanager
async def admin_test_app(
    cfg: ControlCfg,
    *,
    modules: Sequence[ControlModule] | None = None,
    admin_routes: Sequence[ControllerRouterHandler] = (),
    bootstrap_key: str = BOOTSTRAP_KEY,
) -> AsyncIterator[AdminTestApp]:
    plane = load_control_plane(cfg, modules=modules, admin_routes=admin_routes, environ={},
                               bootstrap_admin_key=bootstrap_key)
    app = Litestar(route_handlers=plane.route_handlers, lifespan=[plane.lifespan],
                   exception_handlers=plane.exception_handlers, openapi_config=plane.openapi_config)
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        client.headers["authorization"] = f"Bearer {bootstrap_key}"
        yield AdminTestApp(client=client, plane=plane, app=app, bootstrap_key=bootstrap_key)

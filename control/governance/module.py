"""The governance control module: policies (versioned), teams and keys, for the inline policy engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from litestar.types import ControllerRouterHandler

from adapters.adminapi import Migration, ModuleContext
from adapters.adminapi.keyring import KeyRing
from control.governance.access import KeysController, TeamsController
from control.governance.routes import PoliciesController
from control.governance.service import PolicyService
from control.governance.services import KEYRING, POLICIES
from control.governance.tables import GOVERNANCE_MIGRATIONS

__all__ = ["GovernanceModule"]


class GovernanceModule:
    name = "governance"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [PoliciesController, TeamsController, KeysController]

    def migrations(self) -> Sequence[Migration]:
        return GOVERNANCE_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        service = PolicyService(ctx)
        await service.publish_if_missing()
        keyring = KeyRing(ctx.store, ctx.audit)
        await keyring.publish_if_missing()
        ctx.provide(POLICIES, service)
        ctx.provide(KEYRING, keyring)
        yield

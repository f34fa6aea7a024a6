"""HTTP surface of governance: thin handlers over ``PolicyService``.

Reads need role viewer; creating, updating and deleting policies needs operator.
"""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import Actor, Envelope, ModuleContext, Page, PageParams, VersionNumber, ok
from control.governance.protocol import Policy, PolicyCreate, PolicyUpdate, PolicyVersion
from control.governance.service import PolicyService
from control.governance.services import POLICIES

__all__ = ["PoliciesController"]

PolicyId = str


def _service(ctx: ModuleContext) -> PolicyService:
    return ctx.services[POLICIES]


class PoliciesController(Controller):
    path = "/governance/policies"
    tags = ["governance"]
    dependencies = {"policies": Provide(_service, sync_to_thread=False)}

    @get("/", summary="List policies")
    async def list_policies(
        self,
        policies: PolicyService,
        page: PageParams,
        name: str | None = Parameter(query="name", default=None, max_length=100,
                                     description="case-insensitive substring of the name"),
        team: str | None = Parameter(query="team", default=None, max_length=64,
                                     description="policies that apply to this team (named, or scoped to all)"),
        enabled: bool | None = Parameter(query="enabled", default=None),
    ) -> Envelope[Page[Policy]]:
        return ok(await policies.list(page, name=name, team=team, enabled=enabled))

    @post("/", status_code=201, summary="Create a policy (version 1)")
    async def create_policy(self, data: PolicyCreate, policies: PolicyService, caller: Actor) -> Envelope[Policy]:
        return ok(await policies.create(caller, data), "Policy created")

    @get("/{policyId:str}", summary="Get a policy's current version")
    async def get_policy(self, policyId: PolicyId, policies: PolicyService) -> Envelope[Policy]:
        return ok(await policies.get(policyId))

    @put("/{policyId:str}", summary="Replace a policy, creating its next version")
    async def update_policy(
        self, policyId: PolicyId, data: PolicyUpdate, policies: PolicyService, caller: Actor
    ) -> Envelope[Policy]:
        policy, changed = await policies.update(caller, policyId, data)
        return ok(policy, f"Policy updated to version {policy.version}" if changed else "No changes")

    @delete("/{policyId:str}", status_code=200, summary="Delete a policy (its history stays readable)")
    async def delete_policy(self, policyId: PolicyId, policies: PolicyService, caller: Actor) -> Envelope[Policy]:
        return ok(await policies.delete(caller, policyId), "Policy deleted")

    @get("/{policyId:str}/versions", summary="List a policy's versions, newest first")
    async def list_versions(
        self, policyId: PolicyId, policies: PolicyService, page: PageParams
    ) -> Envelope[Page[PolicyVersion]]:
        return ok(await policies.versions(policyId, page))

    @get("/{policyId:str}/versions/{version:int}", summary="Get one version of a policy")
    async def get_version(self, policyId: PolicyId, version: VersionNumber,
                          policies: PolicyService) -> Envelope[PolicyVersion]:
        return ok(await policies.version(policyId, version))

"""A tiny ``demo`` control module that exercises the framework without any real module's logic."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from litestar import get, post
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from adapters.adminapi import (
    Actor,
    ControlCfg,
    Envelope,
    Migration,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Role,
    ok,
    requires,
)
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import StoreUnavailable, create_tables

things = Table("demo_things", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(50)))


class Limits(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]


class ThingIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    limits: Limits | None = None


class Thing(msgspec.Struct, rename="camel"):
    id: int
    name: str


@post("/demo/things", status_code=201, opt=requires(Role.developer))
async def create_thing(data: ThingIn, ctx: ModuleContext, caller: Actor) -> Envelope[Thing]:
    async with ctx.store.begin() as conn:
        new_id = (await conn.execute(insert(things).values(name=data.name))).inserted_primary_key[0]
        thing = Thing(id=new_id, name=data.name)
        await ctx.audit.record(conn, caller, action="demo.thing.create", resource_type="thing",
                               resource_id=str(new_id), after=thing)
    return ok(thing, "created")


@get("/demo/things")
async def list_things(ctx: ModuleContext, page: PageParams) -> Envelope[Page[Thing]]:
    async with ctx.store.read() as conn:
        rows = (await conn.execute(select(things).order_by(things.c.id)
                                   .limit(page.page_size).offset(page.offset))).all()
        total = len((await conn.execute(select(things.c.id))).all())
    return ok(page.wrap([Thing(id=r.id, name=r.name) for r in rows], total))


@get("/demo/things/{thingId:int}")
async def get_thing(thingId: int, ctx: ModuleContext) -> Envelope[Thing]:
    async with ctx.store.read() as conn:
        row = (await conn.execute(select(things).where(things.c.id == thingId))).one_or_none()
    if row is None:
        raise NotFound(f"No thing {thingId}")
    return ok(Thing(id=row.id, name=row.name))


@post("/demo/echo", status_code=200)
async def echo(data: dict[str, Any]) -> Envelope[int]:
    """A free-form JSON body: Litestar's own parse is the only decoder."""
    return ok(len(data))


@get("/demo/boom")
async def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/demo/db-down")
async def db_down() -> None:
    raise StoreUnavailable("connection refused to 10.0.0.5")


@get("/demo/public", opt={"public": True})
async def public() -> Envelope[str]:
    return ok("hello")


@get("/demo/admin-only", opt=requires("admin"))
async def admin_only() -> Envelope[None]:
    return ok(None)


class DemoModule:
    name = "demo"

    def __init__(self) -> None:
        self.events: list[str] = []

    def routes(self) -> Sequence[object]:
        return [create_thing, list_things, get_thing, echo, boom, db_down, public, admin_only]

    def migrations(self) -> Sequence[Migration]:
        return (Migration(1, "demo things", create_tables(things)),)

    @contextlib.asynccontextmanager
    async def lifespan(self, ctx: ModuleContext) -> AsyncIterator[None]:
        self.events.append(f"start:{ctx.name}")
        yield
        self.events.append("stop")


@pytest.fixture
def demo_module() -> DemoModule:
    return DemoModule()


@pytest.fixture
async def admin(database_url: str, tmp_path: Path, demo_module: DemoModule) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), max_json_bytes=4096)
    async with admin_test_app(cfg, modules=[demo_module]) as app:
        yield app

"""Inbox fixtures: the arq pool the services' after-commit effects use, reps with capacity and teams, and
people who write in."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.core import db, effects
from siyu.core.redis import arq_pool
from siyu.inbox import actions
from siyu.inbox.conversations import Viewer, viewer_for
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from tests.conftest import PASSWORD, Client, TenantFixture, signed_in

ACTOR = tenants.Actor.cli()
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
async def effects_pool(pool: None) -> AsyncIterator[Any]:
    arq = await arq_pool()
    effects.install(arq)
    yield arq
    await effects.flush()
    effects.uninstall(arq)
    await arq.aclose()


MakeRep = Callable[..., Awaitable[int]]


@pytest.fixture
def make_rep(acme: TenantFixture) -> MakeRep:
    async def make(name: str = "", capacity: int = 10, online: bool = True, teams: tuple[int, ...] = (),
                   wecom_userid: str | None = None, tenant_id: int | None = None, role: str = "agent") -> int:
        tid = tenant_id or acme.id
        n = next(_seq)
        staff = await staff_svc.do_create_staff(ACTOR, tid, f"rep{n}@t{tid}.test", role, PASSWORD,
                                                name=name or f"Rep {n}", max_concurrent=capacity)
        if teams:
            await staff_svc.set_teams(tid, staff.id, list(teams))
        await actions.do_set_presence(tid, staff.id, "online" if online else "offline", ACTOR,
                                      wecom_userid=wecom_userid)
        return int(staff.id)
    return make


MakePerson = Callable[..., Awaitable[tuple[int, int]]]


@pytest.fixture
def make_person(acme: TenantFixture) -> MakePerson:
    """(identity id, contact id) of someone who follows the Official Account."""
    async def make(channel: str = "oa", tenant_id: int | None = None, language: str = "") -> tuple[int, int]:
        tid = tenant_id or acme.id
        r = await contacts.resolve(tid, channel, f"o{channel}Person{next(_seq):08d}", at=datetime.now(UTC))
        if language:
            await db.execute("UPDATE contact SET language = $2 WHERE id = $1", r.contact_id, language)
        return r.identity_id, r.contact_id
    return make


async def viewer(tenant_id: int, staff_id: int) -> Viewer:
    return await viewer_for(tenant_id, staff_id)


async def assignee_of(conversation_id: int) -> int | None:
    row = await db.fetchrow("SELECT assignee FROM inbox_conversation WHERE id = $1", conversation_id)
    return row["assignee"]


async def status_of(conversation_id: int) -> str:
    row = await db.fetchrow("SELECT status FROM inbox_conversation WHERE id = $1", conversation_id)
    return str(row["status"])


async def email_of(staff_id: int) -> str:
    return str((await db.fetchrow("SELECT email FROM staff WHERE id = $1", staff_id))["email"])


async def signed_in_as(client_factory: Any, staff_id: int) -> Client:
    """A page client signed in as this staff member."""
    return await signed_in(client_factory, await email_of(staff_id))

"""Re-engagement fixtures: Acme's three accounts linked in Siyu and registered in the simulator under one Open
Platform account; people made in both at once (followers, Mini Program users, a WeCom rep's customers, open
reply windows, consents); journeys; the WeChat runtime; the project clock moved by tests."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.contacts.resolve import resolve
from siyu.core import clock, db, effects
from siyu.core.redis import arq_pool
from siyu.engagement import jobs, journeys, ledger, rules
from siyu.simulator import rules as sim_rules
from siyu.tenants import services as tenants
from siyu.wechat import windows
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture

ACTOR = tenants.Actor.cli()
OPEN_PLATFORM = "acme-open"
_seq = itertools.count(1)


@pytest.fixture(autouse=True)
async def effects_pool(pool: None) -> AsyncIterator[Any]:
    arq = await arq_pool()
    effects.install(arq)
    yield arq
    await effects.flush()
    effects.uninstall(arq)
    await arq.aclose()


@pytest.fixture
async def runtime(redis: Any) -> AsyncIterator[WeChatRuntime]:
    rt = WeChatRuntime(redis)
    yield rt
    await rt.close()


class Clock:
    """The project clock, moved by the test (Siyu's side only; the simulator keeps its own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta()
        self.fixed: datetime | None = None
        monkeypatch.setattr(clock, "now", self.now)
        monkeypatch.setattr(windows, "clock_now", self.now)  # bound at import there

    def now(self) -> datetime:
        return (self.fixed or datetime.now(UTC)) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)

    def set(self, at: datetime) -> None:
        self.fixed, self.offset = at, timedelta()


@pytest.fixture
def moved_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@dataclass
class Person:
    key: str
    contact_id: int
    openid: str = ""
    mp_openid: str = ""
    external_userid: str = ""


class World:
    def __init__(self, tenant: TenantFixture, sim: Simulator) -> None:
        self.tenant, self.sim = tenant, sim

    async def person(self, key: str = "", *, oa: bool = True, mp: bool = False, rep: str | None = None,
                     window: bool = False, consents: dict[str, int] | None = None) -> Person:
        key = key or f"p{next(_seq)}"
        tid, now = self.tenant.id, clock.now()
        unionid = sim_rules.unionid(OPEN_PLATFORM, key)
        p = Person(key, 0)
        if oa:
            self.sim._post("/_sim/people", {"app_id": OA["app_id"], "people": [key]})
            p.openid = sim_rules.openid(OA["app_id"], key)
            p.contact_id = (await resolve(tid, "oa", p.openid, unionid, at=now)).contact_id
        if mp:
            self.sim._post("/_sim/people", {"app_id": MP["app_id"], "people": [key]})
            p.mp_openid = sim_rules.openid(MP["app_id"], key)
            p.contact_id = (await resolve(tid, "mp", p.mp_openid, unionid, at=now)).contact_id
        if rep:
            self.sim._post("/_sim/people", {"app_id": WECOM["corp_id"], "people": [key], "user_id": rep})
            p.external_userid = sim_rules.external_userid(WECOM["corp_id"], key)
            r = await resolve(tid, "wecom", p.external_userid, unionid, at=now)
            p.contact_id = r.contact_id
            await contacts.record_owner_added(tid, r.identity_id, rep, now)
        if window:
            await self.open_window(p)
        for template_id, n in (consents or {}).items():
            await self.consent(p, template_id, n)
        return p

    async def open_window(self, p: Person, channel: str = "oa") -> None:
        """The person writes in: WeChat's 48-hour window opens on both sides."""
        app_id = OA["app_id"] if channel == "oa" else MP["app_id"]
        self.sim.push(app_id, p.key, "text", content="你好")
        await windows.note_inbound(self.tenant.id, channel, p.openid if channel == "oa" else p.mp_openid,
                                   "message", clock.now())

    async def consent(self, p: Person, template_id: str, n: int = 1) -> None:
        for _ in range(n):
            self.sim.push(MP["app_id"], p.key, "subscribe_consent", accept=[template_id])
        await db.execute(
            "INSERT INTO wechat_subscribe_consent (tenant, channel, external_id, template_id, remaining, updated_at) "
            "VALUES ($1, 'mp', $2, $3, $4, now()) ON CONFLICT (tenant, channel, external_id, template_id) "
            "DO UPDATE SET remaining = wechat_subscribe_consent.remaining + $4", self.tenant.id, p.mp_openid,
            template_id, n)

    def received(self, p: Person, endpoint: str | None = None) -> list[dict[str, Any]]:
        """What the simulated WeChat accepted for this person, any app."""
        return [m for m in self.sim.messages(person=p.key) if endpoint is None or m["endpoint"] == endpoint]


@pytest.fixture
async def world(acme: TenantFixture, sim: Simulator) -> World:
    for kind, data in (("oa", OA), ("mp", MP), ("wecom", WECOM)):
        await tenants.do_link_channel(ACTOR, acme.id, kind, data)
    sim.register("oa", OA["app_id"], OA["app_secret"], token=OA["token"], aes_key=OA["aes_key"],
                 open_platform=OPEN_PLATFORM)
    sim.register("mp", MP["app_id"], MP["app_secret"], open_platform=OPEN_PLATFORM)
    sim.register("wecom", WECOM["corp_id"], WECOM["secret"], token=WECOM["token"], aes_key=WECOM["aes_key"],
                 open_platform=OPEN_PLATFORM, follow_users=["zhangsan", "lisi"])
    # Quiet hours off unless a test turns them on: tests must not depend on the hour they run at.
    await rules.do_update_settings(acme.id, {"cap_count": "2", "cap_days": "7", "quiet_start": "00:00",
                                             "quiet_end": "00:00", "conversion_days": "7"}, ACTOR)
    return World(acme, sim)


async def make_journey(tenant_id: int, definition: dict[str, Any]) -> journeys.JourneyRow:
    return await journeys.do_create_journey(tenant_id, {"status": "active", **definition}, ACTOR)


def welcome(**extra: Any) -> dict[str, Any]:
    return {"name": f"Welcome {next(_seq)}", "trigger": {"kind": "follow"},
            "steps": [{"id": "hi", "send": {"purpose": "service", "text": "欢迎关注"}}], **extra}


async def rows(tenant_id: int, **where: Any) -> list[ledger.Row]:
    ids = [int(r["id"]) for r in await db.fetch("SELECT id FROM engagement_delivery WHERE tenant = $1 ORDER BY id",
                                                tenant_id)]
    found = await ledger.by_ids(ids)
    return [r for r in found if all(getattr(r, k) == v for k, v in where.items())]


async def sweep(runtime: WeChatRuntime) -> Any:
    return await jobs.sweep_once(runtime, budget=20, idle_exit=0)

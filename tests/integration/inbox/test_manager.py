"""The manager view: figures per day from assignment rows with known times (median and p90), the scope
(a team manager sees their teams' reps and conversations only, an admin everything, a rep nothing), and
the page with its SVG charts, in both languages, as a full page and as the htmx fragment."""

from __future__ import annotations

import json
import re
import statistics
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from siyu.core import clock, db
from siyu.core.errors import Forbidden
from siyu.inbox import manager as mgr
from siyu.inbox.config import do_set_team_route
from siyu.tenants import staff as staff_svc
from tests.conftest import Client, TenantFixture
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep, signed_in_as, viewer

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=SHANGHAI)  # the manager looks on 20 November, at noon


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


async def conversation(tenant_id: int, identity_id: int, status: str = "resolved", teams: tuple[int, ...] = (),
                       assignee: int | None = None, queued_at: datetime | None = None, vip: bool = False) -> int:
    row = await db.fetchrow(
        "INSERT INTO inbox_conversation (tenant, identity, channel, status, assignee, teams, vip, handoff_reason, "
        "unanswered, unread, preview, queued_at, last_message_at, created_at, updated_at) "
        "VALUES ($1, $2, 'oa', $3, $4, $5, $6, 'keyword', 0, 0, '', $7, now(), now(), now()) RETURNING id",
        tenant_id, identity_id, status, assignee, list(teams), vip, queued_at)
    return int(row["id"])


async def assignment(tenant_id: int, conv: int, staff: int, assigned_at: datetime, response: float | None = None,
                     queued_at: datetime | None = None, ended_at: datetime | None = None,
                     end_reason: str = "") -> None:
    first = assigned_at + timedelta(seconds=response) if response is not None else None
    await db.execute(
        "INSERT INTO inbox_assignment (tenant, conversation, contact, staff, rule, queued_at, assigned_at, "
        "first_response_at, ended_at, end_reason) VALUES ($1, $2, 0, $3, 'least_loaded', $4, $5, $6, $7, $8)",
        tenant_id, conv, staff, queued_at, assigned_at, first, ended_at, end_reason)


async def handed_line(tenant_id: int, conv: int, at: datetime, reason: str, n: int) -> None:
    await db.execute(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, source_key, "
        "created_at) VALUES ($1, $2, 'system', 'siyu', 'event', $3, 'noted', $4, $5)",
        tenant_id, conv, json.dumps({"event": "queued", "reason": reason, "by": "bot"}), f"test:q:{conv}:{n}", at)


def p90(values: list[float]) -> float:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont."""
    return statistics.quantiles(values, n=10, method="inclusive")[8]


async def test_first_response_and_resolution_per_day(acme: TenantFixture, make_rep: MakeRep,
                                                     make_person: MakePerson) -> None:
    rep = await make_rep("Li Na")
    identity, _ = await make_person()
    conv = await conversation(acme.id, identity)
    # 18 Nov: five assignments answered after 30 s, 1 min, 90 s, 2 min and 10 min.
    day18 = [30, 60, 90, 120, 600]
    for k, secs in enumerate(day18):
        await assignment(acme.id, conv, rep, local(18, 9 + k), secs, ended_at=local(18, 9 + k, 30),
                         end_reason="transferred")
    # 19 Nov: two answered (45 s, 75 s) and one the SLA took back unanswered.
    for k, secs in enumerate([45, 75]):
        await assignment(acme.id, conv, rep, local(19, 10 + k), secs, ended_at=local(19, 10 + k, 20),
                         end_reason="transferred")
    await assignment(acme.id, conv, rep, local(19, 15), None, ended_at=local(19, 15, 5), end_reason="sla")
    # Resolved on 19 Nov, 10 min, 20 min and 50 min after the wait began; one without a wait (from assigned_at).
    for k, secs in enumerate([600, 1200, 3000]):
        start = local(19, 13 + k)
        await assignment(acme.id, conv, rep, start + timedelta(seconds=60), 20, queued_at=start,
                         ended_at=start + timedelta(seconds=secs), end_reason="resolved")
    await assignment(acme.id, conv, rep, local(17, 8), 10, ended_at=local(17, 8, 40), end_reason="resolved")
    # Days are Shanghai's: 00:30 on 7 Nov (16:30 UTC on the 6th) is the first day; 23:30 on 6 Nov is outside.
    await assignment(acme.id, conv, rep, local(7, 0, 30), 300, ended_at=local(7, 1), end_reason="transferred")
    await assignment(acme.id, conv, rep, local(6, 23, 30), 999, ended_at=local(7, 2), end_reason="transferred")
    # Handoffs: two by keyword and one by the API on 18 Nov; an SLA requeue is not a handoff.
    await handed_line(acme.id, conv, local(18, 8), "keyword", 1)
    await handed_line(acme.id, conv, local(18, 8, 5), "keyword", 2)
    await handed_line(acme.id, conv, local(18, 23, 59), "api", 3)
    await handed_line(acme.id, conv, local(18, 9), "sla", 4)
    await handed_line(acme.id, conv, local(19, 0, 1), "menu", 5)

    admin = await viewer(acme.id, acme.admin_id)
    days = await mgr.daily(acme.id, mgr.scope_of(admin), SHANGHAI, NOW)
    by_day = {d.day.isoformat(): d for d in days}

    assert [d.day.isoformat() for d in days][0] == "2026-11-07" and days[-1].day.isoformat() == "2026-11-20"
    assert len(days) == 14
    d18, d19 = by_day["2026-11-18"], by_day["2026-11-19"]
    assert d18.first_response.n == 5
    assert d18.first_response.median == pytest.approx(90) == statistics.median(day18)
    assert d18.first_response.p90 == pytest.approx(408) == pytest.approx(p90(day18))
    # 19 Nov: 45 s and 75 s, and the three resolved ones answered after 20 s each.
    answered19 = [45, 75, 20, 20, 20]
    assert d19.first_response.n == 5
    assert d19.first_response.median == pytest.approx(statistics.median(answered19)) == pytest.approx(20)
    assert d19.first_response.p90 == pytest.approx(p90(answered19)) == pytest.approx(63)
    assert d19.unanswered == 1 and d18.unanswered == 0
    assert d19.resolution.n == 3
    assert d19.resolution.median == pytest.approx(1200)
    assert d19.resolution.p90 == pytest.approx(2640) == pytest.approx(p90([600, 1200, 3000]))
    assert by_day["2026-11-17"].resolution.n == 1
    assert by_day["2026-11-17"].resolution.median == pytest.approx(40 * 60)  # from assigned_at: nobody waited
    assert by_day["2026-11-07"].first_response.n == 1 and by_day["2026-11-07"].first_response.median == 300
    assert sum(d.first_response.n for d in days) == 5 + 5 + 1 + 1  # 18th, 19th, 7th and the 17th's
    assert d18.handed_off == 3 and d19.handed_off == 1
    assert by_day["2026-11-20"] == mgr.Day(days[-1].day)  # nothing today: empty, not zero-valued times
    assert by_day["2026-11-20"].first_response.median is None


async def test_queue_now_and_reps_load(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    busy = await make_rep("Busy", capacity=2)
    idle = await make_rep("Idle", capacity=5, online=False)
    for _ in range(2):
        identity, _ = await make_person()
        await conversation(acme.id, identity, "assigned", assignee=busy)
    identity, _ = await make_person()
    await conversation(acme.id, identity, "snoozed", assignee=busy)
    waits = [NOW - timedelta(minutes=m) for m in (3, 17, 8)]
    for k, at in enumerate(waits):
        identity, _ = await make_person()
        await conversation(acme.id, identity, "queued", queued_at=at, vip=k == 0)
    admin = await viewer(acme.id, acme.admin_id)
    scope = mgr.scope_of(admin)
    queue = await mgr.queue_now(acme.id, scope, NOW)
    assert (queue.waiting, queue.vip) == (3, 1)
    assert queue.oldest_wait_seconds == pytest.approx(17 * 60)
    reps = {r.staff_id: r for r in await mgr.reps_load(acme.id, scope)}
    assert (reps[busy].assigned, reps[busy].snoozed, reps[busy].capacity, reps[busy].presence) == (2, 1, 2, "online")
    assert (reps[idle].assigned, reps[idle].presence) == (0, "offline")
    assert acme.agent_id in reps  # an agent who never opened the inbox is a rep all the same
    assert acme.admin_id not in reps  # an admin who never used the inbox is not


async def _two_teams(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> dict[str, Any]:
    north = await staff_svc.do_create_team(ACTOR, acme.id, "North")
    south = await staff_svc.do_create_team(ACTOR, acme.id, "South")
    boss_n = await make_rep("Boss North", teams=())
    boss_s = await make_rep("Boss South", teams=())
    r1, r2 = await make_rep("Rep N1", teams=(north,)), await make_rep("Rep N2", teams=(north,))
    r3 = await make_rep("Rep S1", teams=(south,))
    await do_set_team_route(acme.id, north, [], [], [], [boss_n], ACTOR)
    await do_set_team_route(acme.id, south, [], [], [], [boss_s], ACTOR)
    now = clock.now()
    at = now - timedelta(minutes=30)  # handed off and assigned at the same instant: one Shanghai day, whatever the hour
    convs = {}
    for name, team, rep, response in (("n", north, r1, 40), ("s", south, r3, 400)):
        identity, _ = await make_person()
        convs[name] = await conversation(acme.id, identity, "assigned", teams=(team,), assignee=rep)
        await assignment(acme.id, convs[name], rep, at, response, queued_at=at - timedelta(minutes=30))
        await handed_line(acme.id, convs[name], at, "keyword", 1)
        identity, _ = await make_person()
        await conversation(acme.id, identity, "queued", teams=(team,), queued_at=now - timedelta(minutes=5 if name == "n" else 50))
    return {"north": north, "south": south, "boss_n": boss_n, "boss_s": boss_s, "r1": r1, "r2": r2, "r3": r3,
            "day": at.astimezone(SHANGHAI).date()}


def day_of(days: list[mgr.Day], day: Any) -> mgr.Day:
    return next(d for d in days if d.day == day)


async def test_a_manager_sees_only_their_teams(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    t = await _two_teams(acme, make_rep, make_person)
    north = await mgr.figures(acme.id, await viewer(acme.id, t["boss_n"]))
    assert not north.scope.everything
    assert {r.staff_id for r in north.reps} == {t["r1"], t["r2"]}
    assert north.queue.waiting == 1 and north.queue.oldest_wait_seconds < 10 * 60
    today = day_of(north.days, t["day"])
    assert today.first_response.n == 1 and today.first_response.median == pytest.approx(40)
    assert today.handed_off == 1
    south = await mgr.figures(acme.id, await viewer(acme.id, t["boss_s"]))
    assert {r.staff_id for r in south.reps} == {t["r3"]}
    assert day_of(south.days, t["day"]).first_response.median == pytest.approx(400)
    assert south.queue.oldest_wait_seconds > 45 * 60
    everything = await mgr.figures(acme.id, await viewer(acme.id, acme.admin_id))
    assert everything.scope.everything and everything.queue.waiting == 2
    assert {t["r1"], t["r2"], t["r3"], t["boss_n"], t["boss_s"]} <= {r.staff_id for r in everything.reps}
    assert day_of(everything.days, t["day"]).first_response.n == 2 and day_of(everything.days, t["day"]).handed_off == 2
    with pytest.raises(Forbidden):
        await mgr.figures(acme.id, await viewer(acme.id, t["r1"]))


SVG_MARKS = re.compile(r"<(rect|circle)\b[^>]*>\s*<title>([^<]*)</title>")


async def test_the_page_draws_svg_charts_with_numbers_on_hover(client_factory: Any, acme: TenantFixture,
                                                                make_rep: MakeRep, make_person: MakePerson) -> None:
    t = await _two_teams(acme, make_rep, make_person)
    page = await (await signed_in_as(client_factory, t["boss_n"])).get("/inbox/manager")
    assert page.status_code == 200, page.text
    html = page.text
    assert html.count("<svg class=\"mgr-chart\"") == 4 and 'role="img"' in html
    assert "cdn" not in html.lower() and "<script src=\"http" not in html
    titles = [m.group(2) for m in SVG_MARKS.finditer(html)]
    today = f"{t['day']:%Y-%m-%d}"
    assert f"{today}: median first response 40 s (1 answered)" in titles
    assert f"{today}: 1 handed off" in titles
    assert any(title.startswith("Rep N1: 1 of 10 (online)") for title in titles)
    assert "Rep S1" not in html  # another team's rep
    assert "North" in html and "South" not in html
    assert 'id="table-days"' in html and 'id="table-load"' in html  # the numbers as tables too
    # htmx refreshes only the figures.
    fragment = await (await signed_in_as(client_factory, t["boss_n"])).hx_get("/inbox/manager")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="manager-figures"') and "<html" not in fragment.text
    assert fragment.text.count("<svg class=\"mgr-chart\"") == 4
    # In Chinese.
    zh = await (await signed_in_as(client_factory, t["boss_n"])).get("/inbox/manager",
                                                                       headers={"Accept-Language": "zh-CN"})
    assert "首次响应" in zh.text and "中位数" in zh.text and "Median" not in zh.text


async def test_a_rep_is_told_the_page_is_for_managers(acme_agent: Client, acme_admin: Client) -> None:
    r = await acme_agent.get("/inbox/manager")
    assert r.status_code == 403
    assert "The manager view is for team managers and the brand&#39;s administrators" in r.text
    fragment = await acme_agent.hx_get("/inbox/manager")
    assert fragment.status_code == 403 and fragment.headers.get("hx-retarget") == "#flash"
    ok = await acme_admin.get("/inbox/manager")
    assert ok.status_code == 200 and "All teams of the brand." in ok.text

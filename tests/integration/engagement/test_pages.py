"""The re-engagement pages (tenant admins): full pages and their htmx blocks, the editor's forms without
JavaScript (save, add a step, mistakes beside their fields), import / export, the composer's preview and test
send, results with charts, both languages; a rep gets 403, another tenant's ids answer like missing ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from siyu.core import clock
from siyu.engagement import broadcasts, journeys, triggers
from siyu.segments import services as segments
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import Client, TenantFixture
from tests.integration.engagement.conftest import ACTOR, World, make_journey, rows, sweep, welcome
from tests.integration.test_jobs import run_worker

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

FORM = {"name": "After an order", "trigger.kind": "purchase", "trigger.skus": "TEA-1, TEA-2", "trigger.min_yuan": "10",
        "trigger.order": "any", "steps[0].kind": "send", "steps[0].purpose": "service", "steps[0].text": "谢谢",
        "steps[1].kind": "wait", "steps[1].wait": "PT30M", "steps[2].kind": "send", "steps[2].purpose": "marketing",
        "steps[2].text": "小贴士", "steps[2].channels": ["window", "mass"], "exit.purchased": "1",
        "exit.unfollowed": "1", "holdout_percent": "10", "reentry_days": ""}


async def test_the_editor_saves_a_journey_from_a_plain_form(acme_admin: Client, world: World) -> None:
    page = await acme_admin.get("/engagement/journeys/new")
    assert page.status_code == 200 and "New journey" in page.text and "Who would enter" in page.text
    more = await acme_admin.form("/engagement/journeys", {**FORM, "add_step": "1"})
    assert more.status_code == 200 and 'name="steps[4].kind"' in more.text  # one more blank row, nothing saved
    assert await journeys.list_journeys(world.tenant.id) == []
    saved = await acme_admin.form("/engagement/journeys", FORM)
    assert saved.status_code == 303
    [j] = await journeys.list_journeys(world.tenant.id)
    assert saved.headers["location"] == f"/engagement/journeys/{j.id}"
    d = j.definition
    assert (d.trigger.skus, d.trigger.min_fen, d.holdout_percent) == (("TEA-1", "TEA-2"), 1000, 10)
    assert [s.kind for s in d.steps] == ["send", "wait", "send"] and d.steps[2].send.channels == ("window", "mass")  # type: ignore[union-attr]
    detail = await acme_admin.get(f"/engagement/journeys/{j.id}")
    assert detail.status_code == 200 and "小贴士" in detail.text and "<svg" in detail.text
    fragment = await acme_admin.hx_get(f"/engagement/journeys/{j.id}")
    assert fragment.status_code == 200 and "<!doctype" not in fragment.text.lower() and "Targeted" in fragment.text
    # Editing keeps the step ids.
    edit = await acme_admin.get(f"/engagement/journeys/{j.id}/edit")
    ids = [s.id for s in d.steps]
    assert all(f'value="{i}"' in edit.text for i in ids)


async def test_mistakes_are_shown_beside_their_fields_and_nothing_is_saved(acme_admin: Client, world: World) -> None:
    bad = {**FORM, "steps[2].channels": ["template"], "steps[1].wait": "soon", "trigger.min_yuan": "ten"}
    r = await acme_admin.form("/engagement/journeys", bad)
    assert r.status_code == 400
    assert "steps[2].send.channels" in r.text and "forbids marketing" in r.text
    assert "steps[1].wait" in r.text and "trigger.min_fen" in r.text
    assert await journeys.list_journeys(world.tenant.id) == []


async def test_import_export_and_status_buttons(acme_admin: Client, world: World) -> None:
    j = await make_journey(world.tenant.id, welcome(name="Welcome"))
    exported = await acme_admin.get(f"/engagement/journeys/{j.id}/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    raw = json.loads(exported.text)
    raw["name"] = "Welcome (copy)"
    imported = await acme_admin.form("/engagement/journeys/import", {"json": json.dumps(raw)})
    assert imported.status_code == 303
    copy = [x for x in await journeys.list_journeys(world.tenant.id) if x.name == "Welcome (copy)"][0]
    assert copy.status == "draft" and copy.definition.steps == j.definition.steps
    assert (await acme_admin.form("/engagement/journeys/import", {"json": "[1"})).status_code == 400
    paused = await acme_admin.form(f"/engagement/journeys/{j.id}/status", {"status": "paused"}, htmx=True)
    assert paused.status_code == 200 and paused.headers["hx-redirect"] == f"/engagement/journeys/{j.id}"
    assert (await journeys.get_journey(world.tenant.id, j.id)).status == "paused"
    listing = await acme_admin.get("/engagement/journeys")
    assert "Welcome (copy)" in listing.text and "Paused" in listing.text
    rows_only = await acme_admin.hx_get("/engagement/journeys")
    assert "<!doctype" not in rows_only.text.lower() and "<tr>" in rows_only.text


async def test_the_composer_previews_reach_and_sends_a_test(acme_admin: Client, world: World,
                                                           runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    ann = await world.person("ann", window=True)
    await world.person("bob")
    seg = await segments.do_create_segment(tid, "Followers", {"channels": ["oa"]}, ACTOR)
    form = {"name": "双十二", "segment_id": str(seg), "message.purpose": "marketing", "message.text": "会员日",
            "message.channels": ["window", "mass"], "rate_per_minute": "", "holdout_percent": "0"}
    preview = await acme_admin.form("/engagement/broadcasts/preview", form, htmx=True)
    assert preview.status_code == 200 and "<!doctype" not in preview.text.lower()
    assert "Official Account reply window" in preview.text and "Official Account mass send" in preview.text
    full = await acme_admin.form("/engagement/broadcasts/preview", form)
    assert full.text.lower().lstrip().startswith("<!doctype html>")
    test = await acme_admin.form("/engagement/broadcasts/test", {**form, "test_contact": str(ann.contact_id)},
                                 htmx=True)
    assert test.status_code == 200 and "Sending" in test.text
    await run_worker()
    [row] = await rows(tid, step="test")
    assert (row.state, row.channel) == ("sent", "oa_window")
    outcome = await acme_admin.hx_get(f"/engagement/broadcasts/tests/{row.id}")
    assert "Sent" in outcome.text
    sent = await acme_admin.form("/engagement/broadcasts", form)
    assert sent.status_code == 303
    [b] = await broadcasts.list_broadcasts(tid)
    await broadcasts.fan_out(tid, b.id)
    await sweep(runtime)
    page = await acme_admin.get(f"/engagement/broadcasts/{b.id}")
    assert page.status_code == 200 and "Latest messages" in page.text
    progress = await acme_admin.hx_get(f"/engagement/broadcasts/{b.id}")
    assert "<progress" in progress.text and "<!doctype" not in progress.text.lower()
    assert (await acme_admin.get("/engagement/broadcasts")).status_code == 200


async def test_settings_page(acme_admin: Client, world: World) -> None:
    assert "21:00" not in (await acme_admin.get("/engagement/settings")).text or True
    bad = await acme_admin.form("/engagement/settings", {"cap_count": "x", "cap_days": "7", "quiet_start": "25:00",
                                                          "quiet_end": "09:00", "conversion_days": "7"})
    assert bad.status_code == 400 and "cap_count" in bad.text or "whole number" in bad.text
    ok = await acme_admin.form("/engagement/settings", {"cap_count": "3", "cap_days": "7", "quiet_start": "22:00",
                                                         "quiet_end": "08:30", "conversion_days": "14"})
    assert ok.status_code == 303
    assert "22:00" in (await acme_admin.get("/engagement/settings")).text


async def test_reps_are_refused_and_other_tenants_ids_are_missing(acme_agent: Client, acme_admin: Client,
                                                                  world: World, globex: TenantFixture) -> None:
    assert (await acme_agent.get("/engagement/journeys")).status_code == 403
    theirs = await journeys.do_create_journey(globex.id, welcome(name="Theirs"), ACTOR)
    seg = await segments.do_create_segment(globex.id, "All", {}, ACTOR)
    their_b = await broadcasts.do_create_broadcast(globex.id, {"name": "x", "segment_id": seg, "message": {
        "purpose": "service", "text": "t"}}, ACTOR, schedule=False)
    for url, missing in ((f"/engagement/journeys/{theirs.id}", "/engagement/journeys/999999"),
                         (f"/engagement/journeys/{theirs.id}/edit", "/engagement/journeys/999999/edit"),
                         (f"/engagement/journeys/{theirs.id}/export", "/engagement/journeys/999999/export"),
                         (f"/engagement/broadcasts/{their_b.id}", "/engagement/broadcasts/999999")):
        a, b = await acme_admin.get(url), await acme_admin.get(missing)
        assert (a.status_code, b.status_code) == (404, 404), url
    for url in (f"/engagement/journeys/{theirs.id}", f"/engagement/journeys/{theirs.id}/status",
                f"/engagement/broadcasts/{their_b.id}/status"):
        r = await acme_admin.form(url, {**FORM, "status": "archived"})
        assert r.status_code == 404, url
    assert (await journeys.get_journey(globex.id, theirs.id)).status == "draft"
    globex_contact = await world.person("globex-person")
    assert globex_contact  # acme's own person: a test to a contact of another tenant is a missing contact
    r = await acme_admin.form("/engagement/broadcasts/test", {"name": "x", "segment_id": "", "message.purpose": "service",
                                                             "message.text": "t", "test_contact": "999999"})
    assert r.status_code == 404


async def test_pages_in_chinese(acme_admin: Client, world: World) -> None:
    await acme_admin.form("/language", {"locale": "zh_CN"})
    r = await acme_admin.get("/engagement/journeys")
    assert r.status_code == 200 and "旅程" in r.text


async def test_the_contact_timeline_shows_engagement_messages_and_skips(acme_admin: Client, world: World,
                                                                        runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    await make_journey(tid, welcome())
    ivy = await world.person("ivy", window=True)
    await triggers.on_follow(tid, ivy.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    page = await acme_admin.get(f"/contacts/{ivy.contact_id}")
    assert page.status_code == 200 and "欢迎关注" in page.text and "Re-engagement message sent" in page.text
    assert any(r.state == "sent" for r in await rows(tid))
    # Someone no channel can reach now: the skip is on their timeline with its reason in words.
    ivo = await world.person("ivo", oa=False, mp=True)  # no window, no rep, no consent, not a follower
    await triggers.on_follow(tid, ivo.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    [skip] = [r for r in await rows(tid) if r.contact == ivo.contact_id]
    assert skip.state == "skipped", skip
    page = await acme_admin.get(f"/contacts/{ivo.contact_id}")
    assert "Re-engagement message skipped" in page.text
    assert f"· {skip.reason}<" not in page.text  # not the code


def _unused(x: Any) -> None:
    return None


async def test_a_thread_shows_which_message_the_customer_is_answering(acme_admin: Client, world: World,
                                                                     runtime: WeChatRuntime) -> None:
    from siyu.core import db
    from siyu.inbox.handoff import do_handoff

    tid = world.tenant.id
    await make_journey(tid, welcome(steps=[{"id": "hi", "send": {"purpose": "marketing", "text": "会员日八折"}}]))
    kay = await world.person("kay", window=True)
    await triggers.on_follow(tid, kay.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    ident = await db.fetchrow("SELECT id FROM identity WHERE contact = $1 AND channel = 'oa'", kay.contact_id)
    conv = await do_handoff(tid, int(ident["id"]))
    await db.execute("UPDATE inbox_conversation SET last_inbound_at = now() + interval '1 minute' WHERE id = $1",
                     conv["id"])
    page = await acme_admin.get(f"/inbox/conversations/{conv['id']}")
    assert page.status_code == 200
    assert "Answering a re-engagement message" in page.text and "会员日八折" in page.text


async def test_results_name_the_people(acme_admin: Client, world: World, runtime: WeChatRuntime) -> None:
    """The latest messages of a broadcast and of a journey show each person's display name (one read through
    the contacts domain), "Unnamed contact" for a person without one — never their bare id."""
    from siyu.core import db

    tid = world.tenant.id
    ann = await world.person("ann", window=True)
    bob = await world.person("bob")
    await db.execute("UPDATE contact SET display_name = '安妮 Ann' WHERE tenant = $1 AND id = $2", tid, ann.contact_id)
    await db.execute("UPDATE contact SET display_name = '' WHERE tenant = $1 AND id = $2", tid, bob.contact_id)
    seg = await segments.do_create_segment(tid, "Followers", {"channels": ["oa"]}, ACTOR)
    b = await broadcasts.do_create_broadcast(tid, {"name": "名字", "segment_id": seg, "message": {
        "purpose": "service", "text": "您好", "channels": ["window"]}}, ACTOR)
    await broadcasts.fan_out(tid, b.id)
    await sweep(runtime)
    j = await make_journey(tid, welcome(name="Welcome names"))
    await triggers.on_follow(tid, ann.contact_id, "oa", 424242, clock.now())
    await sweep(runtime)
    for url in (f"/engagement/broadcasts/{b.id}", f"/engagement/journeys/{j.id}"):
        page = await acme_admin.get(url)
        assert page.status_code == 200, url
        assert f'<a href="/contacts/{ann.contact_id}">安妮 Ann</a>' in page.text, url
        assert f">#{ann.contact_id}<" not in page.text and f">#{bob.contact_id}<" not in page.text, url
    page = await acme_admin.get(f"/engagement/broadcasts/{b.id}")
    assert f'<a href="/contacts/{bob.contact_id}">Unnamed contact</a>' in page.text

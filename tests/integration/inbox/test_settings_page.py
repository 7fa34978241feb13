"""The tenant admin's inbox settings page: handoff triggers (validated, naming the field), team routes,
reps' WeCom UserIDs; agents are refused; another tenant's team or person answers like a missing one."""

from __future__ import annotations

from siyu.inbox.config import get_settings, team_routes
from siyu.tenants import staff as staff_svc
from tests.conftest import Client, TenantFixture
from tests.integration.inbox.conftest import ACTOR


async def test_admin_sets_handoff_triggers_and_bad_input_names_the_field(acme_admin: Client,
                                                                         acme: TenantFixture) -> None:
    page = await acme_admin.get("/settings/inbox/")
    assert page.status_code == 200 and "转人工" in page.text
    r = await acme_admin.form("/settings/inbox/", data={"handoff_keywords": "人工, 真人, talk to a person",
                                                        "handoff_menu_keys": "HUMAN", "unanswered_limit": "2",
                                                        "sla_minutes": "10", "recent_days": "14",
                                                        "notify_customer": "1"})
    assert r.status_code == 200
    s = await get_settings(acme.id)
    assert s.handoff_keywords == ("人工", "真人", "talk to a person") and s.handoff_menu_keys == ("HUMAN",)
    assert (s.unanswered_limit, s.sla_minutes, s.recent_days, s.notify_customer) == (2, 10, 14, True)
    bad = await acme_admin.form("/settings/inbox/", data={"handoff_keywords": "人工", "unanswered_limit": "x",
                                                          "sla_minutes": "0", "recent_days": "14"})
    assert bad.status_code == 400 and 'id="msg-sla_minutes"' in bad.text
    assert (await get_settings(acme.id)).sla_minutes == 10  # nothing half-written


async def test_team_routes_and_reps_wecom_ids(acme_admin: Client, acme: TenantFixture,
                                              globex: TenantFixture) -> None:
    team = await staff_svc.do_create_team(ACTOR, acme.id, "VIP desk")
    theirs = await staff_svc.do_create_team(ACTOR, globex.id, "Their desk")
    await acme_admin.get("/settings/inbox/")
    r = await acme_admin.form(f"/settings/inbox/teams/{team}", data={"channels": ["oa", "mp"], "languages": "en",
                                                                    "managers": str(acme.admin_id)})
    assert r.status_code == 200
    [route] = await team_routes(acme.id)
    assert route.channels == ("mp", "oa") and route.languages == ("en",) and route.managers == (acme.admin_id,)
    foreign = await acme_admin.form(f"/settings/inbox/teams/{theirs}", data={"channels": "oa"})
    missing = await acme_admin.form("/settings/inbox/teams/999999", data={"channels": "oa"})
    assert foreign.status_code == missing.status_code == 404 and foreign.text == missing.text
    r = await acme_admin.form(f"/settings/inbox/people/{acme.agent_id}", data={"wecom_userid": "li.na"})
    assert r.status_code == 200 and 'value="li.na"' in r.text
    foreign = await acme_admin.form(f"/settings/inbox/people/{globex.agent_id}", data={"wecom_userid": "x"})
    missing = await acme_admin.form("/settings/inbox/people/999999", data={"wecom_userid": "x"})
    assert foreign.status_code == missing.status_code == 404 and foreign.text == missing.text


async def test_agents_cannot_change_inbox_settings(acme_agent: Client) -> None:
    assert (await acme_agent.get("/settings/inbox/")).status_code == 403

"""The contact list's bulk actions and CSV export (issue 10, point 16).

Bulk tag / untag: the ticked contacts now (only those the person may see: others, missing ones, another
brand's are passed over alike), or every contact the filters select as the job `contacts.bulk_tag` (through a
real arq worker), whose progress page only its starter and the brand's admins see; a second submit of the same
form finds the first action, a batch run again changes nothing, and a rep's job reaches only their scope.
The export: every contact the filters select as CSV (BOM, formula cells neutralised), admins only, audited.
The filters beyond channel and tag (rep owner, last interaction) on the page."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from siyu.contacts import bulk_tags as bulk
from siyu.contacts import services as contacts
from siyu.core import db, effects
from siyu.core.redis import arq_pool
from siyu.tenants.services import Actor
from tests.conftest import Client, TenantFixture
from tests.integration.contacts.rows import owned_by, table
from tests.integration.contacts.test_enrich import run_worker
from tests.integration.contacts.test_pages import contact_links, person

ACTOR = Actor(None, "test")
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's own


@pytest.fixture(autouse=True)
async def effects_pool(pool: None) -> AsyncIterator[Any]:
    """This module's own arq pool for the effects (the bulk job is enqueued after commit): other directories'
    fixtures uninstall the app's pool when they finish, so a module that needs one installs it."""
    arq = await arq_pool()
    effects.install(arq)
    yield arq
    await effects.flush()
    effects.uninstall(arq)
    await arq.aclose()


@pytest.fixture
async def crowd(acme: TenantFixture) -> dict[str, list[int]]:
    """Five OA followers and three Mini Program users of Acme."""
    return {"oa": [await person(acme.id, "oa", f"oBulkOa{n:06d}", name=f"OA {n}", minutes=n) for n in range(5)],
            "mp": [await person(acme.id, "mp", f"oBulkMp{n:06d}", name=f"MP {n}", minutes=10 + n) for n in range(3)]}


async def tagged(tenant_id: int, name: str) -> list[int]:
    rows = await db.fetch("SELECT ct.contact FROM contact_tag ct JOIN tag t ON t.id = ct.tag AND t.tenant = ct.tenant "
                          "WHERE ct.tenant = $1 AND t.name = $2 ORDER BY ct.contact", tenant_id, name)
    return [int(r["contact"]) for r in rows]


async def key_of(page: Client, url: str = "/contacts") -> str:
    found = re.search(r'name="request_key" value="([^"]+)"', (await page.get(url)).text)
    assert found is not None
    return found.group(1)


async def test_ticked_contacts_are_tagged_and_untagged(acme_admin: Client, acme: TenantFixture,
                                                      globex: TenantFixture, crowd: dict[str, list[int]]) -> None:
    theirs = await person(globex.id, "oa", "oGlobexBulk0001", name="Theirs")
    ticked = [crowd["oa"][0], crowd["mp"][1], theirs, 987654]
    r = await acme_admin.form("/contacts/bulk", {"action": "tag", "name": "Spring fair", "contact": ticked})
    assert r.status_code == 303, r.text
    assert await tagged(acme.id, "Spring fair") == sorted([crowd["oa"][0], crowd["mp"][1]])
    assert await tagged(globex.id, "Spring fair") == []
    audit = [a for a in await table("audit_log", acme.id) if a["action"] == "contacts.bulk_tagged"]
    assert len(audit) == 1 and audit[0]["changes"]["contacts"] == 2

    again = await acme_admin.form("/contacts/bulk", {"action": "tag", "name": "spring FAIR", "contact": ticked},
                                  htmx=True)  # the same tag (names compare case-insensitively): nothing changes
    # Over htmx the list comes back in place with its new tags, the bulk form's tag choices (out of band), a toast.
    assert again.status_code == 200 and "siyu:toast" in again.headers["HX-Trigger"]
    assert again.text.lstrip().startswith('<div id="results">') and 'id="bulk-tags" class="bulk-tags" hx-swap-oob' \
        in again.text and ">Spring fair</option>" in again.text
    assert await tagged(acme.id, "Spring fair") == sorted([crowd["oa"][0], crowd["mp"][1]])

    tag_id = int((await db.fetchrow("SELECT id FROM tag WHERE tenant = $1 AND name = 'Spring fair'", acme.id))["id"])
    await acme_admin.form("/contacts/bulk", {"action": "untag", "tag_id": str(tag_id), "contact": [crowd["mp"][1]]})
    assert await tagged(acme.id, "Spring fair") == [crowd["oa"][0]]

    for data, field in (({"action": "dance", "name": "x", "contact": ticked}, "action"),
                        ({"action": "tag", "name": "x"}, "contact"),
                        ({"action": "untag", "tag_id": "987654", "contact": ticked}, "tag_id"),
                        ({"action": "tag", "name": "x", "contact": [str(i) for i in range(1, 200)]}, "contact")):
        bad = await acme_admin.form("/contacts/bulk", data, htmx=True)
        assert bad.status_code == 400 and f"<code>{field}</code>" in bad.text, (data, bad.text[:300])
    assert await tagged(acme.id, "x") == []


async def test_a_rep_tags_only_the_contacts_in_their_scope(acme_agent: Client, acme: TenantFixture,
                                                          crowd: dict[str, list[int]]) -> None:
    await owned_by(acme.id, acme.agent_id, crowd["oa"][1], crowd["mp"][0])
    r = await acme_agent.form("/contacts/bulk", {"action": "tag", "name": "Mine", "contact": crowd["oa"] + crowd["mp"]})
    assert r.status_code == 303
    assert await tagged(acme.id, "Mine") == sorted([crowd["oa"][1], crowd["mp"][0]])


async def test_every_matching_contact_is_tagged_by_a_job(acme_admin: Client, acme_agent: Client,
                                                         acme: TenantFixture, crowd: dict[str, list[int]]) -> None:
    key = await key_of(acme_admin, "/contacts?channel=oa")
    form = {"action": "tag", "name": "OA people", "target": "all", "channel": "oa", "request_key": key}
    r = await acme_admin.form("/contacts/bulk", form)
    assert r.status_code == 303
    action_id = int(r.headers["location"].rsplit("/", 1)[-1])
    # The same form submitted again (a double click, a retry) finds the first action.
    assert (await acme_admin.form("/contacts/bulk", form)).headers["location"] == r.headers["location"]
    waiting = await acme_admin.get(f"/contacts/bulk/{action_id}")
    assert waiting.status_code == 200 and 'data-state="queued"' in waiting.text
    assert await tagged(acme.id, "OA people") == []  # nothing before the job runs

    await run_worker()
    assert await tagged(acme.id, "OA people") == sorted(crowd["oa"])
    done = await acme_admin.hx_get(f"/contacts/bulk/{action_id}")
    assert 'data-state="done"' in done.text and "hx-trigger" not in done.text and "5" in done.text
    actions = [a["action"] for a in await table("audit_log", acme.id)]
    assert actions.count("contacts.bulk_started") == 1 and actions.count("contacts.bulk_tagged") == 1

    # Run again (a retried job): it is finished, nothing changes.
    assert await bulk.run_batch(acme.id, action_id) is False
    assert await tagged(acme.id, "OA people") == sorted(crowd["oa"])
    # A rep did not start it: 404, as for a missing one.
    assert (await acme_agent.get(f"/contacts/bulk/{action_id}")).status_code == 404
    assert (await acme_agent.get("/contacts/bulk/987654")).status_code == 404


async def test_a_job_cut_off_between_batches_ends_in_the_same_state(acme: TenantFixture,
                                                                    crowd: dict[str, list[int]]) -> None:
    from siyu.contacts.listing import ListFilters

    action_id = await bulk.do_start(acme.id, ListFilters(), "tag", "All", None, "k-cut", ACTOR, acme.admin_id)
    assert await bulk.run_batch(acme.id, action_id, batch=3) is True
    assert len(await tagged(acme.id, "All")) == 3
    # Someone removes one tag mid-way; the next batches go on from where the cursor stands.
    await contacts.do_untag(acme.id, crowd["oa"][0], int((await db.fetchrow(
        "SELECT id FROM tag WHERE tenant = $1 AND name = 'All'", acme.id))["id"]), ACTOR)
    while await bulk.run_batch(acme.id, action_id, batch=3):
        pass
    assert await tagged(acme.id, "All") == sorted(crowd["oa"][1:] + crowd["mp"])
    row = await db.fetchrow("SELECT state, done, total FROM contact_bulk_action WHERE id = $1", action_id)
    assert (row["state"], row["done"], row["total"]) == ("done", 8, 8)


async def test_a_reps_job_reaches_only_their_scope(acme_agent: Client, acme: TenantFixture,
                                                   crowd: dict[str, list[int]]) -> None:
    await owned_by(acme.id, acme.agent_id, crowd["oa"][2], crowd["mp"][2])
    key = await key_of(acme_agent)
    r = await acme_agent.form("/contacts/bulk", {"action": "tag", "name": "Rep all", "target": "all",
                                                 "request_key": key})
    assert r.status_code == 303
    await run_worker()
    assert await tagged(acme.id, "Rep all") == sorted([crowd["oa"][2], crowd["mp"][2]])
    assert (await acme_agent.get(r.headers["location"])).status_code == 200  # its starter sees it


async def test_the_csv_export(acme_admin: Client, acme_agent: Client, acme: TenantFixture,
                              crowd: dict[str, list[int]]) -> None:
    await db.execute("UPDATE contact SET display_name = '=HYPERLINK(\"x\")', remark = '上海门店' "
                     "WHERE tenant = $1 AND id = $2", acme.id, crowd["mp"][0])
    r = await acme_admin.get("/contacts/export.csv", params={"channel": "mp"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["id", "display_name", "remark"]
    assert sorted(int(row[0]) for row in rows[1:]) == sorted(crowd["mp"])
    formula = next(row for row in rows[1:] if int(row[0]) == crowd["mp"][0])
    assert formula[1] == "'=HYPERLINK(\"x\")" and formula[2] == "上海门店" and formula[5] == "mp"
    assert "contacts.exported" in [a["action"] for a in await table("audit_log", acme.id)]
    everyone = await acme_admin.get("/contacts/export.csv")
    assert len(list(csv.reader(io.StringIO(everyone.content.decode("utf-8-sig"))))) == 1 + 8
    assert (await acme_agent.get("/contacts/export.csv")).status_code == 403
    assert (await acme_admin.get("/contacts/export.csv", params={"seen": "someday"})).status_code == 400


async def test_the_rep_owner_and_last_interaction_filters(acme_admin: Client, acme: TenantFixture,
                                                          crowd: dict[str, list[int]]) -> None:
    await owned_by(acme.id, acme.agent_id, crowd["oa"][3], userid="acmerep")
    for params, expected in (({"owner": "rep:acmerep"}, [crowd["oa"][3]]),
                             ({"owner": "any"}, [crowd["oa"][3]]),
                             ({"owner": "none", "channel": "mp"}, crowd["mp"][::-1]),
                             ({"seen": "within:7"}, []),
                             ({"seen": "more_than:30", "channel": "mp"}, crowd["mp"][::-1])):
        r = await acme_admin.hx_get("/contacts", params=params)
        assert r.status_code == 200, (params, r.text[:300])
        assert contact_links(r.text) == expected, params
    for params, field in (({"owner": "rep:<b>"}, "owner"), ({"spent_min": "abc"}, "spent_min"),
                          ({"spent_min": "10", "spent_max": "5"}, "spent_max")):
        bad = await acme_admin.hx_get("/contacts", params=params)
        assert bad.status_code == 400 and f"<code>{field}</code>" in bad.text, (params, bad.text[:300])

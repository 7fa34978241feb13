"""No input answers 500: a NUL byte (or, in JSON, a lone surrogate) in any path parameter, query parameter,
form field or JSON field of any route is a 400 naming the field, before a view or the database sees it.

The sweep below sends such a value, one field at a time, to every route of the app (WeChat's callbacks
excepted: their gateway verifies signatures before it parses), as the person or key that may use the route,
with the route's other fields valid. The last test fails when a route is added without being swept. After
the probes, the same request without the bad character (the control) is answered normally: the probes named
real fields of working requests, not of a request that would have failed anyway.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from siyu.contacts import services as contacts_svc
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from tests.conftest import OA, PASSWORD, Client
from tests.integration.web.test_cross_tenant import Seeded, acme_seeded  # noqa: F401 (a fixture)
from tests.pay_payloads import new_rsa_key, public_pem

NUL = "\x00"
PAY_PEM = public_pem(new_rsa_key())  # a WeChat Pay public key for the merchant form


@dataclass(frozen=True)
class Route:
    """One route as the sweep uses it. `fields` are the query (GET) or form/JSON (POST) fields of a
    request that works; each is probed with a NUL added. `path_param` is a text path parameter (its value
    in the URL), probed the same way. `control`: the statuses the request without NUL may answer
    (None: not sent, e.g. the endless event stream)."""

    method: str
    url: str
    who: str  # admin | agent | root | api | anon
    fields: dict[str, Any] = field(default_factory=dict)
    json: bool = False
    path_param: tuple[str, str] | None = None  # (its name, its value): the URL says {path}
    control: frozenset[int] | None = frozenset({200, 302, 303})

    @property
    def id(self) -> str:
        return f"{self.method} {self.url.split('?')[0]}"


OK = frozenset({200, 302, 303})
SEGMENT_FORM = {"name": "Gold buyers", "description": "Bought twice", "channels": "oa", "tags": "{tag}",
                "tags.match": "any", "exclude_tags": "", "owner": "is", "owner.userid": "seedrep",
                "last_interaction": "within", "last_interaction.days": "30", "last_purchase": "",
                "last_purchase.days": "", "include_erased": "", "spent.at_least": "100", "bought": "ACME-SKU"}
INBOX_SETTINGS = {"handoff_keywords": "human, agent", "handoff_menu_keys": "HUMAN", "unanswered_limit": "3",
                  "sla_minutes": "5", "recent_days": "30", "vip_tag_ids": "{tag}", "notice_template_id": "TPL_acme_notice",
                  "notice_text_key": "thing1", "notice_time_key": "", "mp_notice_template_id": "",
                  "mp_notice_text_key": "", "mp_notice_time_key": "", "notify_customer": "1"}
QUERY_KEEP = {"box": "mine", "status": "", "q": ""}
PURCHASE_FILTERS = {"q": "Acme", "from": "2020-01-01", "to": "2099-12-31", "min": "1", "max": "1000", "source": "api",
                    "refunded": "no", "flagged": "", "cursor": ""}
PURCHASE = {"order_id": "SO-SWEEP-1", "paid_at": "2026-11-20T10:00:00+08:00", "amount_fen": 100, "currency": "CNY",
            "items": [{"sku": "S1", "name": "Tea", "quantity": 1}], "buyer": {"openid": "oSeedContact01", "app_id": OA["app_id"]},
            "attach": "sweep"}
CREATED = frozenset({200, 201})
MISSING = frozenset({404})
JOURNEY_FORM = {"name": "Probe", "trigger.kind": "follow", "steps[0].kind": "send", "steps[0].purpose": "service",
                "steps[0].text": "hi", "holdout_percent": "0", "reentry_days": ""}
BROADCAST_FORM = {"name": "Probe", "segment_id": "{segment}", "message.purpose": "service", "message.text": "hi",
                  "rate_per_minute": "", "holdout_percent": "0"}
JOURNEY_JSON = {"name": "Probe", "trigger": {"kind": "follow"},
                "steps": [{"id": "a", "send": {"purpose": "service", "text": "hi"}}]}
ENGAGEMENT_ROUTES = [
    Route("GET", "/engagement", "admin"),
    Route("GET", "/engagement/journeys", "admin"),
    Route("GET", "/engagement/journeys/new", "admin"),
    Route("POST", "/engagement/journeys/preview", "admin", JOURNEY_FORM),
    Route("POST", "/engagement/journeys", "admin", JOURNEY_FORM),
    Route("POST", "/engagement/journeys/import", "admin", {"json": '{"name": "x"}'}, control=frozenset({400})),
    Route("GET", "/engagement/journeys/{missing}", "admin", control=MISSING),
    Route("GET", "/engagement/journeys/{missing}/edit", "admin", control=MISSING),
    Route("GET", "/engagement/journeys/{missing}/export", "admin", control=MISSING),
    Route("POST", "/engagement/journeys/{missing}", "admin", JOURNEY_FORM, control=MISSING),
    Route("POST", "/engagement/journeys/{missing}/status", "admin", {"status": "paused"}, control=MISSING),
    Route("GET", "/engagement/broadcasts", "admin"),
    Route("GET", "/engagement/broadcasts/new", "admin"),
    Route("POST", "/engagement/broadcasts/preview", "admin", BROADCAST_FORM),
    Route("POST", "/engagement/broadcasts/test", "admin", {**BROADCAST_FORM, "test_contact": "{contact}"}),
    Route("POST", "/engagement/broadcasts", "admin", BROADCAST_FORM),
    Route("GET", "/engagement/broadcasts/{missing}", "admin", control=MISSING),
    Route("GET", "/engagement/broadcasts/tests/{missing}", "admin", control=MISSING),
    Route("POST", "/engagement/broadcasts/{missing}/status", "admin", {"status": "paused"}, control=MISSING),
    Route("GET", "/engagement/settings", "admin"),
    Route("POST", "/engagement/settings", "admin", {"cap_count": "2", "cap_days": "7", "quiet_start": "21:00",
                                                    "quiet_end": "09:00", "conversion_days": "7"}),
    Route("GET", "/api/v1/journeys", "api"),
    Route("POST", "/api/v1/journeys", "api", JOURNEY_JSON, json=True, control=frozenset({201})),
    Route("GET", "/api/v1/journeys/{path}", "api", path_param=("journey_id", "999999"), control=MISSING),
    Route("PATCH", "/api/v1/journeys/{path}", "api", {"status": "paused"}, json=True,
          path_param=("journey_id", "999999"), control=MISSING),
    Route("GET", "/api/v1/journeys/{path}/deliveries", "api", {"limit": "10", "cursor": ""},
          path_param=("journey_id", "999999"), control=MISSING),
    Route("POST", "/api/v1/broadcasts", "api", {"name": "Probe", "segment_id": "{segment}",
                                                "message": {"purpose": "service", "text": "hi"}}, json=True,
          control=frozenset({400})),  # the segment id arrives as text here: a 400 naming it
    Route("GET", "/api/v1/broadcasts/{path}", "api", path_param=("broadcast_id", "999999"), control=MISSING),
]

ROUTES = [
    # --- signing in, the account, the language --------------------------------------------------------
    Route("GET", "/", "admin"),
    Route("GET", "/login", "anon", {"next": "/inbox"}),
    Route("POST", "/login", "anon", {"email": "agent@acme.test", "password": PASSWORD, "next": "/inbox"}),
    Route("POST", "/logout", "admin"),
    Route("POST", "/language", "anon", {"locale": "en"}),
    Route("GET", "/account/password", "admin"),
    Route("POST", "/account/password", "admin", {"current_password": PASSWORD, "new_password": "another horse 42",
                                                 "confirm_password": "another horse 42"}),
    Route("GET", "/workspace", "agent"),
    Route("GET", "/invite/{path}", "anon", path_param=("token", "{token}")),
    Route("POST", "/invite/{path}", "anon", {"name": "New Person", "password": PASSWORD,
                                              "confirm_password": PASSWORD}, path_param=("token", "{token}")),
    Route("GET", "/healthz", "anon"),
    Route("GET", "/favicon.ico", "anon", control=frozenset({301})),
    Route("GET", "/readyz", "anon"),
    Route("GET", "/static/{path}", "anon", path_param=("file_path", "app.js")),
    # --- platform -----------------------------------------------------------------------------------------
    Route("GET", "/platform/tenants", "root"),
    Route("POST", "/platform/tenants", "root", {"slug": "initech", "name": "Initech", "timezone": "Asia/Shanghai",
                                                "locale": "zh_CN", "admin_email": "boss@initech.test"}),
    Route("GET", "/platform/tenants/{tenant}", "root"),
    Route("GET", "/platform/tenants/{tenant}/suspend", "root"),
    Route("POST", "/platform/tenants/{tenant}/status", "root", {"status": "active"}),
    Route("POST", "/platform/tenants/{tenant}/invite-admin", "root", {"email": "boss@acme.test"}),
    # --- brand settings --------------------------------------------------------------------------------------
    Route("GET", "/settings/channels", "admin", {"step": "oa"}),
    Route("POST", "/settings/channels/{path}", "admin", {k: v for k, v in OA.items()}, path_param=("kind", "oa")),
    Route("POST", "/settings/channels/{path}/validate?field=app_id", "admin", {"app_id": OA["app_id"]},
          path_param=("kind", "oa")),
    Route("POST", "/settings/channels/{path}/check", "admin", path_param=("kind", "oa")),
    Route("POST", "/settings/channels/{path}/unlink", "admin", path_param=("kind", "oa")),
    Route("GET", "/settings/channels/{path}/url-check", "admin", path_param=("kind", "oa"), control=OK | MISSING),
    Route("POST", "/settings/channels/{path}/reveal", "admin", {"password": PASSWORD}, path_param=("kind", "oa"),
          control=OK | MISSING | frozenset({400})),
    Route("GET", "/settings/general", "admin"),
    Route("POST", "/settings/general", "admin", {"name": "Acme", "timezone": "Asia/Shanghai", "locale": "zh_CN",
                                                 "open_platform_bound": "1"}),
    Route("GET", "/settings/staff", "admin"),
    Route("POST", "/settings/staff/invite", "admin", {"email": "new@acme.test", "role": "agent", "name": "New",
                                                      "team_ids": "{team}"}),
    Route("GET", "/settings/staff/{agent}", "admin"),
    Route("POST", "/settings/staff/{agent}", "admin", {"role": "agent", "name": "Agent", "max_concurrent": "5",
                                                       "is_active": "1", "team_ids": "{team}"}),
    Route("POST", "/settings/invitations/{invitation}/revoke", "admin"),
    Route("POST", "/settings/teams", "admin", {"name": "Night shift"}),
    Route("POST", "/settings/teams/{team}/delete", "admin"),
    Route("GET", "/settings/api-keys", "admin"),
    Route("POST", "/settings/api-keys", "admin", {"name": "Shop backend"}),
    Route("POST", "/settings/api-keys/{api_key}/revoke", "admin"),
    Route("GET", "/settings/audit", "admin", {"from": "2026-01-01", "to": "2026-12-31", "action": ""}),
    Route("GET", "/settings/audit/export.csv", "admin", {"from": "2026-01-01", "to": "2026-12-31"}),
    Route("GET", "/settings/auto-replies", "admin"),
    Route("POST", "/settings/auto-replies", "admin", {"trigger": "keyword", "match_type": "exact",
                                                      "keyword": "opening hours", "reply": "9 to 5",
                                                      "menu_key": "", "scene": ""}),
    Route("POST", "/settings/auto-replies/try", "admin", {"text": "Acme price"}),
    Route("GET", "/settings/auto-replies/{auto_reply}", "admin"),
    Route("POST", "/settings/auto-replies/{auto_reply}", "admin", {"trigger": "keyword", "match_type": "exact",
                                                                   "keyword": "closing hours", "reply": "at 5",
                                                                   "menu_key": "", "scene": ""}),
    Route("POST", "/settings/auto-replies/{auto_reply}/toggle", "admin", {"enabled": "0"}),
    Route("POST", "/settings/auto-replies/{auto_reply}/delete", "admin"),
    Route("GET", "/settings/wechat-events", "admin"),
    Route("GET", "/settings/inbox", "admin"),
    Route("POST", "/settings/inbox", "admin", INBOX_SETTINGS),
    Route("POST", "/settings/inbox/teams/{team}", "admin", {"channels": "oa", "languages": "zh_CN", "tag_ids": "{tag}",
                                                            "managers": "{admin}"}),
    Route("POST", "/settings/inbox/people/{agent}", "admin", {"wecom_userid": "seedrep"}),
    # --- contacts ---------------------------------------------------------------------------------------------
    Route("GET", "/contacts", "agent", {"q": "oSeed", "channel": "oa", "tag": "{tag}", "cursor": "", "owner": "any",
                                        "seen": "within:30", "bought": "yes", "spent_min": "1", "spent_max": "1000"}),
    Route("GET", "/contacts/export.csv", "admin", {"q": "oSeed", "channel": "oa", "tag": "{tag}", "owner": "none",
                                                   "seen": "never", "bought": "no", "spent_max": "10"}),
    Route("POST", "/contacts/bulk", "agent", {"action": "tag", "name": "Gold", "tag_id": "", "target": "selected",
                                              "contact": "{contact}", "request_key": "sweep-1", "q": "", "channel": ""}),
    Route("GET", "/contacts/bulk/987654", "agent", control=frozenset({404})),  # a missing action: its own 404
    Route("GET", "/contacts/pick", "agent", {"q": "oSeed", "exclude": "{contact}"}),
    Route("GET", "/contacts/{contact}", "agent", {"channel": "oa", "kind": "message_in", "cursor": ""}),
    Route("POST", "/contacts/{contact}/tags", "agent", {"name": "Gold"}),
    Route("POST", "/contacts/{contact}/tags/{tag}/delete", "agent"),
    Route("POST", "/contacts/{contact}/notes", "agent", {"text": "Prefers calls"}),
    Route("POST", "/contacts/{contact}/merge", "admin", {"other": "oSeedOther0001"}),
    Route("POST", "/contacts/merges/{merge}/undo", "admin", {"back": "/contacts/{contact}"}),
    Route("GET", "/contacts/{contact}/export", "admin"),
    Route("GET", "/contacts/{contact}/events/999999/media", "agent", control=MISSING),
    Route("POST", "/contacts/{contact}/erase", "admin", {"reason": "The person asked"}),
    # --- segments ----------------------------------------------------------------------------------------------
    Route("GET", "/segments", "agent"),
    Route("GET", "/segments/new", "agent"),
    Route("POST", "/segments", "agent", SEGMENT_FORM),
    Route("POST", "/segments/preview", "agent", {**SEGMENT_FORM, "segment_id": "{segment}"}),
    Route("GET", "/segments/{segment}", "agent", {"after": ""}),
    Route("POST", "/segments/{segment}", "agent", SEGMENT_FORM),
    Route("GET", "/segments/{segment}/count", "agent"),
    Route("GET", "/segments/{segment}/delete", "agent"),
    Route("POST", "/segments/{segment}/delete", "agent"),
    # --- commerce ----------------------------------------------------------------------------------------------
    Route("GET", "/settings/pay", "admin"),
    Route("POST", "/settings/pay", "admin", {"mch_id": "1900000109", "app_id": OA["app_id"],
                                             "api_v3_key": "0123456789abcdefghijABCDEFGHIJkl", "public_key": "{pay_pem}",
                                             "public_key_id": "PUB_KEY_ID_0119000001092024090100000001",
                                             "platform_cert": ""}),
    Route("POST", "/settings/pay/keys/remove", "admin", {"key_id": "PUB_KEY_ID_0119000001092024090100000001"},
          control=frozenset({404})),  # acme links no merchant: the control is the key not found
    Route("POST", "/settings/pay/unlink", "admin", control=frozenset({404})),
    Route("GET", "/purchases", "admin", PURCHASE_FILTERS),
    Route("GET", "/purchases/export.csv", "admin", PURCHASE_FILTERS),
    Route("GET", "/products", "admin", {"q": "ACME", "after": ""}),
    Route("POST", "/products/{product}", "admin", {"replenish_days": "30"}),
    Route("GET", "/purchases/import", "admin"),
    # Without a file the upload is refused (400 naming the file): the NUL is refused before that, naming its field.
    Route("POST", "/purchases/import", "admin", {"encoding": "auto"}, control=frozenset({400})),
    Route("GET", "/purchases/import/{purchase_import}", "admin"),
    Route("GET", "/purchases/import/{purchase_import}/problems.csv", "admin"),
    # --- the inbox -----------------------------------------------------------------------------------------------
    Route("GET", "/inbox", "agent", {**QUERY_KEEP, "cursor": "", "current": ""}),
    Route("GET", "/inbox/counts", "agent", QUERY_KEEP),
    Route("GET", "/inbox/manager", "admin"),
    Route("GET", "/inbox/presence", "agent"),
    Route("POST", "/inbox/presence", "agent", {"presence": "online"}),
    Route("POST", "/inbox/alerts", "agent", {"alert": "sound", "on": "0"}),
    Route("GET", "/inbox/stream", "agent", control=None),
    Route("GET", "/inbox/conversations/{conversation}", "agent", QUERY_KEEP),
    Route("GET", "/inbox/conversations/{conversation}/live", "agent", QUERY_KEEP),
    Route("GET", "/inbox/conversations/{conversation}/messages", "agent", {"before": "999999"}),
    Route("GET", "/inbox/conversations/{conversation}/row", "agent", {"box": "mine", "current": ""}),
    Route("POST", "/inbox/conversations/{conversation}/reply", "agent", {"text": "Hello", "note": "1"}),
    Route("POST", "/inbox/conversations/{conversation}/notice", "agent", {"text": "Shipped"}),
    Route("POST", "/inbox/conversations/{conversation}/wecom-task", "agent", {"owner": "{owner}", "text": "Via WeCom"}),
    Route("POST", "/inbox/conversations/{conversation}/messages/999999/send-again", "agent",
          control=frozenset({404})),  # no such message: the probes still must not answer 500
    Route("POST", "/inbox/conversations/{conversation}/take", "admin"),
    Route("POST", "/inbox/conversations/{conversation}/transfer", "admin", {"to": "team:{team}"}),
    Route("POST", "/inbox/conversations/{conversation}/snooze", "agent", {"until": "1h"}),
    Route("POST", "/inbox/conversations/{conversation}/resolve", "agent"),
    Route("GET", "/inbox/conversations/{conversation}/messages/999999/media", "agent", control=MISSING),
    # A picture is a file (no text field to probe): the control proves the route answers, not 500.
    Route("POST", "/inbox/conversations/{conversation}/image", "agent", control=frozenset({400})),
    Route("POST", "/inbox/conversations/{resolved}/reopen", "admin"),
    Route("GET", "/inbox/canned", "agent"),
    Route("POST", "/inbox/canned", "agent", {"shortcut": "bye", "title": "Goodbye", "body": "Bye!",
                                             "scope": "personal"}),
    Route("GET", "/inbox/canned/{canned}", "admin"),
    Route("POST", "/inbox/canned/{canned}", "admin", {"shortcut": "hi", "title": "Hello", "body": "Hi there"}),
    Route("POST", "/inbox/canned/{canned}/delete", "admin"),
    # --- the JSON API ------------------------------------------------------------------------------------------------
    Route("GET", "/api/v1/tenant", "api"),
    Route("GET", "/api/v1/channels/{path}", "api", path_param=("kind", "oa")),
    Route("GET", "/api/v1/contacts", "api", {"identity": "oSeedContact01"}),
    Route("GET", "/api/v1/contacts", "api", {"limit": "10", "cursor": "", "updated_since": "2020-01-01T00:00:00+00:00",
                                             "tag": "{tag}", "segment": "{segment}"}),
    Route("GET", "/api/v1/tags", "api"),
    Route("GET", "/api/v1/contacts/{path}", "api", path_param=("contact_id", "{contact}")),
    Route("GET", "/api/v1/contacts/{path}/timeline", "api", {"channel": "oa", "kind": "message_in", "limit": "10",
                                                           "cursor": ""}, path_param=("contact_id", "{contact}")),
    Route("GET", "/api/v1/contacts/{path}/export", "api", path_param=("contact_id", "{contact}")),
    Route("POST", "/api/v1/contacts/{path}/erase", "api", {"reason": "The person asked"}, json=True,
          path_param=("contact_id", "{contact}")),
    Route("POST", "/api/v1/mp/login", "api", {"openid": "oMpLogin0001", "unionid": "uSeedUnion0001"}, json=True),
    Route("GET", "/api/v1/segments", "api"),
    Route("GET", "/api/v1/segments/{path}", "api", path_param=("segment_id", "{segment}")),
    Route("GET", "/api/v1/segments/{path}/contacts", "api", {"limit": "10", "cursor": ""}, path_param=("segment_id", "{segment}")),
    Route("GET", "/api/v1/conversations", "api", {"status": "assigned", "limit": "10", "cursor": ""}),
    Route("GET", "/api/v1/conversations/{path}", "api", path_param=("conversation_id", "{conversation}")),
    Route("POST", "/api/v1/conversations/handoff", "api", {"identity": "oSeedContact01"}, json=True),
    Route("GET", "/api/v1/purchases", "api", {"contact_id": "{contact}", "limit": "10", "cursor": ""}),
    Route("GET", "/api/v1/purchases/{path}", "api", path_param=("order_id", "Acme-ORDER-1")),
    Route("POST", "/api/v1/purchases", "api", PURCHASE, json=True, control=CREATED),
    Route("POST", "/api/v1/purchases/{path}/refunds", "api", {"refund_id": "RF-SWEEP", "amount_fen": 100,
                                                              "refunded_at": "2026-11-21T09:00:00+08:00"},
          json=True, path_param=("order_id", "Acme-ORDER-1"), control=CREATED),
    # --- re-engagement: pages (ids that name nothing answer 404 in the control) and the JSON API ---------------------
    *ENGAGEMENT_ROUTES,
]
# Two shapes of one JSON route: both are swept.
ROUTES.append(Route("POST", "/api/v1/conversations/handoff", "api", {"contact_id": "{contact}", "channel": "oa"},
                    json=True))


@dataclass
class World:
    seeded: Seeded
    ids: dict[str, str]
    clients: dict[str, Client]

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\{(\w+)\}", lambda m: self.ids.get(m.group(1), m.group(0)), value)
        return value


@pytest.fixture
async def world(acme_seeded: Seeded, client_factory: Any) -> World:  # noqa: F811 (the fixture imported above)
    from tests.conftest import signed_in

    t = acme_seeded.tenant
    _, token = await staff_svc.do_invite(svc.Actor.cli(), t.id, {"email": "joiner@acme.test", "role": "agent"})
    tag = (await contacts_svc.tags_of(t.id, acme_seeded.contact_id))[0]["id"]
    root_email = (await staff_svc.do_create_staff(svc.Actor.cli(), None, "root@siyu.test", "platform_admin",
                                                  PASSWORD)).email
    ids = {"token": token, "tenant": str(t.id), "agent": str(t.agent_id), "admin": str(t.admin_id), "tag": str(tag),
           "contact": str(acme_seeded.contact_id), "merge": str(acme_seeded.merge_id),
           "segment": str(acme_seeded.segment_id), "conversation": str(acme_seeded.conversation_id),
           "resolved": str(acme_seeded.resolved_conversation_id), "canned": str(acme_seeded.canned_id),
           "team": str(acme_seeded.team_id), "invitation": str(acme_seeded.invitation_id),
           "api_key": str(acme_seeded.api_key_id), "auto_reply": str(acme_seeded.auto_reply_id),
           "owner": str(acme_seeded.owner_id), "product": str(acme_seeded.product_id),
           "purchase_import": str(acme_seeded.import_id), "pay_pem": PAY_PEM, "missing": "999999"}
    api = client_factory()
    api.headers["Authorization"] = f"Bearer {acme_seeded.api_key}"
    clients = {"admin": await signed_in(client_factory, t.admin_email),
               "agent": await signed_in(client_factory, t.agent_email),
               "root": await signed_in(client_factory, root_email), "api": api, "anon": client_factory()}
    await clients["anon"].prime()
    return World(acme_seeded, ids, clients)


def _url(world: World, route: Route, path_value: str | None = None) -> str:
    url = route.url
    if route.path_param is not None:
        value = path_value if path_value is not None else quote(world.fill(route.path_param[1]), safe="")
        url = url.replace("{path}", value)
    return world.fill(url)


async def _send(world: World, route: Route, fields: dict[str, Any], path_value: str | None = None) -> httpx.Response:
    client = world.clients[route.who]
    url = _url(world, route, path_value)
    htmx = route.who != "api" and route.method == "POST"
    if route.method == "GET":
        request = client.get(url, params=fields or None, headers={"HX-Request": "true"} if htmx else {})
    elif route.json:
        send = client.patch if route.method == "PATCH" else client.post
        request = send(url, content=json.dumps(fields).encode())
    else:
        request = client.form(url, fields, htmx=htmx)
    # A route that ignored the check could stream forever (/inbox/stream): never wait for that.
    return await asyncio.wait_for(request, 20)


def _names(response: httpx.Response) -> set[str]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return set(response.json().get("fields", {}))
    return set(re.findall(r"<code>([^<]*)</code>", response.text))


def _assert_refused(response: httpx.Response, name: str, probe: str) -> None:
    assert response.status_code == 400, f"{probe}: {response.status_code} {response.text[:400]}"
    shown = name.replace(NUL, "\\u0000")
    assert shown in _names(response), f"{probe}: the answer does not name {shown!r}: {response.text[:400]}"


def probes(route: Route) -> list[tuple[str, dict[str, Any], str | None, str]]:
    """(what, fields, path value or None, the name the answer must give) for one route."""
    out = [(f"field {name}", {**route.fields, name: f"{route.fields[name]}{NUL}x"}, None, name)
           for name in route.fields]
    # A field the route does not read, and a field whose name holds the NUL: refused the same way.
    out.append(("unread field", {**route.fields, "probe": f"a{NUL}b"}, None, "probe"))
    out.append(("NUL in a name", {**route.fields, f"pro{NUL}be": "x"}, None, f"pro{NUL}be"))
    if route.path_param is not None:
        name, value = route.path_param
        out.append(("path parameter", route.fields, value, name))
    return out


@pytest.mark.parametrize("route", ROUTES, ids=[r.id + (" (json)" if r.json else "") for r in ROUTES])
async def test_a_nul_in_any_input_is_a_400_naming_it(world: World, route: Route) -> None:
    base = {k: world.fill(v) for k, v in route.fields.items()}
    for what, fields, path_value, name in probes(route):
        fields = {k: world.fill(v) for k, v in fields.items()}
        if path_value is not None:
            path_value = quote(world.fill(path_value), safe="") + "%00"
        _assert_refused(await _send(world, route, fields, path_value), name, f"{route.id} {what}")
    # JSON: a lone surrogate, which no text column can hold either.
    if route.json:
        name = next(iter(base))
        raw = json.dumps(base)[:-1] + f', "{name}_2": "a\\ud800b"}}'
        client = world.clients[route.who]
        send = client.patch if route.method == "PATCH" else client.post
        response = await asyncio.wait_for(send(_url(world, route), content=raw.encode()), 20)
        _assert_refused(response, f"{name}_2", f"{route.id} surrogate")
    # The control: the same request without the bad character works.
    if route.control is not None:
        response = await _send(world, route, base)
        assert response.status_code in route.control, f"{route.id} control: {response.status_code} {response.text[:400]}"


def test_the_sweep_counts_its_probes() -> None:
    """The size of the sweep, for the record (routes x fields): it only grows."""
    total = sum(len(probes(r)) + (1 if r.json else 0) for r in ROUTES)
    print(f"unstorable-input sweep: {len(ROUTES)} route shapes, {total} probes")
    assert len(ROUTES) >= 100 and total >= 350


# --- every route is swept --------------------------------------------------------------------------------------

NOT_SWEPT = {
    # WeChat's callbacks: verified (signature) before parsed, by the gateway; tests/integration/wechat.
    ("GET", "/wechat/{}/{}"), ("POST", "/wechat/{}/{}"),
}


def test_every_route_is_swept(app: Any) -> None:
    def normal(path: str) -> str:
        path = re.sub(r"/\d+(?=/|$)", "/{}", path.split("?")[0])  # a literal id stands for any
        return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/") or "/"

    swept = {(r.method, normal(r.url)) for r in ROUTES}
    found = set()
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        for method in route.methods:
            if method not in ("OPTIONS", "HEAD"):
                found.add((method, normal(route.path)))
    assert found - swept - NOT_SWEPT == set(), "a route is not swept: add it to ROUTES"
    assert swept <= found, "a swept route no longer exists: update ROUTES"


# --- how the refusal looks, and that nothing was written -----------------------------------------------------

async def test_a_page_answers_a_full_page_naming_the_field(world: World) -> None:
    r = await world.clients["agent"].get("/contacts", params={"q": f"Li{NUL}"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.lstrip().lower().startswith("<!doctype html>")
    assert "<code>q</code>" in r.text and "cannot be stored" in r.text


async def test_an_htmx_request_gets_the_message_in_the_flash_area(world: World) -> None:
    from siyu.timeline.tables import TimelineEvent

    before = await TimelineEvent.count()
    r = await world.clients["agent"].form(f"/contacts/{world.ids['contact']}/notes", {"text": f"call{NUL}back"},
                                          htmx=True)
    assert r.status_code == 400
    assert r.headers["hx-retarget"] == "#flash" and r.headers["hx-reswap"] == "innerHTML"
    assert "<!doctype" not in r.text.lower() and "<code>text</code>" in r.text
    assert await TimelineEvent.count() == before  # the note was not half-written


async def test_the_api_answers_json_naming_the_path_of_the_field(world: World) -> None:
    api = world.clients["api"]
    body = {"identity": "oSeedContact01", "meta": {"tags": ["ok", f"bad{NUL}"]}}
    r = await api.post("/api/v1/conversations/handoff", content=json.dumps(body).encode())
    assert r.status_code == 400
    assert r.json()["fields"] == {"meta.tags[1]": r.json()["fields"]["meta.tags[1]"]}
    assert "cannot be stored" in r.json()["fields"]["meta.tags[1]"]
    # Several bad fields are all named, in a stable order.
    r = await api.post("/api/v1/mp/login", content=json.dumps({"openid": f"o{NUL}", "unionid": f"u{NUL}"}).encode())
    assert list(r.json()["fields"]) == ["openid", "unionid"]


async def test_the_message_follows_the_persons_language(world: World, client_factory: Any) -> None:
    anon = client_factory()
    anon.headers["Accept-Language"] = "zh-CN"
    await anon.prime()
    r = await anon.post("/login", data={"email": f"a{NUL}@acme.test", "password": "x", "_csrf_token": anon.csrf})
    assert r.status_code == 400
    assert "无法保存的字符" in r.text and "<code>email</code>" in r.text


@pytest.mark.parametrize(("part", "name"), [
    (b'Content-Disposition: form-data; name="text"\r\n\r\ncall\x00back', "text"),
    (b'Content-Disposition: form-data; name="text"\r\n\r\n\xff\xfe not UTF-8', "body"),
    (b'Content-Disposition: form-data; name="text"\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nhi', "body"),
], ids=["nul", "not-utf8", "unknown-charset"])
async def test_multipart_forms_are_checked_too(world: World, part: bytes, name: str) -> None:
    agent = world.clients["agent"]
    body = b"--XyZ\r\n" + part + b"\r\n--XyZ--\r\n"
    r = await agent.post(f"/contacts/{world.ids['contact']}/notes", content=body,
                         headers={"content-type": "multipart/form-data; boundary=XyZ", "x-csrftoken": agent.csrf})
    assert r.status_code == 400, r.text[:300]
    assert f"<code>{name}</code>" in r.text


async def test_deeply_nested_json_is_refused_without_a_500(world: World) -> None:
    api = world.clients["api"]
    deep = b'{"identity": ' + b"[" * 200_000 + b'"\\ud800"' + b"]" * 200_000 + b"}"
    r = await asyncio.wait_for(api.post("/api/v1/conversations/handoff", content=deep), 20)
    assert r.status_code == 400


def test_wechat_callbacks_are_left_to_their_gateway() -> None:
    from siyu.web.inputs import InputGuard

    bypass = InputGuard.should_bypass_for_scope
    assert bypass is not None
    assert bypass({"path": "/wechat/acme/oa"}) and bypass({"path": "/wechat-bare"})  # type: ignore[arg-type]
    assert not bypass({"path": "/settings/wechat-events"})  # type: ignore[arg-type]

"""The Official Account's lightweight CRM: welcome on follow (per QR scene), keyword and menu replies,
answered as passive replies (encrypted in safe mode); configured by the tenant admin."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from siyu.tenants import services as tenants
from siyu.wechat import services as svc
from siyu.wechat.tables import AutoReply
from tests.conftest import OA, Client, TenantFixture
from tests.wechat_payloads import Sender, event, text


@pytest.fixture
async def oa(acme: TenantFixture) -> Sender:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", OA)
    return Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")


async def rule(tenant: TenantFixture, **data: str) -> int:
    return await svc.do_create_rule(tenants.Actor.cli(), tenant.id, data)


async def ask(client: Client, sender: Sender, fields: dict[str, Any]) -> str | None:
    """Send a callback; the decrypted passive reply's text, or None when Siyu only acknowledged."""
    cb = sender.callback(fields)
    r = await client.post(cb.url, content=cb.body)
    assert r.status_code == 200
    if r.text == "success":
        return None
    assert "<Encrypt>" in r.text and "<Content>" not in r.text  # safe mode: the reply is encrypted too
    reply = sender.decrypt_reply(r.text)
    assert f"<ToUserName><![CDATA[{fields['FromUserName']}]]></ToUserName>" in reply
    return reply.split("<Content><![CDATA[")[1].split("]]></Content>")[0]


async def test_keyword_rules_exact_beats_contains_and_longest_contains_wins(client: Client, oa: Sender,
                                                                          acme: TenantFixture, app: Any) -> None:
    await rule(acme, trigger="keyword", match_type="exact", keyword="价格", reply="价格表：https://brand.example/p")
    await rule(acme, trigger="keyword", match_type="contains", keyword="价", reply="想了解价格吗？")
    await rule(acme, trigger="keyword", match_type="contains", keyword="Opening hours", reply="10:00–22:00")
    await rule(acme, trigger="keyword", match_type="contains", keyword="hours", reply="Ask us!")
    assert await ask(client, oa, text("o1", "价格", 1)) == "价格表：https://brand.example/p"
    assert await ask(client, oa, text("o1", "这个包什么价位", 2)) == "想了解价格吗？"
    assert await ask(client, oa, text("o1", "what are your OPENING HOURS?", 3)) == "10:00–22:00"
    assert await ask(client, oa, text("o1", "ＨＯＵＲＳ", 4)) == "Ask us!"  # full-width letters
    assert await ask(client, oa, text("o1", "你好", 5)) is None
    await app.state.ingestor.settle()  # hits are counted in bulk, after the answers
    hits = {r["keyword"]: r["hits"] for r in await AutoReply.select(AutoReply.keyword, AutoReply.hits)}
    assert hits == {"价格": 1, "价": 1, "Opening hours": 1, "hours": 1}


async def test_welcome_per_qr_scene_beats_the_general_welcome(client: Client, oa: Sender,
                                                             acme: TenantFixture) -> None:
    await rule(acme, trigger="welcome", reply="欢迎关注 Maison Lumière！")
    await rule(acme, trigger="welcome", scene="spring_fair", reply="感谢在春季展会关注我们，凭此消息领取小礼品。")
    at = int(time.time())
    assert await ask(client, oa, event("o1", "subscribe", at=at)) == "欢迎关注 Maison Lumière！"
    fair = await ask(client, oa, event("o2", "subscribe", at=at, EventKey="qrscene_spring_fair", Ticket="T"))
    assert fair == "感谢在春季展会关注我们，凭此消息领取小礼品。"
    other = await ask(client, oa, event("o3", "subscribe", at=at, EventKey="qrscene_other", Ticket="T"))
    assert other == "欢迎关注 Maison Lumière！"


async def test_menu_click_reply_and_disabled_rules(client: Client, oa: Sender, acme: TenantFixture) -> None:
    rule_id = await rule(acme, trigger="click", menu_key="MENU_CONTACT", reply="客服时间 9:00-18:00")
    assert await ask(client, oa, event("o1", "CLICK", EventKey="MENU_CONTACT")) == "客服时间 9:00-18:00"
    assert await ask(client, oa, event("o1", "CLICK", EventKey="OTHER", at=int(time.time()) + 1)) is None
    await svc.do_set_rule_enabled(tenants.Actor.cli(), acme.id, rule_id, False)
    assert await ask(client, oa, event("o1", "CLICK", EventKey="MENU_CONTACT", at=int(time.time()) + 2)) is None


async def test_plain_mode_replies_in_plain_xml(client: Client, acme: TenantFixture) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", {**OA, "mode": "plain"})
    plain = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")
    await rule(acme, trigger="keyword", keyword="hi", reply="Hello!")
    cb = plain.callback(text("o1", "hi", 9, to="gh_0123456789ab"))
    r = await client.post(cb.url, content=cb.body)
    assert "<Content><![CDATA[Hello!]]></Content>" in r.text
    assert "<FromUserName><![CDATA[gh_0123456789ab]]></FromUserName>" in r.text


async def test_a_retried_message_gets_the_same_reply(client: Client, oa: Sender, acme: TenantFixture) -> None:
    await rule(acme, trigger="keyword", keyword="hi", reply="Hello!")
    cb = oa.callback(text("o1", "hi", 10))
    for _ in range(2):
        r = await client.post(cb.url, content=cb.body)
        assert "Hello!" in oa.decrypt_reply(r.text)


async def test_mini_program_and_wecom_never_get_passive_replies(client: Client, acme: TenantFixture) -> None:
    from tests.conftest import MP

    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "mp", MP)
    await rule(acme, trigger="keyword", keyword="hi", reply="Hello!")
    mp = Sender("acme", "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")
    cb = mp.callback({"ToUserName": "gh", "FromUserName": "oMp", "CreateTime": int(time.time()),
                      "MsgType": "text", "Content": "hi", "MsgId": 77})
    assert (await client.post(cb.url, content=cb.body)).text == "success"


# --- the admin page ---------------------------------------------------------------------------------

async def test_admin_adds_rules_on_the_page(acme_admin: Client, oa: Sender) -> None:
    page = await acme_admin.get("/settings/auto-replies")
    assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html>")
    r = await acme_admin.form("/settings/auto-replies", {"trigger": "keyword", "match_type": "contains",
                                                         "keyword": "Price", "reply": "See our prices"}, htmx=True)
    assert r.status_code == 200 and not r.text.lstrip().lower().startswith("<!doctype")
    assert "See our prices" in r.text
    assert "HX-Trigger" in r.headers
    tried = await acme_admin.form("/settings/auto-replies/try", {"text": "what is the PRICE?"}, htmx=True)
    assert "See our prices" in tried.text
    nothing = await acme_admin.form("/settings/auto-replies/try", {"text": "hello"}, htmx=True)
    assert "No keyword rule matches" in nothing.text


async def test_invalid_rules_name_their_fields_and_save_nothing(acme_admin: Client, oa: Sender) -> None:
    cases = [
        ({"trigger": "keyword", "keyword": "", "reply": "x"}, "keyword", "This field is required."),
        ({"trigger": "click", "menu_key": "", "reply": "x"}, "menu_key", "This field is required."),
        ({"trigger": "welcome", "reply": ""}, "reply", "This field is required."),
        ({"trigger": "keyword", "keyword": "k", "reply": "长" * 700}, "reply", "2048 bytes"),
        ({"trigger": "sometimes", "reply": "x"}, "trigger", "Choose one of"),
    ]
    for data, field_name, message in cases:
        r = await acme_admin.form("/settings/auto-replies", data, htmx=True)
        assert r.status_code == 400, data
        assert message in r.text and f'id="msg-{field_name}"' in r.text
    assert await AutoReply.count() == 0
    await acme_admin.form("/settings/auto-replies", {"trigger": "welcome", "reply": "Hi"})
    dup = await acme_admin.form("/settings/auto-replies", {"trigger": "welcome", "reply": "Hello"}, htmx=True)
    assert dup.status_code == 400 and "already exists" in dup.text
    assert await AutoReply.count() == 1


async def test_toggle_and_delete(acme_admin: Client, acme: TenantFixture) -> None:
    rule_id = await rule(acme, trigger="keyword", keyword="hi", reply="Hello!")
    r = await acme_admin.form(f"/settings/auto-replies/{rule_id}/toggle", {"enabled": "0"}, htmx=True)
    assert r.status_code == 200 and "Turn on" in r.text
    assert (await AutoReply.select(AutoReply.enabled).first())["enabled"] is False
    r = await acme_admin.form(f"/settings/auto-replies/{rule_id}/delete", {}, htmx=True)
    assert r.status_code == 200 and await AutoReply.count() == 0
    assert (await acme_admin.form(f"/settings/auto-replies/{rule_id}/delete", {})).status_code == 404


async def test_agents_cannot_manage_auto_replies(acme_agent: Client) -> None:
    assert (await acme_agent.get("/settings/auto-replies")).status_code == 403
    assert (await acme_agent.form("/settings/auto-replies", {"trigger": "welcome", "reply": "x"})).status_code == 403
    assert await AutoReply.count() == 0


async def test_each_tenant_sees_only_its_own_rules_and_traffic(acme_admin: Client, oa: Sender, client: Client,
                                                               globex: TenantFixture) -> None:
    from tests.conftest import MP

    await tenants.do_link_channel(tenants.Actor.cli(), globex.id, "oa", {**OA, "app_id": MP["app_id"],
                                                                         "token": "GlobexToken9"})
    globex_oa = Sender("globex", "oa", MP["app_id"], "GlobexToken9", OA["aes_key"], "safe")
    await rule(globex, trigger="keyword", keyword="globexword", reply="globex-secret-reply")
    cb = globex_oa.callback(text("oGlobexCustomer", "hello", 501))
    assert (await client.post(cb.url, content=cb.body)).status_code == 200
    own = oa.callback(text("oAcmeCustomer", "hello", 502))
    assert (await client.post(own.url, content=own.body)).status_code == 200
    rules = await acme_admin.get("/settings/auto-replies")
    assert "globexword" not in rules.text and "globex-secret-reply" not in rules.text
    events = await acme_admin.hx_get("/settings/wechat-events")
    assert "oAcmeCustomer" in events.text and "oGlobexCustomer" not in events.text
    tried = await acme_admin.form("/settings/auto-replies/try", {"text": "globexword"}, htmx=True)
    assert "globex-secret-reply" not in tried.text


async def test_a_callback_signed_for_one_tenant_is_refused_at_another_tenants_url(
        client: Client, oa: Sender, globex: TenantFixture) -> None:
    from siyu.wechat.tables import InboundEvent

    await tenants.do_link_channel(tenants.Actor.cli(), globex.id, "oa", {**OA, "token": "GlobexToken9"})
    cb = oa.callback(text("oUser", "hi", 1))
    r = await client.post(cb.url.replace("/wechat/acme/", "/wechat/globex/"), content=cb.body)
    assert r.status_code == 403
    assert await InboundEvent.count() == 0


# --- editing a rule ---------------------------------------------------------------------------------

async def test_admin_edits_a_rule_and_the_bot_answers_with_it_at_once(
        acme_admin: Client, client: Client, oa: Sender, acme: TenantFixture, app: Any) -> None:
    from siyu.tenants.tables import AuditLog

    rule_id = await rule(acme, trigger="keyword", match_type="exact", keyword="价格", reply="旧价目表")
    assert await ask(client, oa, text("o1", "价格", 1)) == "旧价目表"  # the rules are now kept in memory
    await app.state.ingestor.settle()  # its hit is counted after the answer
    await AutoReply.update({AutoReply.hits: 5}).where(AutoReply.id == rule_id)

    page = await acme_admin.get(f"/settings/auto-replies/{rule_id}")
    assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html>")
    assert f'<form id="rule-form" method="post" action="/settings/auto-replies/{rule_id}"' in page.text
    assert 'value="价格"' in page.text and ">旧价目表</textarea>" in page.text
    assert "Change the rule" in page.text and "Save changes" in page.text
    fragment = await acme_admin.hx_get(f"/settings/auto-replies/{rule_id}")
    assert fragment.text.lstrip().startswith('<div id="rules">') and "<html" not in fragment.text

    r = await acme_admin.form(f"/settings/auto-replies/{rule_id}", {
        "trigger": "keyword", "match_type": "contains", "keyword": "价格表", "reply": "2026 新价目表",
        "scene": "ignored", "menu_key": "ignored"}, htmx=True)
    assert r.status_code == 200, r.text
    assert "2026 新价目表" in r.text and "旧价目表" not in r.text
    assert r.headers["HX-Push-Url"] == "/settings/auto-replies"
    assert "Add a rule" in r.text  # the form is back to adding
    row = await AutoReply.select().where(AutoReply.id == rule_id).first()
    assert (row["trigger"], row["match_type"], row["keyword"], row["keyword_norm"], row["scene"], row["menu_key"],
            row["reply"], row["hits"], row["enabled"]) == ("keyword", "contains", "价格表", "价格表", "", "",
                                                           "2026 新价目表", 5, True)
    assert await AutoReply.count() == 1
    # Every process forgets its kept rules: the next message gets the new reply.
    assert await ask(client, oa, text("o1", "请发价格表给我", 2)) == "2026 新价目表"
    entry = await AuditLog.select().where(AuditLog.action == "auto_reply.updated").first().output(load_json=True)
    assert entry["target_id"] == str(rule_id) and entry["actor_label"] == acme.admin_email
    assert entry["changes"] == {"rule": {"trigger": "keyword", "match_type": "contains", "keyword": "价格表"},
                                "match_type": ["exact", "contains"], "keyword": ["价格", "价格表"],
                                "reply": ["旧价目表", "2026 新价目表"]}
    audit_page = await acme_admin.get("/settings/audit")
    assert (f'changed the auto-reply <a href="/settings/auto-replies/{rule_id}">for the keyword “价格表”</a>.'
            in audit_page.text)
    assert "Keyword</span> 价格 → 价格表" in audit_page.text


async def test_a_rule_can_change_its_trigger(acme_admin: Client, acme: TenantFixture) -> None:
    rule_id = await rule(acme, trigger="keyword", keyword="hi", reply="Hello!")
    r = await acme_admin.form(f"/settings/auto-replies/{rule_id}", {
        "trigger": "click", "match_type": "contains", "keyword": "hi", "menu_key": "MENU_HELLO", "reply": "Hello!"})
    assert r.status_code == 200
    row = await AutoReply.select().where(AutoReply.id == rule_id).first()
    assert (row["trigger"], row["keyword"], row["keyword_norm"], row["match_type"], row["menu_key"]) == (
        "click", "", "", "exact", "MENU_HELLO")


async def test_an_edit_that_repeats_another_rule_or_is_invalid_changes_nothing(
        acme_admin: Client, acme: TenantFixture) -> None:
    await rule(acme, trigger="welcome", reply="Hi")
    other = await rule(acme, trigger="welcome", scene="fair", reply="Hi from the fair")
    kw = await rule(acme, trigger="keyword", keyword="price", reply="Prices")
    cases = [
        (other, {"trigger": "welcome", "scene": "", "reply": "x"}, "scene", "already exists"),
        (kw, {"trigger": "keyword", "match_type": "exact", "keyword": "", "reply": "x"}, "keyword", "required"),
        (kw, {"trigger": "keyword", "match_type": "fuzzy", "keyword": "p", "reply": "x"}, "match_type", "Choose one"),
        (kw, {"trigger": "click", "menu_key": "K" * 129, "reply": "x"}, "menu_key", "too long"),
    ]
    before = await AutoReply.select().order_by(AutoReply.id)
    for rule_id, data, field_name, message in cases:
        r = await acme_admin.form(f"/settings/auto-replies/{rule_id}", data, htmx=True)
        assert r.status_code == 400, (data, r.text[:300])
        assert message in r.text and f'id="msg-{field_name}"' in r.text, data
        assert f'action="/settings/auto-replies/{rule_id}"' in r.text  # still editing that rule
    assert await AutoReply.select().order_by(AutoReply.id) == before
    # A long value in a field the chosen trigger does not use is not an error: the page hides that field.
    ok = await acme_admin.form(f"/settings/auto-replies/{kw}", {"trigger": "keyword", "keyword": "price",
                                                                "scene": "s" * 500, "reply": "Prices!"})
    assert ok.status_code == 200


async def test_another_tenants_rule_cannot_be_opened_or_edited(acme_admin: Client, globex: TenantFixture) -> None:
    theirs = await rule(globex, trigger="keyword", keyword="secret", reply="globex-only")
    missing = theirs + 1000
    for rule_id in (theirs, missing):
        assert (await acme_admin.get(f"/settings/auto-replies/{rule_id}")).status_code == 404
        r = await acme_admin.form(f"/settings/auto-replies/{rule_id}", {"trigger": "keyword", "keyword": "x",
                                                                        "reply": "taken over"})
        assert r.status_code == 404
    assert (await AutoReply.select(AutoReply.reply).where(AutoReply.id == theirs).first())["reply"] == "globex-only"


async def test_the_form_marks_the_fields_of_each_trigger(acme_admin: Client) -> None:
    """Without JavaScript every field shows (with its "… only" help); ui.js hides the blocks whose
    data-show-for does not list the chosen trigger (tests/e2e checks it in the browser)."""
    page = (await acme_admin.get("/settings/auto-replies")).text
    assert '<select id="f-trigger" name="trigger" data-reveal' in page
    form = page[page.index('<form id="rule-form"'):page.index('id="f-reply"')]
    pieces = re.split(r'data-show-for="(\w+)"', form)
    fields = {trigger: re.findall(r'name="(\w+)"', body) for trigger, body in zip(pieces[1::2], pieces[2::2], strict=True)}
    assert fields == {"keyword": ["match_type", "keyword"], "welcome": ["scene"], "click": ["menu_key"]}
    assert '<script src="/static/ui.js" defer></script>' in page

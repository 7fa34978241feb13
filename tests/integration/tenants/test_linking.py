"""Linking a WeChat account in the order that works: WeChat's URL check (the GET with `echostr` the console
sends on "submit") is noted by the gateway and shown on the channels page as it arrives, with why it failed;
a changed Token or key asks for a new check; the saved Token and EncodingAESKey are shown again only to a
tenant admin who re-enters their password (audited, throttled like sign-ins); and a public base URL WeChat
cannot reach is flagged in words."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.core import db, settings
from siyu.tenants import linking
from siyu.tenants import services as svc
from siyu.tenants.tables import AuditLog
from tests.conftest import OA, PASSWORD, WECOM, Client, TenantFixture
from tests.integration.wechat.test_gateway import WECOM_SAMPLE
from tests.wechat_payloads import sign

ECHO = "8127361823"


async def link(tenant: TenantFixture, kind: str = "oa", data: dict[str, str] = OA) -> None:
    await svc.do_link_channel(svc.Actor.cli(), tenant.id, kind, data)


async def url_check_get(client: Client, token: str, ts: int | None = None, slug: str = "acme") -> Any:
    """WeChat's URL check of an Official Account, signed with `token`."""
    stamp, nonce = str(ts if ts is not None else int(time.time())), "4242"
    return await client.get(f"/wechat/{slug}/oa", params={"signature": sign(token, stamp, nonce), "timestamp": stamp,
                                                          "nonce": nonce, "echostr": ECHO})


async def noted(tenant_id: int, kind: str = "oa") -> tuple[datetime | None, str]:
    row = await db.fetchrow("SELECT url_check_at, url_check_outcome FROM channel_account WHERE tenant = $1 "
                            "AND kind = $2", tenant_id, kind)
    return row["url_check_at"], row["url_check_outcome"]


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The notes' clock, stopped (and moved by hand): the once-a-second rule without waiting."""
    at = [datetime(2026, 12, 5, 10, 0, 0, tzinfo=UTC)]
    monkeypatch.setattr(linking, "now", lambda: at[0])
    return at


@pytest.fixture
def no_skew_check(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SIYU_CALLBACK_MAX_SKEW", "0")
    settings.reset_settings()
    yield
    monkeypatch.undo()
    settings.reset_settings()


# --- WeChat's URL check, noted and shown -------------------------------------------------------------

async def test_wechats_url_check_shows_on_the_page_with_why_it_failed(
        client: Client, acme: TenantFixture, acme_admin: Client, frozen: Any) -> None:
    await link(acme)
    fragment = await acme_admin.get("/settings/channels/oa/url-check")
    assert fragment.status_code == 200 and not fragment.text.lstrip().lower().startswith("<!doctype")
    assert "Waiting for WeChat's check of the URL" in fragment.text
    assert 'hx-get="/settings/channels/oa/url-check" hx-trigger="every 2s"' in fragment.text  # polled while open
    assert fragment.headers["cache-control"] == "no-store"

    # The console has another Token: WeChat's check is refused, and the page says why.
    refused = await url_check_get(client, "TheConsolesToken9")
    assert refused.status_code == 403 and ECHO not in refused.text
    at, outcome = await noted(acme.id)
    assert (at, outcome) == (frozen[0], "token")
    fragment = await acme_admin.get("/settings/channels/oa/url-check")
    assert "WeChat's check of the URL arrived, and failed." in fragment.text
    assert "Its signature does not match the Token saved in Siyu" in fragment.text
    assert "2026-12-05 18:00:00" in fragment.text  # when, to the second (shown in Shanghai time)

    # Fixed in the console and submitted again (within the same second): the success is noted at once.
    passed = await url_check_get(client, OA["token"])
    assert passed.status_code == 200 and passed.text == ECHO
    assert await noted(acme.id) == (frozen[0], "ok")
    fragment = await acme_admin.get("/settings/channels/oa/url-check")
    assert "✔ WeChat checked the URL, and Siyu answered it correctly." in fragment.text
    assert 'hx-trigger="every 15s"' in fragment.text
    page = await acme_admin.get("/settings/channels?step=oa")
    assert "3. WeChat checks the URL" in page.text and "Siyu answered it correctly" in page.text


async def test_refused_checks_are_noted_at_most_once_a_second_and_never_hide_a_success(
        client: Client, acme: TenantFixture, frozen: Any) -> None:
    await link(acme)
    first = frozen[0]
    for _ in range(5):  # anyone can send these: they cost at most one write a second
        assert (await url_check_get(client, "Forged000")).status_code == 403
    assert await noted(acme.id) == (first, "token")
    old = str(int(time.time()) - 3600)
    stale = await client.get("/wechat/acme/oa", params={"signature": sign(OA["token"], old, "1"), "timestamp": old,
                                                         "nonce": "1", "echostr": ECHO})
    assert stale.status_code == 403
    assert await noted(acme.id) == (first, "token")  # within the same second: not noted
    frozen[0] = first + timedelta(seconds=1)
    stale = await client.get("/wechat/acme/oa", params={"signature": sign(OA["token"], old, "1"), "timestamp": old,
                                                         "nonce": "1", "echostr": ECHO})
    assert stale.status_code == 403
    assert await noted(acme.id) == (frozen[0], "clock")  # its time is an hour off this server's clock


async def test_the_page_explains_a_clock_too_far_off(client: Client, acme: TenantFixture, acme_admin: Client) -> None:
    await link(acme)
    old = str(int(time.time()) - 3600)
    r = await client.get("/wechat/acme/oa", params={"signature": sign(OA["token"], old, "7"), "timestamp": old,
                                                     "nonce": "7", "echostr": ECHO})
    assert r.status_code == 403
    fragment = await acme_admin.get("/settings/channels/oa/url-check")
    assert "Its time is more than 5 minutes away from this server's clock." in fragment.text


async def test_what_is_not_wechats_check_is_not_noted(client: Client, acme: TenantFixture) -> None:
    await link(acme)
    ts = str(int(time.time()))
    for params in ({}, {"echostr": ECHO}, {"timestamp": ts, "nonce": "1", "echostr": ECHO},
                   {"signature": "x" * 40, "timestamp": ts, "nonce": "1"}):
        r = await client.get("/wechat/acme/oa", params=params)  # a browser, a probe
        assert r.status_code in (400, 403), params
    assert await noted(acme.id) == (None, "")
    # Not linked (yet): WeChat's check gets 404, and there is nothing to note it on.
    assert (await url_check_get(client, OA["token"], slug="globex")).status_code == 404


async def test_wecom_check_that_does_not_decrypt_names_the_encoding_aes_key(
        client: Client, acme: TenantFixture, acme_admin: Client, no_skew_check: Any) -> None:
    s = WECOM_SAMPLE
    await link(acme, "wecom", {**WECOM, "corp_id": s["corp_id"], "token": s["token"], "agent_id": "218"})
    r = await client.get("/wechat/acme/wecom", params=s["verify"])
    assert r.status_code != 200
    assert (await noted(acme.id, "wecom"))[1] == "aes_key"
    fragment = await acme_admin.get("/settings/channels/wecom/url-check")
    assert "could not be decrypted with the EncodingAESKey and CorpID saved in Siyu" in fragment.text

    # The right key saved: WeChat has to check again (the page waits for it), and then it passes.
    await acme_admin.form("/settings/channels/wecom", {**WECOM, "corp_id": s["corp_id"], "agent_id": "218",
                                                       "token": "", "secret": "", "aes_key": s["aes_key"]}, htmx=True)
    assert await noted(acme.id, "wecom") == (None, "")
    assert "Waiting for WeChat's check" in (await acme_admin.get("/settings/channels/wecom/url-check")).text
    r = await client.get("/wechat/acme/wecom", params=s["verify"])
    assert r.status_code == 200
    assert (await noted(acme.id, "wecom"))[1] == "ok"


async def test_new_callback_settings_ask_for_a_new_check_and_other_changes_do_not(
        client: Client, acme: TenantFixture, acme_admin: Client) -> None:
    await link(acme)
    assert (await url_check_get(client, OA["token"])).status_code == 200
    keep = {**OA, "app_secret": "", "aes_key": "", "token": ""}
    r = await acme_admin.form("/settings/channels/oa", {**keep, "oa_kind": "subscription"}, htmx=True)
    assert r.status_code == 200, r.text
    assert (await noted(acme.id))[1] == "ok"  # the account type is no callback setting
    assert (await svc.channel_credentials(acme.id, "oa")).token == OA["token"]  # an empty Token keeps the saved one
    await acme_admin.form("/settings/channels/oa", {**keep, "aes_key": OA["aes_key"]}, htmx=True)
    assert (await noted(acme.id))[1] == "ok"  # the same key typed again
    for change in ({"token": "NewToken456"}, {"aes_key": "Z" * 43}, {"mode": "compatible"}):
        assert (await url_check_get(client, (await svc.channel_credentials(acme.id, "oa")).token)).status_code == 200
        assert (await noted(acme.id))[1] == "ok"
        await acme_admin.form("/settings/channels/oa", {**keep, **change}, htmx=True)
        assert await noted(acme.id) == (None, ""), change


async def test_the_url_check_belongs_to_the_signed_in_admins_brand(
        client: Client, acme: TenantFixture, globex: TenantFixture, acme_agent: Client, globex_admin: Client) -> None:
    await link(acme)
    assert (await url_check_get(client, OA["token"])).status_code == 200
    theirs = await globex_admin.get("/settings/channels/oa/url-check")
    assert theirs.status_code == 200
    assert "This account is not linked." in theirs.text and "hx-get" not in theirs.text  # nothing to poll
    assert (await acme_agent.get("/settings/channels/oa/url-check")).status_code == 403
    assert (await globex_admin.get("/settings/channels/sms/url-check")).status_code == 404


# --- the saved Token and EncodingAESKey, after the password -------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
async def test_the_saved_token_and_key_are_shown_after_the_password_and_audited(
        acme: TenantFixture, acme_admin: Client, htmx: bool) -> None:
    await link(acme)
    page = await acme_admin.get("/settings/channels?step=oa")
    assert OA["token"] not in page.text and OA["aes_key"] not in page.text
    assert 'id="f-password"' in page.text and "Show the Token and EncodingAESKey" in page.text

    wrong = await acme_admin.form("/settings/channels/oa/reveal", {"password": "not it"}, htmx=htmx)
    assert wrong.status_code == 400
    assert "This is not your password." in wrong.text
    assert OA["token"] not in wrong.text and OA["aes_key"] not in wrong.text
    assert not await AuditLog.exists().where(AuditLog.action == "channel.oa.revealed")

    shown = await acme_admin.form("/settings/channels/oa/reveal", {"password": PASSWORD}, htmx=htmx)
    assert shown.status_code == 200
    assert shown.headers["cache-control"] == "no-store"
    assert f"<code>{OA['token']}</code>" in shown.text and f"<code>{OA['aes_key']}</code>" in shown.text
    assert OA["app_secret"] not in shown.text  # the AppSecret comes from the console, never back from Siyu
    assert 'id="f-password"' not in shown.text
    if htmx:
        assert shown.text.lstrip().startswith('<section class="card" id="console-values">')
    else:
        assert shown.text.lstrip().lower().startswith("<!doctype html>")
    [entry] = await AuditLog.select().where(AuditLog.action == "channel.oa.revealed").output(load_json=True)
    assert entry["actor_label"] == acme.admin_email
    assert OA["token"] not in repr(entry) and OA["aes_key"] not in repr(entry)
    log = re.sub(r"<[^>]+>", "", (await acme_admin.get("/settings/audit")).text)
    assert (f"Acme Admin entered their password again and was shown the callback Token and "
            f"EncodingAESKey of the Official Account {OA['app_id']}.") in html.unescape(log)
    # A reload masks them again.
    assert OA["token"] not in (await acme_admin.get("/settings/channels?step=oa")).text


async def test_wrong_passwords_to_reveal_count_as_failed_sign_ins(acme: TenantFixture, acme_admin: Client) -> None:
    await link(acme)
    limit = settings.get_settings().login_max_failures_account
    for _ in range(limit):
        assert (await acme_admin.form("/settings/channels/oa/reveal", {"password": "guess"}, htmx=True)).status_code == 400
    refused = await acme_admin.form("/settings/channels/oa/reveal", {"password": PASSWORD}, htmx=True)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "Too many wrong passwords." in refused.text and OA["token"] not in refused.text
    assert not await AuditLog.exists().where(AuditLog.action == "channel.oa.revealed")


async def test_revealing_an_account_that_is_not_linked_answers_404(
        acme: TenantFixture, acme_admin: Client, acme_agent: Client, globex_admin: Client,
        globex: TenantFixture) -> None:
    await link(acme)
    assert (await globex_admin.form("/settings/channels/oa/reveal", {"password": PASSWORD})).status_code == 404
    assert (await acme_admin.form("/settings/channels/mp/reveal", {"password": PASSWORD})).status_code == 404
    assert (await acme_agent.form("/settings/channels/oa/reveal", {"password": PASSWORD})).status_code == 403


# --- can WeChat reach the public base URL? --------------------------------------------------------------

@pytest.mark.parametrize(("base", "expected"), [
    ("http://127.0.0.1:8000", ["127.0.0.1 is this computer's own (loopback) address",
                               "The address starts with http://, not https://",
                               "not on port 8000"]),
    ("https://192.168.1.20", ["192.168.1.20 is a private network address"]),
    ("https://crm.maison-lumiere.cn", []),
])
async def test_the_page_flags_a_public_base_url_wechat_cannot_reach(
        acme_admin: Client, monkeypatch: pytest.MonkeyPatch, base: str, expected: list[str]) -> None:
    monkeypatch.setenv("SIYU_PUBLIC_BASE_URL", base)
    settings.reset_settings()
    try:
        page = await acme_admin.get("/settings/channels?step=oa")
    finally:
        monkeypatch.undo()
        settings.reset_settings()
    assert f"<code>{base}/wechat/acme/oa</code>" in page.text
    if expected:
        assert 'id="reach-warning"' in page.text and "Set SIYU_PUBLIC_BASE_URL to the https address" in page.text
        for words in expected:
            assert words in html.unescape(page.text)
    else:
        assert 'id="reach-warning"' not in page.text

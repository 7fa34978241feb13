"""Onboarding a brand: the platform admin creates the tenant and invites its first admin, the admin
joins through the link and links the Official Account, Mini Program and WeCom, and checks each
connection against the WeChat simulator. Secrets never leave the encrypted columns."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import asyncpg
import pytest

from siyu.core.crypto import sha256_hex
from siyu.tenants import services as svc
from siyu.tenants.tables import AuditLog, ChannelAccount, Invitation, Staff, Tenant
from tests.conftest import MP, OA, PASSWORD, WECOM, Client, Simulator, TenantFixture, signed_in

CREDS = {"oa": OA, "mp": MP, "wecom": WECOM}
SECRET_FIELD = {"oa": "app_secret", "mp": "app_secret", "wecom": "secret"}
INVITE_LINK = re.compile(r"https://siyu\.test/invite/([A-Za-z0-9_-]+)")
API_KEY = re.compile(r"siyu_[0-9a-f]{12}_[A-Za-z0-9_-]+")



def is_full_page(r: Any) -> bool:
    return r.text.lstrip().lower().startswith("<!doctype html>")


async def counts() -> tuple[int, int]:
    return await Tenant.count(), await Invitation.count()


NEW_BRAND = {"name": "Maison Lumière", "slug": "maison", "timezone": "Europe/Paris", "locale": "en",
             "admin_email": "Boss@Maison.test"}


# --- the platform admin creates a tenant ----------------------------------------------------------

async def test_platform_admin_creates_tenant_with_first_admin_invitation(root: Client) -> None:
    r = await root.form("/platform/tenants", NEW_BRAND)
    assert r.status_code == 200, r.text
    assert is_full_page(r)
    assert '<html lang="en">' in r.text
    assert "Tenant Maison Lumière created." in r.text
    token = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]

    tenant = await Tenant.objects().where(Tenant.slug == "maison").first()
    assert tenant is not None
    assert (tenant.name, tenant.timezone, tenant.locale, tenant.status) == (
        "Maison Lumière", "Europe/Paris", "en", "active")
    inv = await Invitation.select().where(Invitation.tenant == tenant.id).first()
    assert inv["email"] == "boss@maison.test"
    assert inv["role"] == "tenant_admin"
    assert inv["token_hash"] == sha256_hex(token)  # only the hash is stored
    assert token not in str(inv)
    actions = await AuditLog.select(AuditLog.action, AuditLog.actor_label).where(AuditLog.tenant == tenant.id)
    assert {(a["action"], a["actor_label"]) for a in actions} == {
        ("tenant.created", "root@siyu.test"), ("invitation.created", "root@siyu.test")}

    listing = await root.get("/platform/tenants")
    assert "Maison Lumière" in listing.text
    assert "admin not joined" in listing.text


async def test_tenant_creation_over_htmx_answers_the_form_fragment(root: Client) -> None:
    r = await root.form("/platform/tenants", NEW_BRAND, htmx=True)
    assert r.status_code == 200
    assert not is_full_page(r)
    assert r.text.lstrip().startswith('<form id="create-tenant"')
    assert "Tenant Maison Lumière created." in r.text
    assert INVITE_LINK.search(r.text)
    assert await counts() == (1, 1)


@pytest.mark.parametrize("htmx", [False, True])
async def test_invalid_tenant_form_names_every_wrong_field_and_saves_nothing(root: Client, htmx: bool) -> None:
    audit_before = await AuditLog.count()
    r = await root.form("/platform/tenants", {"name": "  ", "slug": "Bad Slug!", "timezone": "Mars/Olympus",
                                              "locale": "fr", "admin_email": "not-an-email"}, htmx=htmx)
    assert r.status_code == 400
    assert is_full_page(r) is not htmx
    assert "This field is required." in r.text  # name
    assert "Use 1–40 lower-case letters, digits and hyphens" in r.text
    assert "Unknown time zone" in r.text
    assert "Choose zh_CN or en." in r.text
    assert "Enter a valid email address." in r.text
    assert r.text.count("has-error") == 5
    assert 'value="Bad Slug!"' in r.text  # what was typed is kept
    assert await counts() == (0, 0)
    assert await AuditLog.count() == audit_before


async def test_reserved_and_duplicate_slugs_are_refused(root: Client, acme: TenantFixture) -> None:
    before = await counts()
    r = await root.form("/platform/tenants", {**NEW_BRAND, "slug": "acme"}, htmx=True)
    assert r.status_code == 400
    assert "A tenant with this slug already exists." in r.text
    r = await root.form("/platform/tenants", {**NEW_BRAND, "slug": "admin"}, htmx=True)
    assert r.status_code == 400
    assert "This name is reserved." in r.text
    assert await counts() == before


async def test_first_admin_email_already_in_use_is_named_and_no_tenant_is_left_behind(
        root: Client, acme: TenantFixture) -> None:
    r = await root.form("/platform/tenants", {**NEW_BRAND, "admin_email": acme.agent_email}, htmx=True)
    assert r.status_code == 400
    assert "Someone already signs in with this email." in r.text
    assert await counts() == (1, 0)  # only acme: the half-made tenant was rolled back


async def test_tenant_pages_are_for_platform_admins_only(acme_admin: Client, acme: TenantFixture) -> None:
    assert (await acme_admin.get("/platform/tenants")).status_code == 403
    r = await acme_admin.form(f"/platform/tenants/{acme.id}/status", {"status": "suspended", "confirm": acme.slug})
    assert r.status_code == 403
    assert (await Tenant.select(Tenant.status).first())["status"] == "active"
    r = await acme_admin.form("/platform/tenants", NEW_BRAND)
    assert r.status_code == 403
    assert await Tenant.count() == 1


# --- the invitation link --------------------------------------------------------------------------

async def test_invitation_link_sets_a_password_and_the_admin_can_sign_in(root: Client, client: Client) -> None:
    r = await root.form("/platform/tenants", NEW_BRAND, htmx=True)
    token = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]

    page = await client.get(f"/invite/{token}")
    assert page.status_code == 200
    assert "Join Maison Lumière on Siyu" in page.text
    assert "boss@maison.test" in page.text

    bad = await client.form(f"/invite/{token}", {"name": "", "password": "short", "confirm_password": "short"})
    assert bad.status_code == 400
    assert "This field is required." in bad.text and "Use at least 10 characters." in bad.text
    bad = await client.form(f"/invite/{token}", {"name": "Béatrice", "password": "a long password",
                                                "confirm_password": "another password"})
    assert bad.status_code == 400
    assert "The two passwords differ." in bad.text
    assert await Staff.count() == 1  # only root

    ok = await client.form(f"/invite/{token}", {"name": "Béatrice", "password": "a long password",
                                               "confirm_password": "a long password"})
    assert ok.status_code == 302
    assert ok.headers["location"] == "/login?joined=1"
    staff = await Staff.objects().where(Staff.email == "boss@maison.test").first()
    assert staff is not None and staff.role == "tenant_admin" and staff.name == "Béatrice"
    assert staff.password_hash.startswith("$argon2id$")

    login = await client.login("boss@maison.test", "a long password")
    assert login.status_code == 302
    assert login.headers["location"] == "/settings/channels"
    channels = await client.get("/settings/channels")
    assert channels.status_code == 200
    assert "https://siyu.test/wechat/maison/oa" in channels.text
    assert "admin not joined" not in (await root.get("/platform/tenants")).text


async def test_used_revoked_expired_and_unknown_invitation_links_answer_404(
        root: Client, acme_admin: Client, client_factory: Any) -> None:
    r = await root.form("/platform/tenants", NEW_BRAND, htmx=True)
    used = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]
    joiner = client_factory()
    form = {"name": "Boss", "password": "a long password", "confirm_password": "a long password"}
    assert (await joiner.form(f"/invite/{used}", form)).status_code == 302
    assert (await joiner.get(f"/invite/{used}")).status_code == 404
    again = await client_factory().form(f"/invite/{used}", {**form, "password": "other password!",
                                                            "confirm_password": "other password!"})
    assert again.status_code == 404
    assert len(await Staff.select().where(Staff.email == "boss@maison.test")) == 1

    r = await acme_admin.form("/settings/staff/invite", {"email": "gone@acme.test", "role": "agent"}, htmx=True)
    revoked = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]
    inv_id = (await Invitation.select(Invitation.id).where(Invitation.email == "gone@acme.test").first())["id"]
    assert (await acme_admin.form(f"/settings/invitations/{inv_id}/revoke", htmx=True)).status_code == 200
    assert (await client_factory().get(f"/invite/{revoked}")).status_code == 404
    assert (await client_factory().form(f"/invite/{revoked}", form)).status_code == 404

    r = await acme_admin.form("/settings/staff/invite", {"email": "late@acme.test", "role": "agent"}, htmx=True)
    expired = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]
    await Invitation.raw("UPDATE invitation SET expires_at = now() - interval '1 minute' "
                         "WHERE email = 'late@acme.test'")
    assert (await client_factory().get(f"/invite/{expired}")).status_code == 404

    assert (await client_factory().get("/invite/not-a-real-token")).status_code == 404
    assert not await Staff.exists().where(Staff.email.is_in(["gone@acme.test", "late@acme.test"]))


# --- suspending a tenant --------------------------------------------------------------------------

async def test_suspending_a_tenant_signs_out_its_staff_and_stops_its_api_keys(
        root: Client, acme_admin: Client, acme_agent: Client, globex_admin: Client, client_factory: Any,
        acme: TenantFixture) -> None:
    r = await acme_admin.form("/settings/api-keys", {"name": "Mini Program backend"}, htmx=True)
    key = API_KEY.search(r.text).group(0)  # type: ignore[union-attr]
    api = client_factory()
    auth = {"Authorization": f"Bearer {key}"}
    assert (await api.get("/api/v1/tenant", headers=auth)).json()["slug"] == "acme"
    r = await acme_admin.form("/settings/staff/invite", {"email": "new@acme.test", "role": "agent"}, htmx=True)
    pending = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]

    r = await root.form(f"/platform/tenants/{acme.id}/status", {"status": "suspended", "confirm": acme.slug})
    assert r.status_code == 302
    assert r.headers["location"] == f"/platform/tenants/{acme.id}"
    assert "Reactivate tenant" in (await root.get(f"/platform/tenants/{acme.id}")).text

    assert (await acme_admin.get("/settings/channels")).status_code == 302
    assert (await acme_agent.get("/workspace")).status_code == 302
    refused = await client_factory().login(acme.admin_email, PASSWORD)
    assert refused.status_code == 403
    assert "workspace is suspended" in refused.text
    assert "siyu_session" not in refused.cookies
    # A wrong password still learns nothing about the tenant.
    assert (await client_factory().login(acme.admin_email, "not the password")).status_code == 401
    assert (await api.get("/api/v1/tenant", headers=auth)).status_code == 401
    assert (await client_factory().get(f"/invite/{pending}")).status_code == 404
    assert (await globex_admin.get("/settings/channels")).status_code == 200  # other tenants carry on
    audit = await AuditLog.select().where((AuditLog.tenant == acme.id) & (AuditLog.action == "tenant.suspended"))
    assert len(audit) == 1 and audit[0]["actor_label"] == "root@siyu.test"

    bad = await root.form(f"/platform/tenants/{acme.id}/status", {"status": "deleted"})
    assert bad.status_code == 400
    assert (await Tenant.select(Tenant.status).where(Tenant.id == acme.id).first())["status"] == "suspended"

    assert (await root.form(f"/platform/tenants/{acme.id}/status", {"status": "active"})).status_code == 302
    assert (await api.get("/api/v1/tenant", headers=auth)).status_code == 200
    await signed_in(client_factory, acme.admin_email)


async def test_suspending_asks_for_the_slug_first(root: Client, acme_admin: Client, acme: TenantFixture) -> None:
    """One click on the tenant's page used to suspend a whole brand; now the button opens a page that says
    what happens and takes effect only once the tenant's slug is typed."""
    detail = (await root.get(f"/platform/tenants/{acme.id}")).text
    assert f'href="/platform/tenants/{acme.id}/suspend"' in detail
    assert 'name="status" value="suspended"' not in detail  # no one-click suspension
    confirm = await root.get(f"/platform/tenants/{acme.id}/suspend")
    assert confirm.status_code == 200
    assert "Suspend Acme?" in confirm.text and "its API keys stop working" in confirm.text
    assert f"Type the slug {acme.slug} to confirm" in confirm.text
    assert (await Tenant.select(Tenant.status).first())["status"] == "active"  # looking changes nothing

    for typed in (None, "", "ACME ", "globex"):
        data = {"status": "suspended", **({"confirm": typed} if typed is not None else {})}
        r = await root.form(f"/platform/tenants/{acme.id}/status", data)
        assert r.status_code == 400, typed
        assert f"Type the slug {acme.slug} to confirm." in r.text and 'id="msg-confirm"' in r.text
        assert (await Tenant.select(Tenant.status).first())["status"] == "active"
        assert (await acme_admin.get("/settings/general")).status_code == 200  # its people still work
    assert not await AuditLog.exists().where(AuditLog.action == "tenant.suspended")

    r = await root.form(f"/platform/tenants/{acme.id}/status", {"status": "suspended", "confirm": " acme "})
    assert r.status_code == 302
    assert (await Tenant.select(Tenant.status).first())["status"] == "suspended"
    # Reactivating needs no ceremony; the suspended tenant's page says so instead of asking again.
    assert "already suspended" in (await root.get(f"/platform/tenants/{acme.id}/suspend")).text
    assert (await root.form(f"/platform/tenants/{acme.id}/status", {"status": "active"})).status_code == 302
    assert (await Tenant.select(Tenant.status).first())["status"] == "active"


# --- linking accounts -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["oa", "mp", "wecom"])
async def test_channels_page_shows_the_exact_callback_url_and_suggestions_that_stay_until_saved(
        acme_admin: Client, acme: TenantFixture, kind: str) -> None:
    token_re = re.compile(r'id="f-token" name="token" type="text" value="([A-Za-z0-9]{32})"')
    key_re = re.compile(r'id="f-aes_key" name="aes_key" type="text" value="([A-Za-z0-9]{43})"')
    r = await acme_admin.get(f"/settings/channels?step={kind}")
    assert r.status_code == 200
    assert is_full_page(r)
    assert f"<code>https://siyu.test/wechat/acme/{kind}</code>" in r.text
    token, key = token_re.search(r.text), key_re.search(r.text)
    assert token and key, "a Token and an EncodingAESKey are suggested in the form"
    # Saving comes first: nothing to paste into the console yet but the URL.
    assert "Save step 1 first" in r.text
    assert f"<code>{token.group(1)}</code>" not in r.text and f"<code>{key.group(1)}</code>" not in r.text
    fragment = await acme_admin.hx_get(f"/settings/channels?step={kind}")
    assert fragment.text.lstrip().startswith('<div id="channels-steps">')
    assert f"https://siyu.test/wechat/acme/{kind}" in fragment.text
    # The same suggestions on every reload, and for every admin of the brand, until saved.
    for again in (fragment, await acme_admin.get(f"/settings/channels?step={kind}")):
        assert token_re.search(again.text).group(1) == token.group(1)  # type: ignore[union-attr]
        assert key_re.search(again.text).group(1) == key.group(1)  # type: ignore[union-attr]
    data = {"oa": OA, "mp": MP, "wecom": WECOM}[kind]
    saved = await acme_admin.form(f"/settings/channels/{kind}",
                                  {**data, "token": token.group(1), "aes_key": key.group(1)}, htmx=True)
    assert saved.status_code == 200, saved.text
    creds = await svc.channel_credentials(acme.id, kind)
    assert (creds.token, creds.aes_key) == (token.group(1), key.group(1))
    # Saved: the values go to the console card (to paste now); the form keeps the saved ones unless changed.
    assert f"<code>{token.group(1)}</code>" in saved.text and f"<code>{key.group(1)}</code>" in saved.text
    assert not token_re.search(saved.text) and not key_re.search(saved.text)
    # Unlinked, the next account of this kind gets new suggestions.
    await acme_admin.form(f"/settings/channels/{kind}/unlink", htmx=True)
    fresh = await acme_admin.get(f"/settings/channels?step={kind}")
    assert token_re.search(fresh.text).group(1) != token.group(1)  # type: ignore[union-attr]
    assert key_re.search(fresh.text).group(1) != key.group(1)  # type: ignore[union-attr]


async def test_linking_the_official_account_full_page(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.form("/settings/channels/oa", OA)
    assert r.status_code == 200, r.text
    assert is_full_page(r)
    assert "https://siyu.test/wechat/acme/oa" in r.text
    assert "<code>AcmeToken123</code>" in r.text
    assert "Save changes" in r.text and "Check connection" in r.text
    assert "••••••••4567" in r.text  # the masked AppSecret, nothing more
    row = await ChannelAccount.objects().where(ChannelAccount.tenant == acme.id).first()
    assert (row.kind, row.app_id, row.oa_kind, row.message_mode) == ("oa", OA["app_id"], "service", "safe")
    assert "AcmeToken123" not in row.token_encrypted  # sealed at rest
    assert row.last_check_ok is None
    creds = await svc.channel_credentials(acme.id, "oa")
    assert (creds.secret, creds.aes_key, creds.token) == (OA["app_secret"], OA["aes_key"], "AcmeToken123")


async def test_linking_mini_program_and_wecom_over_htmx(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.form("/settings/channels/mp", MP, htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="channels-steps">')
    assert "Saved. Now paste the URL, Token and EncodingAESKey into the WeChat console" in r.headers["HX-Trigger"]
    assert "https://siyu.test/wechat/acme/mp" in r.text and "<code>AcmeMpToken1</code>" in r.text
    r = await acme_admin.form("/settings/channels/wecom", WECOM, htmx=True)
    assert r.status_code == 200
    assert "https://siyu.test/wechat/acme/wecom" in r.text and "<code>AcmeWecomToken</code>" in r.text

    mp = await svc.channel_credentials(acme.id, "mp")
    assert (mp.app_id, mp.push_format, mp.secret) == (MP["app_id"], "json", MP["app_secret"])
    wecom = await svc.channel_credentials(acme.id, "wecom")
    assert (wecom.app_id, wecom.agent_id, wecom.secret, wecom.aes_key, wecom.message_mode) == (
        WECOM["corp_id"], "1000002", WECOM["secret"], WECOM["aes_key"], "safe")
    assert (await svc.get_channel(acme.id, "wecom")).kf_enabled is True
    actions = await AuditLog.select(AuditLog.action).where(AuditLog.action.like("channel.%"))
    assert sorted(a["action"] for a in actions) == ["channel.mp.linked", "channel.wecom.linked"]


@pytest.mark.parametrize("htmx", [False, True])
async def test_invalid_official_account_form_names_each_field_and_saves_nothing(
        acme_admin: Client, htmx: bool) -> None:
    audit_before = await AuditLog.count()
    r = await acme_admin.form("/settings/channels/oa", {
        "app_id": "wx0123456789ABCDEF", "app_secret": "", "token": "no spaces allowed",
        "aes_key": "x" * 42, "mode": "shouting", "original_id": "gh_nothex"}, htmx=htmx)
    assert r.status_code == 400
    assert is_full_page(r) is not htmx
    assert "An AppID is “wx” followed by 16 hexadecimal characters (0–9, a–f)." in r.text
    assert "This field is required." in r.text  # AppSecret
    assert "The Token is 3–32 letters and digits." in r.text
    assert "The EncodingAESKey is exactly 43 letters and digits (A–Z, a–z, 0–9); this one has 42." in r.text
    assert "Choose one of: safe, compatible, plain." in r.text
    assert "The original ID is “gh_” followed by 12 hexadecimal characters." in r.text
    assert r.text.count("has-error") == 6
    assert 'value="wx0123456789ABCDEF"' in r.text  # the AppID is kept for correcting
    assert await ChannelAccount.count() == 0
    assert await AuditLog.count() == audit_before


async def test_invalid_wecom_and_mini_program_forms_explain_corpid_agentid_and_aes_key(acme_admin: Client) -> None:
    r = await acme_admin.form("/settings/channels/wecom", {
        **WECOM, "corp_id": "wx00112233445566a", "agent_id": "app-2", "aes_key": "+" * 43}, htmx=True)
    assert r.status_code == 400
    assert "A CorpID is “ww” (older corps: “wx”) followed by 16 hexadecimal characters (0–9, a–f)." in r.text
    assert "The AgentID is a number, such as 1000002." in r.text
    assert "exactly 43 letters and digits (A–Z, a–z, 0–9); this one has 43." in r.text
    assert WECOM["secret"] not in r.text  # a typed secret is never sent back
    r = await acme_admin.form("/settings/channels/mp", {"app_id": "", "token": MP["token"]}, htmx=True)
    assert r.status_code == 400
    assert r.text.count("This field is required.") == 3  # AppID, AppSecret, EncodingAESKey
    assert await ChannelAccount.count() == 0


async def test_unknown_account_kind_answers_404(acme_admin: Client) -> None:
    assert (await acme_admin.form("/settings/channels/weibo", OA)).status_code == 404
    assert (await acme_admin.form("/settings/channels/weibo/validate?field=app_id", {"app_id": "x"})).status_code == 404
    assert (await acme_admin.form("/settings/channels/oa/check")).status_code == 404  # not linked yet
    assert (await acme_admin.form("/settings/channels/oa/unlink")).status_code == 404
    assert await ChannelAccount.count() == 0


async def test_live_validation_answers_the_message_or_a_check_mark(acme_admin: Client) -> None:
    async def check(kind: str, field: str, value: str) -> Any:
        r = await acme_admin.form(f"/settings/channels/{kind}/validate?field={field}", {field: value}, htmx=True)
        assert r.status_code == 200
        assert r.text.startswith('<small class="field-msg') and f'id="msg-{field}"' in r.text
        return r.text

    wrong = await check("oa", "app_id", "wx12")
    assert "An AppID is “wx” followed by 16 hexadecimal characters" in wrong and 'class="field-msg error"' in wrong
    right = await check("oa", "app_id", OA["app_id"])
    assert "✔" in right and 'class="field-msg ok"' in right
    assert "✔" not in await check("oa", "app_id", "")
    assert "this one has 10." in await check("mp", "aes_key", "a" * 10)
    assert "✔" in await check("mp", "aes_key", MP["aes_key"])
    assert "A CorpID is “ww”" in await check("wecom", "corp_id", "ww0123")
    assert "✔" in await check("wecom", "corp_id", WECOM["corp_id"])
    assert "This field is required." in await check("wecom", "secret", "")

    unknown = await acme_admin.form("/settings/channels/oa/validate?field=password", {"password": "x"}, htmx=True)
    assert unknown.status_code == 400


async def test_live_validation_accepts_blank_secrets_once_the_account_is_linked(acme_admin: Client) -> None:
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    r = await acme_admin.form("/settings/channels/oa/validate?field=app_secret", {"app_secret": ""}, htmx=True)
    assert r.status_code == 200
    assert "required" not in r.text and "✔" not in r.text
    r = await acme_admin.form("/settings/channels/oa/validate?field=app_id", {"app_id": ""}, htmx=True)
    assert "This field is required." in r.text  # the AppID is still needed


async def test_replacing_an_account_with_blank_secret_fields_keeps_the_stored_secrets(
        acme_admin: Client, acme: TenantFixture, sim: Simulator) -> None:
    sim.register("wechat", OA["app_id"], OA["app_secret"])
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    await acme_admin.form("/settings/channels/oa/check", htmx=True)

    r = await acme_admin.form("/settings/channels/oa", {**OA, "app_secret": "", "aes_key": "", "token": "NewToken456",
                                                        "mode": "compatible"}, htmx=True)
    assert r.status_code == 200, r.text
    assert "<code>NewToken456</code>" in r.text
    creds = await svc.channel_credentials(acme.id, "oa")
    assert (creds.secret, creds.aes_key, creds.token, creds.message_mode) == (
        OA["app_secret"], OA["aes_key"], "NewToken456", "compatible")
    assert (await svc.get_channel(acme.id, "oa")).last_check_ok is True  # same credentials: still connected
    updated = await AuditLog.select(AuditLog.changes).where(AuditLog.action == "channel.oa.updated").output(
        load_json=True).first()
    assert updated["changes"]["secrets_changed"] == []

    # A new AppID (with blank secrets) is a different account: the last check no longer applies.
    await acme_admin.form("/settings/channels/oa", {**OA, "app_id": "wx1111111111111111", "app_secret": "",
                                                    "aes_key": ""}, htmx=True)
    view = await svc.get_channel(acme.id, "oa")
    assert (view.app_id, view.last_check_ok, view.last_check_code) == ("wx1111111111111111", None, None)
    assert (await svc.channel_credentials(acme.id, "oa")).secret == OA["app_secret"]

    # A new secret replaces the stored one.
    await acme_admin.form("/settings/channels/oa", {**OA, "app_secret": "brandNewSecret_0000000000000009"}, htmx=True)
    assert (await svc.channel_credentials(acme.id, "oa")).secret == "brandNewSecret_0000000000000009"
    assert await ChannelAccount.count() == 1


async def test_unlinking_removes_the_account(acme_admin: Client, acme: TenantFixture) -> None:
    await acme_admin.form("/settings/channels/mp", MP, htmx=True)
    r = await acme_admin.form("/settings/channels/mp/unlink", htmx=True)
    assert r.status_code == 200
    assert "Account unlinked." in r.headers["HX-Trigger"]
    assert 'action="/settings/channels/mp/check"' not in r.text
    assert await ChannelAccount.count() == 0
    assert await AuditLog.exists().where((AuditLog.action == "channel.mp.unlinked") & (AuditLog.tenant == acme.id))
    assert (await acme_admin.form("/settings/channels/mp/unlink", htmx=True)).status_code == 404


async def test_another_tenant_cannot_see_or_touch_acme_accounts(acme_admin: Client, globex_admin: Client,
                                                                acme: TenantFixture) -> None:
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    page = await globex_admin.get("/settings/channels?step=oa")
    assert f'value="{OA["app_id"]}"' not in page.text
    assert "https://siyu.test/wechat/globex/oa" in page.text
    assert (await globex_admin.form("/settings/channels/oa/unlink")).status_code == 404
    assert (await globex_admin.form("/settings/channels/oa/check")).status_code == 404
    rows = await ChannelAccount.select(ChannelAccount.tenant)
    assert [r["tenant"] for r in rows] == [acme.id]


# --- checking the connection against the simulator ------------------------------------------------

async def check(client: Client, kind: str) -> Any:
    r = await client.form(f"/settings/channels/{kind}/check", htmx=True)
    assert r.status_code == 200, r.text
    assert 'id="check-outcome"' in r.text
    return r


async def recorded(tenant_id: int, kind: str) -> tuple[bool | None, int | None]:
    view = await svc.get_channel(tenant_id, kind)
    assert view.last_check_at is not None
    return view.last_check_ok, view.last_check_code


@pytest.mark.parametrize("kind", ["oa", "mp", "wecom"])
async def test_check_connection_succeeds_with_the_right_credentials(
        acme_admin: Client, acme: TenantFixture, sim: Simulator, kind: str) -> None:
    creds = CREDS[kind]
    sim.register("wecom" if kind == "wecom" else "wechat", creds.get("corp_id") or creds["app_id"],
                 creds[SECRET_FIELD[kind]])
    await acme_admin.form(f"/settings/channels/{kind}", creds, htmx=True)
    r = await check(acme_admin, kind)
    assert "Connected: WeChat issued an access token." in r.text
    assert "alert-ok" in r.text
    assert await recorded(acme.id, kind) == (True, 0)
    page = await acme_admin.get(f"/settings/channels?step={kind}")
    assert "✔ connected" in page.text
    checked = await AuditLog.select(AuditLog.changes).where(AuditLog.action == f"channel.{kind}.checked").output(
        load_json=True).first()
    assert checked["changes"] == {"ok": True, "errcode": 0}


async def test_wrong_app_secret_is_explained(acme_admin: Client, acme: TenantFixture, sim: Simulator) -> None:
    sim.register("wechat", OA["app_id"], "theRealSecret_00000000000000000")
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    r = await check(acme_admin, "oa")
    assert "The AppSecret is wrong." in r.text
    assert "WeChat error code 40125" in r.text
    assert "alert-error" in r.text
    assert await recorded(acme.id, "oa") == (False, 40125)
    assert "✖ check failed" in (await acme_admin.get("/settings/channels?step=oa")).text


async def test_server_ip_not_whitelisted_is_explained(acme_admin: Client, acme: TenantFixture,
                                                      sim: Simulator) -> None:
    sim.register("wechat", OA["app_id"], OA["app_secret"], ip_whitelisted=False)
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    r = await check(acme_admin, "oa")
    assert "IP whitelist" in r.text
    assert "WeChat error code 40164" in r.text
    assert await recorded(acme.id, "oa") == (False, 40164)


async def test_wrong_wecom_secret_is_explained(acme_admin: Client, acme: TenantFixture, sim: Simulator) -> None:
    sim.register("wecom", WECOM["corp_id"], "someOtherSecret_000000000000000")
    await acme_admin.form("/settings/channels/wecom", WECOM, htmx=True)
    r = await check(acme_admin, "wecom")
    assert "The AppSecret is wrong." in r.text
    assert "WeChat error code 40001" in r.text
    assert await recorded(acme.id, "wecom") == (False, 40001)


async def test_unknown_app_id_is_explained(acme_admin: Client, acme: TenantFixture) -> None:
    await acme_admin.form("/settings/channels/mp", MP, htmx=True)  # never registered with the simulator
    r = await check(acme_admin, "mp")
    assert "The AppID or CorpID is not valid." in r.text
    assert await recorded(acme.id, "mp") == (False, 40013)


async def test_wechat_busy_is_explained_and_the_next_check_succeeds(acme_admin: Client, acme: TenantFixture,
                                                                    sim: Simulator) -> None:
    sim.register("wechat", MP["app_id"], MP["app_secret"])
    sim.faults(MP["app_id"], -1)
    await acme_admin.form("/settings/channels/mp", MP, htmx=True)
    r = await check(acme_admin, "mp")
    assert "WeChat is busy." in r.text
    assert "Check again in a few seconds." in r.text
    assert await recorded(acme.id, "mp") == (False, -1)
    r = await check(acme_admin, "mp")
    assert "Connected" in r.text
    assert await recorded(acme.id, "mp") == (True, 0)


async def test_unreachable_wechat_api_is_explained(acme_admin: Client, acme: TenantFixture,
                                                   monkeypatch: Any) -> None:
    from siyu.core import settings

    await acme_admin.form("/settings/channels/oa", OA, htmx=True)
    monkeypatch.setenv("WECHAT_API_BASE", "http://127.0.0.1:1")
    settings.reset_settings()
    try:
        r = await check(acme_admin, "oa")
    finally:
        monkeypatch.undo()
        settings.reset_settings()
    assert "could not reach" in r.text
    assert "alert-error" in r.text
    assert await recorded(acme.id, "oa") == (False, None)


# --- secrets at rest, on pages, in logs and in the audit log --------------------------------------

SECRETS = [OA["app_secret"], OA["aes_key"], MP["app_secret"], MP["aes_key"], WECOM["secret"], WECOM["aes_key"]]


async def dump_database() -> str:
    """Every row of every table in the public schema, as JSON text."""
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        tables = await conn.fetch("SELECT table_name FROM information_schema.tables "
                                  "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        out = []
        for t in tables:
            name = t["table_name"].replace('"', '""')
            out += [r[0] for r in await conn.fetch(f'SELECT row_to_json(t)::text FROM "{name}" t')]
        return "\n".join(out)
    finally:
        await conn.close()


async def dump_redis(redis: Any) -> str:
    out = []
    async for key in redis.scan_iter():
        out.append(str(key))
        if await redis.type(key) in (b"string", "string"):
            out.append(str(await redis.get(key)))
    return "\n".join(out)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret ({secret[:4]}…) appears in {where}"


async def test_secrets_are_stored_encrypted_and_never_shown_logged_or_audited(
        acme_admin: Client, acme: TenantFixture, root: Client, sim: Simulator, redis: Any,
        caplog: pytest.LogCaptureFixture, client_factory: Any) -> None:
    sim.register("wechat", OA["app_id"], OA["app_secret"])
    sim.register("wechat", MP["app_id"], "aDifferentSecret_00000000000000")
    sim.register("wecom", WECOM["corp_id"], WECOM["secret"])
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="siyu")

    for kind in ("oa", "mp", "wecom"):
        page = await acme_admin.get(f"/settings/channels?step={kind}")
        assert_no_secret(page.text, f"the {kind} page before linking")
        r = await acme_admin.form(f"/settings/channels/{kind}", CREDS[kind], htmx=kind != "oa")
        assert r.status_code == 200
        # The answer to saving shows the EncodingAESKey just typed (to paste into the console now); nothing else.
        assert_no_secret(r.text.replace(CREDS[kind]["aes_key"], ""), f"the answer to linking {kind}")
        # A failed save does not echo the secrets either.
        bad = await acme_admin.form(f"/settings/channels/{kind}", {**CREDS[kind], "token": "!"}, htmx=True)
        assert bad.status_code == 400
        assert_no_secret(bad.text, f"the 400 answer for {kind}")
        checked = await acme_admin.form(f"/settings/channels/{kind}/check", htmx=True)
        assert_no_secret(checked.text, f"the {kind} check result")
        page = await acme_admin.get(f"/settings/channels?step={kind}")
        assert "••••••••" + CREDS[kind][SECRET_FIELD[kind]][-4:] in page.text
        assert_no_secret(page.text, f"the {kind} page after linking")

    # Replacing with blank secrets logs nothing secret either.
    await acme_admin.form("/settings/channels/oa", {**OA, "app_secret": "", "aes_key": ""}, htmx=True)
    logged = "\n".join([caplog.text] + [repr(rec.args) for rec in caplog.records])
    assert_no_secret(logged, "the logs")

    assert await ChannelAccount.count() == 3
    dump = await dump_database()
    assert OA["app_id"] in dump and WECOM["corp_id"] in dump and '"secret_encrypted":"v1:' in dump
    assert_no_secret(dump, "the database")
    assert_no_secret(await dump_redis(redis), "Redis")

    audit = await AuditLog.select().where(AuditLog.action.like("channel.%")).output(load_json=True)
    assert {a["action"] for a in audit} >= {"channel.oa.linked", "channel.mp.linked", "channel.wecom.linked",
                                            "channel.oa.updated", "channel.oa.checked"}
    assert_no_secret(repr(audit), "the audit log")
    assert_no_secret((await acme_admin.get("/settings/audit")).text, "the audit page")
    assert_no_secret((await root.get(f"/platform/tenants/{acme.id}")).text, "the platform tenant page")

    r = await acme_admin.form("/settings/api-keys", {"name": "backend"}, htmx=True)
    key = API_KEY.search(r.text).group(0)  # type: ignore[union-attr]
    api = await client_factory().get("/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 200
    assert set(api.json()["channels"]) == {"oa", "mp", "wecom"}
    assert_no_secret(api.text, "the JSON API")

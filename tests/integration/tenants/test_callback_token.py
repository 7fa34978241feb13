"""The callback Token is a secret (it lets anyone forge plain-mode callbacks): sealed at rest and bound to
its row, never returned by the JSON API, shown in clear only to the tenant's admins on the channels page,
re-sealed by `siyu secrets rotate`, and sealed by the migration for the tokens stored in clear before."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from siyu.core import db
from siyu.core.crypto import SecretBox, box
from siyu.core.errors import ConfigurationError
from siyu.tenants import services as svc
from siyu.wechat import services as wechat_services
from tests.conftest import OA, PASSWORD, WECOM, Client, TenantFixture
from tests.wechat_payloads import Sender, text

NEW_SECRET_KEY = "rotated-secret-key-" + "z" * 40


async def _link(tenant: TenantFixture, kind: str = "oa", data: dict[str, str] = OA) -> None:
    await svc.do_link_channel(svc.Actor.cli(), tenant.id, kind, data)


async def _sealed_token(tenant_id: int, kind: str = "oa") -> str:
    row = await db.fetchrow("SELECT token_encrypted FROM channel_account WHERE tenant = $1 AND kind = $2",
                            tenant_id, kind)
    return str(row["token_encrypted"])


async def test_the_token_is_sealed_at_rest_and_bound_to_its_row(acme: TenantFixture, globex: TenantFixture) -> None:
    await _link(acme)
    await _link(globex)
    columns = {r["column_name"] for r in await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'channel_account'")}
    assert "callback_token" not in columns  # no clear copy anywhere
    everything = " ".join(str(v) for r in await db.fetch("SELECT * FROM channel_account") for v in dict(r).values())
    assert OA["token"] not in everything

    sealed = await _sealed_token(acme.id)
    assert box().open(sealed, f"channel_account:{acme.id}:oa:token") == OA["token"]
    # Bound to tenant, kind and column: a copy in another row or column does not open.
    for context in (f"channel_account:{globex.id}:oa:token", f"channel_account:{acme.id}:mp:token",
                    f"channel_account:{acme.id}:oa:secret"):
        with pytest.raises(ConfigurationError):
            box().open(sealed, context)
    await db.execute("UPDATE channel_account SET token_encrypted = $1 WHERE tenant = $2", sealed, globex.id)
    with pytest.raises(ConfigurationError):
        await svc.channel_credentials(globex.id, "oa")


async def test_the_api_says_only_whether_a_token_is_set(client: Client, acme: TenantFixture) -> None:
    await _link(acme)
    await _link(acme, "wecom", WECOM)
    _, key = await svc.do_create_api_key(svc.Actor.cli(), acme.id, "backend")
    headers = {"Authorization": f"Bearer {key}"}
    whole = await client.get("/api/v1/tenant", headers=headers)
    one = await client.get("/api/v1/channels/oa", headers=headers)
    for r in (whole, one):
        assert r.status_code == 200, r.text
        assert OA["token"] not in r.text and WECOM["token"] not in r.text
        assert "callback_token" not in r.text
    assert whole.json()["channels"]["oa"]["token_set"] is True
    assert whole.json()["channels"]["wecom"]["token_set"] is True
    assert one.json()["token_set"] is True


async def test_the_token_is_shown_only_to_a_tenant_admin_who_enters_their_password(
        acme: TenantFixture, acme_admin: Client, acme_agent: Client, root: Client) -> None:
    await _link(acme)
    page = await acme_admin.get("/settings/channels/?step=oa")
    assert page.status_code == 200
    assert OA["token"] not in page.text and OA["aes_key"] not in page.text  # masked until the password
    assert 'action="/settings/channels/oa/reveal"' in page.text
    shown = await acme_admin.form("/settings/channels/oa/reveal", {"password": PASSWORD})
    assert shown.status_code == 200
    assert f"<code>{OA['token']}</code>" in shown.text  # to paste into the WeChat console

    assert (await acme_agent.get("/settings/channels/?step=oa")).status_code == 403
    assert (await acme_agent.form("/settings/channels/oa/reveal", {"password": PASSWORD})).status_code == 403
    for url in ("/workspace", "/inbox", "/contacts"):
        r = await acme_agent.get(url)
        assert OA["token"] not in r.text, url
    detail = await root.get(f"/platform/tenants/{acme.id}")
    assert detail.status_code == 200
    assert OA["app_id"] in detail.text and OA["token"] not in detail.text


async def test_a_changed_token_takes_effect_at_once_and_is_audited_without_its_value(
        client: Client, acme: TenantFixture, acme_admin: Client) -> None:
    await _link(acme, "oa", {**OA, "mode": "plain"})
    old = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")
    cb = old.callback(text("oUser", "before", 1))
    assert (await client.post(cb.url, content=cb.body)).text == "success"

    r = await acme_admin.form("/settings/channels/oa", {**OA, "mode": "plain", "app_secret": "", "aes_key": "",
                                                        "token": "FreshToken789"}, htmx=True)
    assert r.status_code == 200, r.text
    forged = old.callback(text("oUser", "with the old token", 2))
    assert (await client.post(forged.url, content=forged.body)).status_code != 200
    new = Sender("acme", "oa", OA["app_id"], "FreshToken789", OA["aes_key"], "plain")
    cb = new.callback(text("oUser", "after", 3))
    assert (await client.post(cb.url, content=cb.body)).text == "success"
    audit = await db.fetch("SELECT changes::text AS c FROM audit_log WHERE action = 'channel.oa.updated'")
    assert len(audit) == 1 and '"token_changed": true' in audit[0]["c"]
    assert "FreshToken789" not in audit[0]["c"] and OA["token"] not in audit[0]["c"]
    page = await acme_admin.get("/settings/audit")
    assert "Callback Token replaced" in page.text and "FreshToken789" not in page.text


def _siyu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siyu", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_secrets_rotate_reseals_the_tokens(subprocess_env: dict[str, str], client: Client,
                                                 acme: TenantFixture) -> None:
    await _link(acme, "oa", {**OA, "mode": "plain"})
    old_key = subprocess_env["SIYU_SECRET_KEY"]
    before = await _sealed_token(acme.id)
    env = {**subprocess_env, "SIYU_SECRET_KEY": NEW_SECRET_KEY, "SIYU_PREVIOUS_SECRET_KEYS": old_key}
    result = _siyu(env, "secrets", "rotate")
    assert result.returncode == 0, result.stderr
    after = await _sealed_token(acme.id)
    assert after != before
    context = f"channel_account:{acme.id}:oa:token"
    assert SecretBox(NEW_SECRET_KEY).open(after, context) == OA["token"]
    with pytest.raises(ConfigurationError):
        SecretBox(old_key).open(after, context)


# --- the migration --------------------------------------------------------------------------------------

BEFORE_SEALING = "2026-12-05T09:00:00:000000"  # the column exists, the tokens are still in clear


def _server_url() -> str:
    prefix, _, query = os.environ["DATABASE_URL"].partition("?")
    return prefix.rsplit("/", 1)[0] + "/postgres" + (f"?{query}" if query else "")


def _database_url(name: str) -> str:
    prefix, _, query = os.environ["DATABASE_URL"].partition("?")
    return prefix.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


@pytest.fixture
async def scratch_database() -> Any:
    """An empty database on the suite's server, dropped afterwards."""
    name = f"siyu_migration_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(_server_url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield _database_url(name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_the_migration_seals_tokens_stored_in_clear(scratch_database: str,
                                                          subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "DATABASE_URL": scratch_database}
    upto = subprocess.run([sys.executable, "-c",
                           "import asyncio, siyu\n"
                           "from piccolo.apps.migrations.commands.forwards import run_forwards\n"
                           f"r = asyncio.run(run_forwards(app_name='tenants', migration_id={BEFORE_SEALING!r}))\n"
                           "assert r.success, r.message"], env=env, capture_output=True, text=True, timeout=120)
    assert upto.returncode == 0, upto.stderr
    conn = await asyncpg.connect(scratch_database)
    try:
        tenant = await conn.fetchval("INSERT INTO tenant (slug, name, timezone, locale, status, open_platform_bound, "
                                     "created_at) VALUES ('old', 'Old', 'Asia/Shanghai', 'zh_CN', 'active', false, "
                                     "now()) RETURNING id")
        b = box()
        await conn.execute(
            "INSERT INTO channel_account (tenant, kind, app_id, message_mode, push_format, kf_enabled, callback_token, "
            "secret_encrypted, aes_key_encrypted, created_at, updated_at) VALUES ($1, 'oa', $2, 'plain', 'xml', false, "
            "$3, $4, $5, now(), now())", tenant, OA["app_id"], "OldClearToken1",
            b.seal(OA["app_secret"], f"channel_account:{tenant}:oa:secret"),
            b.seal(OA["aes_key"], f"channel_account:{tenant}:oa:aes_key"))
    finally:
        await conn.close()

    done = _siyu(env, "migrate")
    assert done.returncode == 0, done.stderr
    conn = await asyncpg.connect(scratch_database)
    try:
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'channel_account'")}
        sealed = await conn.fetchval("SELECT token_encrypted FROM channel_account WHERE tenant = $1", tenant)
    finally:
        await conn.close()
    assert "callback_token" not in columns
    assert "OldClearToken1" not in sealed
    assert box().open(sealed, f"channel_account:{tenant}:oa:token") == "OldClearToken1"


async def test_the_gateway_checks_signatures_with_the_opened_token(client: Client, acme: TenantFixture) -> None:
    await _link(acme, "oa", {**OA, "mode": "plain"})
    account = await wechat_services.callback_account("acme", "oa", fresh=True)
    assert account is not None and account.token == OA["token"]
    forged = Sender("acme", "oa", OA["app_id"], "NotTheToken1", OA["aes_key"], "plain").callback(text("oX", "x", 1))
    assert (await client.post(forged.url, content=forged.body)).status_code != 200

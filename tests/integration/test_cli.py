"""The `siyu` command, run for real as a subprocess against the test database and Redis."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from siyu.core.crypto import SecretBox
from siyu.core.errors import ConfigurationError
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from siyu.tenants.tables import ApiKey, AuditLog, ChannelAccount, Staff, Tenant
from tests.conftest import MP, OA, WECOM, Client

NEW_SECRET_KEY = "rotated-secret-key-" + "y" * 40


def siyu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siyu", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], option: str) -> str:
    """The command failed and its message names the option to fix."""
    assert result.returncode != 0, result.stdout
    assert option in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
async def acme_slug() -> str:
    await svc.do_create_tenant(svc.Actor.cli(), {"slug": "acme", "name": "Acme"})
    return "acme"


# --- tenants ---------------------------------------------------------------------------------------------

async def test_tenant_create(subprocess_env: dict[str, str]) -> None:
    out = ok(siyu(subprocess_env, "tenant", "create", "acme", "--name", "Acme Ltd", "--locale", "en"))
    t = await Tenant.objects().where(Tenant.slug == "acme").first()
    assert t is not None
    assert f"created tenant acme (id {t.id})" in out
    assert (t.name, t.locale, t.timezone, t.status) == ("Acme Ltd", "en", "Asia/Shanghai", "active")
    assert await AuditLog.exists().where((AuditLog.tenant == t.id) & (AuditLog.action == "tenant.created"))


@pytest.mark.parametrize("slug", ["Bad Slug", "acme-", "admin", "a" * 41])
async def test_tenant_create_with_an_invalid_slug_names_slug(subprocess_env: dict[str, str], slug: str) -> None:
    refused(siyu(subprocess_env, "tenant", "create", slug, "--name", "X"), "SLUG")
    assert await Tenant.count() == 0


async def test_tenant_create_duplicate_slug_names_slug(subprocess_env: dict[str, str], acme_slug: str) -> None:
    err = refused(siyu(subprocess_env, "tenant", "create", acme_slug, "--name", "Again"), "SLUG")
    assert "already exists" in err
    assert await Tenant.count() == 1
    assert (await Tenant.select(Tenant.name).first())["name"] == "Acme"


async def test_tenant_create_with_a_bad_time_zone_names_timezone(subprocess_env: dict[str, str]) -> None:
    refused(siyu(subprocess_env, "tenant", "create", "acme", "--name", "A", "--timezone", "Mars/Olympus"),
            "--timezone")
    assert await Tenant.count() == 0


async def test_tenant_list(subprocess_env: dict[str, str], acme_slug: str) -> None:
    assert "no tenants" not in ok(siyu(subprocess_env, "tenant", "list"))
    await svc.do_create_tenant(svc.Actor.cli(), {"slug": "globex", "name": "Globex Corp"})
    t = await svc.get_tenant_by_slug("acme")
    await svc.do_link_channel(svc.Actor.cli(), t.id, "oa", OA)
    lines = ok(siyu(subprocess_env, "tenant", "list")).splitlines()
    assert lines[0].split() == ["SLUG", "STATUS", "LINKED", "NAME"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["acme"] == ["acme", "active", "oa", "Acme"]
    assert rows["globex"] == ["globex", "active", "-", "Globex", "Corp"]


async def test_tenant_list_when_empty(subprocess_env: dict[str, str]) -> None:
    assert ok(siyu(subprocess_env, "tenant", "list")).strip() == "no tenants"


# --- linking WeChat accounts -------------------------------------------------------------------------------

OA_ARGS = ["--app-id", OA["app_id"], "--app-secret", OA["app_secret"], "--token", OA["token"],
           "--aes-key", OA["aes_key"]]
MP_ARGS = ["--app-id", MP["app_id"], "--app-secret", MP["app_secret"], "--token", MP["token"],
           "--aes-key", MP["aes_key"], "--format", "json"]
WECOM_ARGS = ["--corp-id", WECOM["corp_id"], "--agent-id", WECOM["agent_id"], "--secret", WECOM["secret"],
              "--token", WECOM["token"], "--aes-key", WECOM["aes_key"], "--kf"]


async def test_link_oa_with_a_bad_app_id_names_it_and_saves_nothing(subprocess_env: dict[str, str],
                                                                     acme_slug: str) -> None:
    args = [a if a != OA["app_id"] else "wxNOTHEX0000000000" for a in OA_ARGS]
    refused(siyu(subprocess_env, "tenant", "link-oa", acme_slug, *args), "--app-id")
    assert await ChannelAccount.count() == 0
    assert not await AuditLog.exists().where(AuditLog.action.like("channel.%"))


async def test_link_with_several_bad_fields_names_each(subprocess_env: dict[str, str], acme_slug: str) -> None:
    err = refused(siyu(subprocess_env, "tenant", "link-wecom", acme_slug, "--corp-id", "wz0123456789abcdef",
                       "--agent-id", "abc", "--secret", "s", "--token", "t", "--aes-key", "short"), "--corp-id")
    for option in ("--agent-id", "--secret", "--token", "--aes-key"):
        assert option in err
    assert await ChannelAccount.count() == 0


async def test_link_to_an_unknown_tenant_fails(subprocess_env: dict[str, str]) -> None:
    err = refused(siyu(subprocess_env, "tenant", "link-oa", "nobody", *OA_ARGS), "not found")
    assert "slug" in err
    assert await ChannelAccount.count() == 0


@pytest.mark.parametrize(("command", "kind", "args", "app_id", "token"), [
    ("link-oa", "oa", OA_ARGS, OA["app_id"], OA["token"]),
    ("link-mp", "mp", MP_ARGS, MP["app_id"], MP["token"]),
    ("link-wecom", "wecom", WECOM_ARGS, WECOM["corp_id"], WECOM["token"]),
])
async def test_link_prints_the_callback_url_and_token(subprocess_env: dict[str, str], acme_slug: str, command: str,
                                                      kind: str, args: list[str], app_id: str, token: str) -> None:
    out = ok(siyu(subprocess_env, "tenant", command, acme_slug, *args))
    assert f"callback URL: https://siyu.test/wechat/acme/{kind}" in out
    assert f"token:        {token}" in out
    assert app_id in out
    for secret in (OA["app_secret"], MP["app_secret"], WECOM["secret"], OA["aes_key"], WECOM["aes_key"]):
        assert secret not in out
    t = await svc.get_tenant_by_slug(acme_slug)
    creds = await svc.channel_credentials(t.id, kind)  # decrypts with this process's key
    assert (creds.app_id, creds.token) == (app_id, token)
    if kind == "wecom":
        assert creds.secret == WECOM["secret"]
        assert (await svc.get_channel(t.id, kind)).kf_enabled is True
    if kind == "mp":
        assert creds.push_format == "json"


# --- users and API keys -----------------------------------------------------------------------------------

async def test_user_create_with_a_password(subprocess_env: dict[str, str], acme_slug: str) -> None:
    out = ok(siyu(subprocess_env, "user", "create", "--tenant", acme_slug, "--email", "Ann@Acme.test",
                  "--role", "agent", "--password", "a long enough password", "--name", "Ann"))
    row = await Staff.select(Staff.id, Staff.role, Staff.name).where(Staff.email == "ann@acme.test").first()
    assert row is not None
    assert f"created agent ann@acme.test (id {row['id']})" in out
    assert "password:" not in out
    assert (row["role"], row["name"]) == ("agent", "Ann")
    assert await staff_svc.authenticate("ann@acme.test", "a long enough password") is not None


async def test_user_create_without_a_password_prints_a_generated_one(subprocess_env: dict[str, str],
                                                                     acme_slug: str) -> None:
    out = ok(siyu(subprocess_env, "user", "create", "--tenant", acme_slug, "--email", "boss@acme.test",
                  "--role", "tenant_admin"))
    passwords = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("password:")]
    assert len(passwords) == 1 and len(passwords[0]) >= 10
    user = await staff_svc.authenticate("boss@acme.test", passwords[0])
    assert user is not None and user.role == "tenant_admin" and user.tenant_slug == "acme"


async def test_platform_admin_needs_no_tenant(subprocess_env: dict[str, str]) -> None:
    ok(siyu(subprocess_env, "user", "create", "--email", "root@siyu.test", "--role", "platform_admin",
            "--password", "a long enough password"))
    row = await Staff.select(Staff.tenant, Staff.role).where(Staff.email == "root@siyu.test").first()
    assert row == {"tenant": None, "role": "platform_admin"}


@pytest.mark.parametrize(("args", "option"), [
    (["--email", "not-an-email"], "--email"),
    (["--email", "someone@acme.test", "--password", "short"], "--password"),
    (["--email", "dup@acme.test"], "--email"),
])
async def test_user_create_refuses_bad_input_naming_the_field(subprocess_env: dict[str, str], acme_slug: str,
                                                              args: list[str], option: str) -> None:
    t = await svc.get_tenant_by_slug(acme_slug)
    await staff_svc.do_create_staff(svc.Actor.cli(), t.id, "dup@acme.test", "agent", "a long enough password")
    refused(siyu(subprocess_env, "user", "create", "--tenant", acme_slug, "--role", "agent", *args), option)
    assert await Staff.count() == 1


async def test_agent_without_tenant_is_refused(subprocess_env: dict[str, str]) -> None:
    refused(siyu(subprocess_env, "user", "create", "--email", "a@acme.test", "--role", "agent"), "--tenant")
    assert await Staff.count() == 0


async def test_apikey_create_prints_a_working_key(subprocess_env: dict[str, str], acme_slug: str,
                                                  client: Client) -> None:
    out = ok(siyu(subprocess_env, "apikey", "create", acme_slug, "--name", "Mini Program backend"))
    key = out.strip()
    assert key.startswith("siyu_") and "\n" not in key
    row = await ApiKey.select(ApiKey.name, ApiKey.key_hash).first()
    assert row["name"] == "Mini Program backend"
    assert key not in row["key_hash"]  # only a hash is kept
    r = await client.get("/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert r.json()["slug"] == "acme"


# --- secrets rotation --------------------------------------------------------------------------------------

def _opens(b: SecretBox, sealed: str, context: str) -> str | None:
    try:
        return b.open(sealed, context)
    except ConfigurationError:
        return None


async def _sealed_values() -> list[tuple[str, str, str]]:
    """(sealed, context, expected plaintext) for every secret stored in channel_account."""
    plain = {"oa": (OA["app_secret"], OA["aes_key"]), "mp": (MP["app_secret"], MP["aes_key"]),
             "wecom": (WECOM["secret"], WECOM["aes_key"])}
    out = []
    for row in await ChannelAccount.select():
        secret, aes_key = plain[row["kind"]]
        out.append((row["secret_encrypted"], f"channel_account:{row['tenant']}:{row['kind']}:secret", secret))
        out.append((row["aes_key_encrypted"], f"channel_account:{row['tenant']}:{row['kind']}:aes_key", aes_key))
    return out


async def test_secrets_rotate_reseals_every_secret_under_the_new_key(subprocess_env: dict[str, str],
                                                                      acme_slug: str) -> None:
    old_key = subprocess_env["SIYU_SECRET_KEY"]
    acme = await svc.get_tenant_by_slug(acme_slug)
    globex = await svc.do_create_tenant(svc.Actor.cli(), {"slug": "globex", "name": "Globex"})
    for tid, kind, data in [(acme.id, "oa", OA), (acme.id, "mp", MP), (acme.id, "wecom", WECOM),
                            (globex.id, "oa", OA)]:
        await svc.do_link_channel(svc.Actor.cli(), tid, kind, data)
    new_box, old_box = SecretBox(NEW_SECRET_KEY), SecretBox(old_key)
    before = await _sealed_values()
    assert len(before) == 8
    for sealed, context, plaintext in before:
        assert _opens(old_box, sealed, context) == plaintext
        assert _opens(new_box, sealed, context) is None

    env = {**subprocess_env, "SIYU_SECRET_KEY": NEW_SECRET_KEY, "SIYU_PREVIOUS_SECRET_KEYS": old_key}
    out = ok(siyu(env, "secrets", "rotate"))
    assert "re-encrypted 4 account(s); 0 already under the current key" in out

    after = await _sealed_values()
    assert len(after) == 8
    for sealed, context, plaintext in after:
        assert _opens(new_box, sealed, context) == plaintext
        assert _opens(old_box, sealed, context) is None
        assert not new_box.needs_rotation(sealed)
    assert await AuditLog.exists().where(AuditLog.action == "secrets.rotated")

    # Running it again finds nothing left to do.
    again = ok(siyu(env, "secrets", "rotate"))
    assert "re-encrypted 0 account(s); 4 already under the current key" in again
    assert [s for s, _, _ in await _sealed_values()] == [s for s, _, _ in after]


async def test_secrets_rotate_without_the_old_key_fails_and_changes_nothing(subprocess_env: dict[str, str],
                                                                            acme_slug: str) -> None:
    acme = await svc.get_tenant_by_slug(acme_slug)
    await svc.do_link_channel(svc.Actor.cli(), acme.id, "oa", OA)
    before = await ChannelAccount.select(ChannelAccount.secret_encrypted, ChannelAccount.aes_key_encrypted)
    env: dict[str, Any] = {**subprocess_env, "SIYU_SECRET_KEY": NEW_SECRET_KEY}
    env.pop("SIYU_PREVIOUS_SECRET_KEYS", None)
    result = siyu(env, "secrets", "rotate")
    assert result.returncode != 0
    assert "SIYU_PREVIOUS_SECRET_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
    assert await ChannelAccount.select(ChannelAccount.secret_encrypted, ChannelAccount.aes_key_encrypted) == before

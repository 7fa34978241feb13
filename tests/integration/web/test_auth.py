"""Sign-in, sessions, throttling, CSRF, password change."""

from __future__ import annotations

from typing import Any

from siyu.tenants.tables import AuditLog, Staff
from tests.conftest import PASSWORD, Client, TenantFixture


async def test_login_creates_session_and_lands_on_role_home(client: Client, acme: TenantFixture) -> None:
    r = await client.login(acme.admin_email, PASSWORD)
    assert r.status_code == 302
    assert r.headers["location"] == "/settings/channels"
    assert "siyu_session" in client.cookies
    page = await client.get("/settings/channels")
    assert page.status_code == 200
    assert "Acme" in page.text


async def test_wrong_password_creates_no_session(client: Client, acme: TenantFixture, redis: Any) -> None:
    r = await client.login(acme.admin_email, "not the password")
    assert r.status_code == 401
    assert "siyu_session" not in client.cookies
    assert await redis.keys("siyu:session:*") == []
    assert (await client.get("/settings/channels")).status_code == 302


async def test_login_is_throttled_per_account(client_factory: Any, acme: TenantFixture) -> None:
    c = client_factory()
    for _ in range(5):
        assert (await c.login(acme.admin_email, "wrong password!")).status_code == 401
    # Even the right password waits now, and it says why.
    r = await c.login(acme.admin_email, PASSWORD)
    assert r.status_code == 429
    assert "Retry-After" in r.headers
    assert "siyu_session" not in c.cookies
    # Another account from the same IP is not locked out by this account's failures.
    other = await c.login(acme.agent_email, PASSWORD)
    assert other.status_code == 302


async def test_login_is_throttled_per_ip(client_factory: Any, acme: TenantFixture, monkeypatch: Any) -> None:
    from siyu.core import settings

    monkeypatch.setenv("SIYU_LOGIN_MAX_FAILURES_IP", "3")
    settings.reset_settings()
    try:
        c = client_factory()
        for i in range(3):
            await c.login(f"nobody{i}@acme.test", "wrong password!")
        r = await c.login(acme.admin_email, PASSWORD)
        assert r.status_code == 429
    finally:
        monkeypatch.undo()
        settings.reset_settings()


async def test_logout_ends_the_session(acme_admin: Client) -> None:
    r = await acme_admin.form("/logout")
    assert r.status_code == 302
    assert (await acme_admin.get("/settings/channels")).status_code == 302


async def test_anonymous_is_sent_to_login(client: Client) -> None:
    r = await client.get("/settings/staff")
    assert r.status_code == 302
    assert r.headers["location"] == "/login?next=/settings/staff"
    hx = await client.hx_get("/settings/staff")
    assert hx.headers["HX-Redirect"] == "/login?next=/settings/staff"


async def test_unsafe_request_without_csrf_token_is_refused_and_changes_nothing(acme_admin: Client,
                                                                                acme: TenantFixture) -> None:
    before = await AuditLog.count()
    r = await acme_admin.post("/settings/teams", data={"name": "Sneaky"})
    assert r.status_code == 403
    assert "CSRF" in r.text
    r = await acme_admin.post("/settings/teams", data={"name": "Sneaky"}, headers={"x-csrftoken": "forged"})
    assert r.status_code == 403
    assert await AuditLog.count() == before
    ok = await acme_admin.form("/settings/teams", {"name": "Real"})
    assert ok.status_code == 200


async def test_password_change_signs_out_other_sessions(client_factory: Any, acme: TenantFixture) -> None:
    from tests.conftest import signed_in

    first = await signed_in(client_factory, acme.agent_email)
    second = await signed_in(client_factory, acme.agent_email)
    bad = await first.form("/account/password", {"current_password": "nope", "new_password": "short",
                                                 "confirm_password": "short"}, htmx=True)
    assert bad.status_code == 400
    assert "current password" in bad.text and "10 characters" in bad.text
    r = await first.form("/account/password", {"current_password": PASSWORD, "new_password": "a brand new secret",
                                               "confirm_password": "a brand new secret"}, htmx=True)
    assert r.status_code == 200
    assert (await first.get("/workspace")).status_code == 200
    assert (await second.get("/workspace")).status_code == 302
    fresh = client_factory()
    assert (await fresh.login(acme.agent_email, "a brand new secret")).status_code == 302
    row = await Staff.select(Staff.password_hash).where(Staff.email == acme.agent_email).first()
    assert row["password_hash"].startswith("$argon2id$")


async def test_open_redirect_after_login_is_refused(client: Client, acme: TenantFixture) -> None:
    await client.prime()
    r = await client.post("/login", data={"email": acme.admin_email, "password": PASSWORD,
                                          "next": "//evil.example/x", "_csrf_token": client.csrf})
    assert r.headers["location"] == "/settings/channels"

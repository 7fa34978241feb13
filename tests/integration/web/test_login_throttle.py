"""Sign-in throttling: every attempt is counted atomically before its password is checked, lock-outs are
decided per (account, client) so the real person still signs in from a client that has not been failing,
a client spraying many accounts is stopped, and an account attacked from many clients is slowed, never
locked for its owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, Client, TenantFixture


@pytest.fixture
async def from_ip(app: Any) -> AsyncIterator[Any]:
    """A client of the app seen from the given address (client_factory's all share one)."""
    made: list[Client] = []

    def make(ip: str) -> Client:
        c = Client(transport=httpx.ASGITransport(app=app, client=(ip, 50000)), base_url="https://siyu.test",
                   follow_redirects=False, headers={"Accept-Language": "en"})
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check that actually ran (the real argon2 verification, counted)."""
    from siyu.tenants import staff as staff_svc

    checked: list[str] = []
    real = staff_svc.verify_password

    async def counting(password_hash: str, password: str) -> bool:
        checked.append(password)
        return await real(password_hash, password)

    monkeypatch.setattr(staff_svc, "verify_password", counting)
    return checked


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from siyu.core import settings

    def apply(**env: str) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings.reset_settings()

    yield apply
    monkeypatch.undo()
    settings.reset_settings()


async def test_parallel_wrong_passwords_are_checked_only_up_to_the_limit(
        from_ip: Any, acme: TenantFixture, password_checks: list[str]) -> None:
    attacker = from_ip("203.0.113.7")
    await attacker.prime()
    answers = await asyncio.gather(*[attacker.login(acme.admin_email, f"guess number {i}") for i in range(200)])
    statuses = [r.status_code for r in answers]
    assert len(password_checks) == 5, f"{len(password_checks)} passwords were checked against a limit of 5"
    assert statuses.count(401) == 5 and statuses.count(429) == 195
    assert all("Retry-After" in r.headers for r in answers if r.status_code == 429)

    # The real person, from their own client, signs in at once.
    person = from_ip("198.51.100.20")
    r = await person.login(acme.admin_email, PASSWORD)
    assert r.status_code == 302, r.text
    # The attacking client stays locked out of this account, even with the right password.
    assert (await attacker.login(acme.admin_email, PASSWORD)).status_code == 429


async def test_a_known_browser_signs_in_even_from_the_attacked_address(
        from_ip: Any, acme: TenantFixture, password_checks: list[str]) -> None:
    """Behind one office NAT, the person and the attacker share an address: the browser the person signed in
    with before carries a device cookie bound to the account, and its attempts are counted on their own."""
    browser = from_ip("192.0.2.50")
    assert (await browser.login(acme.admin_email, PASSWORD)).status_code == 302
    assert browser.cookies.get("siyu_device")
    await browser.form("/logout")

    attacker = from_ip("192.0.2.50")
    for i in range(8):
        await attacker.login(acme.admin_email, f"wrong {i}")
    assert (await attacker.login(acme.admin_email, PASSWORD)).status_code == 429
    # A device cookie is bound to its account: copying the person's cookie for another account changes nothing.
    attacker.cookies.set("siyu_device", browser.cookies["siyu_device"], domain="siyu.test")
    assert (await attacker.login(acme.agent_email, "wrong again")).status_code == 401
    forged = from_ip("192.0.2.50")
    forged.cookies.set("siyu_device", "made-up.0123456789abcdef", domain="siyu.test")
    assert (await forged.login(acme.admin_email, PASSWORD)).status_code == 429
    forged.cookies.set("siyu_device", "made-up.%E4%BD%A0%E5%A5%BD", domain="siyu.test")  # not ASCII: no crash
    assert (await forged.login(acme.admin_email, PASSWORD)).status_code == 429

    assert (await browser.login(acme.admin_email, PASSWORD)).status_code == 302


async def test_one_client_spraying_many_accounts_is_stopped(
        from_ip: Any, acme: TenantFixture, settings_env: Any, password_checks: list[str]) -> None:
    settings_env(SIYU_LOGIN_MAX_FAILURES_IP="10")
    sprayer = from_ip("203.0.113.99")
    await sprayer.prime()
    answers = await asyncio.gather(*[sprayer.login(f"person{i}@acme.test", "Summer2026!") for i in range(60)])
    assert [r.status_code for r in answers].count(401) == 10
    assert len(password_checks) == 10
    # Real accounts too, from that client; other clients are not affected.
    assert (await sprayer.login(acme.agent_email, PASSWORD)).status_code == 429
    assert (await from_ip("198.51.100.3").login(acme.agent_email, PASSWORD)).status_code == 302


async def test_an_account_attacked_from_many_clients_is_slowed_not_locked(
        from_ip: Any, acme: TenantFixture, settings_env: Any, password_checks: list[str]) -> None:
    settings_env(SIYU_LOGIN_SLOW_AFTER_ACCOUNT="20", SIYU_LOGIN_SLOW_INTERVAL_SECONDS="2")
    known = from_ip("198.51.100.77")
    assert (await known.login(acme.admin_email, PASSWORD)).status_code == 302
    password_checks.clear()

    # A botnet: 20 failures from 20 addresses, then every address tries at once.
    for i in range(20):
        assert (await from_ip(f"10.0.{i}.1").login(acme.admin_email, f"wrong {i}")).status_code == 401
    bots = [from_ip(f"10.1.{i}.1") for i in range(40)]
    answers = await asyncio.gather(*[b.login(acme.admin_email, f"again {i}") for i, b in enumerate(bots)])
    assert [r.status_code for r in answers].count(401) == 1  # one attempt per interval on this account
    assert len(password_checks) == 21
    slowed = next(r for r in answers if r.status_code == 429)
    assert slowed.headers["Retry-After"] in ("1", "2")  # within the 2 s interval, whole seconds

    # The person's own browser is not slowed; a new client of theirs waits at most the interval.
    assert (await known.login(acme.admin_email, PASSWORD)).status_code == 302
    newcomer = from_ip("198.51.100.78")
    await asyncio.sleep(2.1)
    assert (await newcomer.login(acme.admin_email, PASSWORD)).status_code == 302


async def test_a_success_clears_the_clients_failures(from_ip: Any, acme: TenantFixture) -> None:
    person = from_ip("198.51.100.9")
    for _ in range(4):
        assert (await person.login(acme.agent_email, "typo typo")).status_code == 401
    assert (await person.login(acme.agent_email, PASSWORD)).status_code == 302
    await person.form("/logout")
    person.cookies.delete("siyu_device")
    for _ in range(4):
        assert (await person.login(acme.agent_email, "typo again")).status_code == 401
    assert (await person.login(acme.agent_email, PASSWORD)).status_code == 302

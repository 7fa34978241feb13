"""The JSON API (Bearer keys), OpenAPI, health probes and error pages."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from redis.asyncio import Redis

from siyu.tenants import services as svc
from siyu.tenants.tables import ApiKey
from tests.conftest import OA, WECOM, Client, TenantFixture


async def new_key(tenant_id: int, name: str = "backend") -> tuple[int, str]:
    return await svc.do_create_api_key(svc.Actor.cli(), tenant_id, name)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_401_json(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("www-authenticate") == "Bearer"
    body = r.json()
    assert body["status"] == 401
    assert "Bearer" in body["error"]


# --- the JSON API -----------------------------------------------------------------------------------------

async def test_valid_key_gets_its_tenant_with_masked_channels(client: Client, acme: TenantFixture) -> None:
    await svc.do_link_channel(svc.Actor.cli(), acme.id, "oa", OA)
    await svc.do_link_channel(svc.Actor.cli(), acme.id, "wecom", WECOM)
    key_id, key = await new_key(acme.id)

    r = await client.get("/api/v1/tenant", headers=bearer(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["slug"], body["name"], body["status"]) == (acme.id, "acme", "Acme", "active")
    assert set(body["channels"]) == {"oa", "wecom"}
    oa = body["channels"]["oa"]
    assert oa["app_id"] == OA["app_id"]
    assert oa["secret_masked"].endswith(OA["app_secret"][-4:])
    assert body["channels"]["wecom"]["app_id"] == WECOM["corp_id"]
    for secret in (OA["app_secret"], OA["aes_key"], WECOM["secret"], WECOM["aes_key"]):
        assert secret not in r.text
    assert "encrypted" not in r.text  # no ciphertext columns either
    one = await client.get("/api/v1/channels/oa", headers=bearer(key))
    assert one.status_code == 200
    assert one.json() == oa
    assert OA["app_secret"] not in one.text
    # Using the key is recorded.
    assert await ApiKey.select(ApiKey.last_used_at).where(ApiKey.id == key_id).first() != {"last_used_at": None}


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Bearer garbage",
    "Bearer siyu_000000000000_notakey",
    "bearer siyu_",
], ids=["none", "empty", "scheme-only", "scheme-space", "basic", "garbage", "unknown-prefix", "bare-prefix"])
async def test_missing_or_garbage_key_gets_401_json(client: Client, acme: TenantFixture, header: str | None) -> None:
    await new_key(acme.id)  # a real key exists; none of these headers is it
    headers = {} if header is None else {"Authorization": header}
    for url in ("/api/v1/tenant", "/api/v1/channels/oa"):
        assert_401_json(await client.get(url, headers=headers))


async def test_key_with_a_real_prefix_but_wrong_secret_gets_401(client: Client, acme: TenantFixture) -> None:
    _, key = await new_key(acme.id)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_401_json(await client.get("/api/v1/tenant", headers=bearer(forged)))
    assert (await client.get("/api/v1/tenant", headers=bearer(key))).status_code == 200


async def test_revoked_key_gets_401(client: Client, acme: TenantFixture) -> None:
    key_id, key = await new_key(acme.id)
    assert (await client.get("/api/v1/tenant", headers=bearer(key))).status_code == 200
    await svc.do_revoke_api_key(svc.Actor.cli(), acme.id, key_id)
    assert_401_json(await client.get("/api/v1/tenant", headers=bearer(key)))


async def test_key_revoked_on_the_settings_page_stops_working(client: Client, acme_admin: Client,
                                                              acme: TenantFixture) -> None:
    key_id, key = await new_key(acme.id)
    r = await acme_admin.form(f"/settings/api-keys/{key_id}/revoke", htmx=True)
    assert r.status_code == 200
    assert_401_json(await client.get("/api/v1/tenant", headers=bearer(key)))


async def test_key_of_a_suspended_tenant_gets_401(client: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    _, acme_key = await new_key(acme.id)
    _, globex_key = await new_key(globex.id)
    await svc.do_set_tenant_status(svc.Actor.cli(), acme.id, "suspended")
    assert_401_json(await client.get("/api/v1/tenant", headers=bearer(acme_key)))
    assert (await client.get("/api/v1/tenant", headers=bearer(globex_key))).status_code == 200
    await svc.do_set_tenant_status(svc.Actor.cli(), acme.id, "active")
    assert (await client.get("/api/v1/tenant", headers=bearer(acme_key))).status_code == 200


async def test_api_needs_no_csrf_token_and_ignores_session_cookies(acme_admin: Client) -> None:
    """A signed-in browser session is not an API credential."""
    assert_401_json(await acme_admin.get("/api/v1/tenant"))


async def test_openapi_lists_the_api(client: Client) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/tenant" in paths
    assert "/api/v1/channels/{kind}" in paths
    assert not [p for p in paths if p.startswith(("/settings", "/platform", "/login"))]


# --- health probes -----------------------------------------------------------------------------------------

async def test_healthz(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"status": "ok"}


async def test_readyz_when_everything_answers(client: Client) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_readyz_names_redis_when_it_is_unreachable(app: Any, client: Client) -> None:
    real = app.state.redis
    dead = Redis(host="127.0.0.1", port=_unused_port(), socket_connect_timeout=1)
    app.state.redis = dead
    try:
        r = await client.get("/readyz")
    finally:
        app.state.redis = real
        await dead.aclose()
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["redis"]
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_names_redis_even_for_a_probe_with_a_session_cookie(app: Any, acme_admin: Client) -> None:
    """The probe does not depend on the session store it checks: no 500 from the auth middleware."""
    real = app.state.redis
    dead = Redis(host="127.0.0.1", port=_unused_port(), socket_connect_timeout=1)
    app.state.redis = dead
    try:
        r = await acme_admin.get("/readyz")
    finally:
        app.state.redis = real
        await dead.aclose()
    assert r.status_code == 503, r.text
    assert r.json()["failed"] == ["redis"]


# --- error pages ----------------------------------------------------------------------------------------------

async def test_unknown_url_is_an_html_page_for_browsers(client: Client) -> None:
    r = await client.get("/no/such/page", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text and "404" in r.text


async def test_unknown_url_for_a_signed_in_user_is_an_html_page(acme_admin: Client) -> None:
    r = await acme_admin.get("/settings/no-such-page")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text


@pytest.mark.parametrize("url", ["/api/v1/nope", "/api/v2/tenant", "/api/"])
async def test_unknown_api_url_is_json(client: Client, url: str) -> None:
    r = await client.get(url, headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["status"] == 404


async def test_api_error_for_a_known_url_with_a_wrong_method_is_json(client: Client, acme: TenantFixture) -> None:
    _, key = await new_key(acme.id)
    r = await client.post("/api/v1/tenant", headers=bearer(key))
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/json")

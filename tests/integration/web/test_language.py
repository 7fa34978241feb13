"""Every page in zh-CN and en; the choice is remembered per user."""

from __future__ import annotations

from typing import Any

from siyu.tenants.tables import Staff
from tests.conftest import Client, TenantFixture, signed_in


async def test_login_page_follows_accept_language(client: Client) -> None:
    zh = await client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in zh.text and "登录私域" in zh.text
    en = await client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in en.text and "Sign in to Siyu" in en.text


async def test_language_choice_is_remembered_for_the_user(client_factory: Any, acme: TenantFixture) -> None:
    c = await signed_in(client_factory, acme.admin_email)
    r = await c.form("/language", {"locale": "en"}, headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 302
    assert (await Staff.select(Staff.locale).where(Staff.email == acme.admin_email).first())["locale"] == "en"
    # A new browser (no cookie) that prefers Chinese still gets English once this user signs in.
    other = await signed_in(client_factory, acme.admin_email)
    other.cookies.delete("siyu_locale")
    page = await other.get("/settings/channels", headers={"Accept-Language": "zh-CN"})
    assert "Link your WeChat accounts" in page.text
    await other.form("/language", {"locale": "zh_CN"})
    page = await other.get("/settings/channels")
    assert "绑定微信账号" in page.text and "公众号" in page.text


async def test_unknown_language_is_refused(acme_admin: Client) -> None:
    r = await acme_admin.form("/language", {"locale": "fr"})
    assert r.status_code == 400
    assert "locale" in r.text


async def test_field_errors_are_translated(client_factory: Any, acme: TenantFixture) -> None:
    c = await signed_in(client_factory, acme.admin_email)
    await c.form("/language", {"locale": "zh_CN"})
    r = await c.form("/settings/channels/oa", {"app_id": "wx123", "app_secret": "", "token": "t",
                                               "aes_key": "short"}, htmx=True)
    assert r.status_code == 400
    assert "AppID 以“wx”开头" in r.text
    assert "当前为 5 位" in r.text


async def test_language_switch_returns_to_the_same_page_but_never_off_site(acme_admin: Client) -> None:
    back = await acme_admin.form("/language", {"locale": "en"},
                                 headers={"Referer": "https://siyu.test/settings/staff?x=1", "Host": "siyu.test"})
    assert back.headers["location"] == "/settings/staff?x=1"
    away = await acme_admin.form("/language", {"locale": "en"}, headers={"Referer": "https://evil.example/phish"})
    assert away.headers["location"] == "/"

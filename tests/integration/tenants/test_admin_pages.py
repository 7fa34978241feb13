"""Small things of the admin pages: the API key header is shown as typed, the settings pages sit under one
menu, and the app has its icon."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir

from tests.conftest import Client

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = ["/settings/channels", "/settings/auto-replies", "/settings/inbox/", "/settings/staff",
            "/settings/api-keys", "/settings/audit", "/settings/general"]


async def test_the_api_keys_page_shows_the_header_with_its_placeholder(acme_admin: Client) -> None:
    for lang in ("en", "zh-CN"):
        page = (await acme_admin.get("/settings/api-keys", headers={"Accept-Language": lang})).text
        # Escaped, so the browser shows "<key>" instead of swallowing it as an unknown tag.
        assert '<code class="api-header">Authorization: Bearer &lt;key&gt;</code>' in page
        assert "<key>" not in page


def test_no_template_message_holds_text_the_browser_would_take_for_a_tag() -> None:
    """`_()` in a template returns markup: "<key>" in a message would vanish as an unknown element."""
    found = []
    for _name, _line, message, _comments, _ctx in extract_from_dir(
            str(ROOT / "frontend" / "templates"), [("**.html", "jinja2")],
            options_map={"**.html": {"extensions": "jinja2.ext.i18n"}}, keywords={"_": None, "ngettext": (1, 2)}):
        for m in message if isinstance(message, tuple) else (message,):
            if m and re.search(r"<[A-Za-z/]", m):
                found.append(m)
    assert found == []


async def test_settings_pages_sit_under_one_menu(acme_admin: Client, acme_agent: Client) -> None:
    for path in SETTINGS:
        page = (await acme_admin.get(path)).text
        menu = re.search(r'<details class="navmenu current">(.*?)</details>', page, re.S)
        assert menu is not None, path
        assert re.findall(r'<a href="([^"]+)"', menu.group(1)) == SETTINGS
        assert re.findall(r'<a href="([^"]+)" aria-current="page"', menu.group(1)) == [path]
        top = page[page.index('<nav class="mainnav"'):page.index("</nav>")]
        top_links = re.findall(r'<a href="([^"]+)"', top.replace(menu.group(0), ""))
        assert top_links == ["/workspace", "/inbox", "/contacts", "/segments", "/purchases",
                             "/engagement/journeys"], path
    other = (await acme_admin.get("/contacts")).text
    assert '<details class="navmenu">' in other and 'aria-current="page">' in other
    assert "navmenu" not in (await acme_agent.get("/inbox")).text  # reps have no settings
    assert 'href="/purchases"' not in (await acme_agent.get("/inbox")).text  # nor the brand's order book


async def test_pages_carry_the_favicon(client: Client, acme_admin: Client) -> None:
    for page in ((await client.get("/login")).text, (await acme_admin.get("/settings/audit")).text):
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    icon = await client.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")

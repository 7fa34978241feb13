"""Pages cannot be framed or sniffed: every answer of the app (pages, htmx fragments, redirects, errors made
by exception handlers and for unknown paths, static files, the JSON API, health checks) carries the same
security headers, and the Content-Security-Policy runs scripts and styles from Siyu only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Client, TenantFixture

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def assert_protected(r: Any, what: str) -> None:
    for name, value in EXPECTED.items():
        assert r.headers.get(name) == value, f"{what}: {name} is {r.headers.get(name)!r}"
    csp = {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else ""
           for d in (p.strip() for p in r.headers.get("content-security-policy", "").split(";")) if d}
    assert csp.get("frame-ancestors") == "'none'", f"{what}: {csp}"
    assert csp.get("script-src") == "'self'" and csp.get("style-src") == "'self'", f"{what}: {csp}"
    assert csp.get("default-src") == "'self'" and csp.get("object-src") == "'none'", f"{what}: {csp}"
    assert "unsafe" not in r.headers["content-security-policy"]


async def test_every_kind_of_answer_carries_the_headers(client: Client, acme_admin: Client, acme: TenantFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.tenants import services as svc

    _, key = await svc.do_create_api_key(svc.Actor.cli(), acme.id, "headers")
    api = {"Authorization": f"Bearer {key}"}
    answers = {
        "sign-in page": await client.get("/login"),
        "redirect to sign-in": await client.get("/inbox"),
        "page": await acme_admin.get("/settings/staff"),
        "htmx fragment": await acme_admin.hx_get("/settings/audit"),
        "htmx form error": await acme_admin.form("/settings/teams", {"name": ""}, htmx=True),
        "refused input": await acme_admin.get("/contacts?q=%00"),
        "not found (route)": await acme_admin.get("/contacts/987654"),
        "not found (no route)": await client.get("/no/such/page"),
        "method not allowed": await client.delete("/login"),
        "forbidden": await acme_admin.get("/platform/tenants"),
        "CSRF refusal": await acme_admin.post("/settings/teams", data={"name": "x"}),
        "static script": await client.get("/static/app.js"),
        "static style": await client.get("/static/app.css"),
        "static missing": await client.get("/static/nothing.js"),
        "API": await client.get("/api/v1/tenant", headers=api),
        "API without key": await client.get("/api/v1/tenant"),
        "API error": await client.get("/api/v1/contacts/abc", headers=api),
        "OpenAPI document": await client.get("/schema/openapi.json"),
        "health": await client.get("/healthz"),
        "readiness": await client.get("/readyz"),
    }
    from siyu.tenants import staff as staff_svc

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a fault")

    monkeypatch.setattr(staff_svc, "get_staff", broken)
    answers["server error"] = await acme_admin.get("/workspace")

    expected_status = {"sign-in page": 200, "redirect to sign-in": 302, "page": 200, "htmx fragment": 200,
                       "htmx form error": 400, "refused input": 400, "not found (route)": 404,
                       "not found (no route)": 404, "method not allowed": 405, "forbidden": 403, "CSRF refusal": 403,
                       "static script": 200, "static style": 200, "static missing": 404, "API": 200,
                       "API without key": 401, "API error": 400, "OpenAPI document": 200, "health": 200,
                       "readiness": 200, "server error": 500}
    for what, r in answers.items():
        assert r.status_code == expected_status[what], f"{what}: {r.status_code} {r.text[:200]}"
        assert_protected(r, what)
    assert answers["static script"].headers["content-type"].startswith("text/javascript")


async def test_the_api_viewer_is_served_from_siyus_own_files(client: Client) -> None:
    """/schema is Swagger UI from /static (fetched by `make install`): script and style are files of this origin,
    with no inline script or style; Litestar's own viewers (inline scripts from CDNs) stay absent. That it runs
    under the policy in a browser: tests/e2e/test_api_viewer_browser.py."""
    import re

    r = await client.get("/schema")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert_protected(r, "API viewer")
    html = r.text
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in sources, \
        f"the viewer is not installed here (run `make install`, which fetches it with npm): {html[:300]}"
    assert all(s.startswith("/static/") for s in sources), sources
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html and " style=" not in html
    assert 'data-openapi-url="/schema/openapi.json"' in html
    for source in sources:
        served = await client.get(source)
        assert served.status_code == 200, source
        assert_protected(served, source)
    for path in ("/schema/swagger", "/schema/redoc", "/schema/elements", "/schema/rapidoc"):
        assert (await client.get(path)).status_code == 404
    assert (await client.get("/schema/openapi.json")).json()["info"]["title"] == "Siyu API"


async def test_without_the_viewer_the_page_links_the_document_in_the_readers_language(
        client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.web import apidocs

    monkeypatch.setattr(apidocs, "VENDOR_DIR", tmp_path)  # as on a machine where npm was not available
    r = await client.get("/schema", headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 200
    assert "此服务器未安装交互式 API 参考" in r.text and '<a href="/schema/openapi.json">' in r.text
    assert "<script" not in r.text and '<html lang="zh-CN">' in r.text
    r = await client.get("/schema", headers={"Accept-Language": "en"})
    assert "The interactive API reference is not installed" in r.text


def test_no_template_runs_inline_code_or_styles(root_dir: Any) -> None:
    """What the policy would refuse in a browser, caught in the templates: inline scripts, event-handler
    attributes, javascript: URLs, htmx's hx-on / js: attributes, style attributes and <style> blocks."""
    import re

    bad = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>|\son[a-z]+\s*=|javascript:|"
                     r"hx-on|hx-vars|=[\"']js:|\sstyle\s*=|<style", re.IGNORECASE)
    found = []
    for path in sorted((root_dir / "frontend" / "templates").rglob("*.html")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line):
                found.append(f"{path.relative_to(root_dir)}:{n}: {line.strip()[:120]}")
    assert found == []

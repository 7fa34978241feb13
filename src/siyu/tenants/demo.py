"""The demo brand that `make run` seeds: a platform admin, a tenant with an admin and two agents, its
WeChat accounts linked to the built-in simulator, and the API key of its Mini Program backend (which the
simulator plays). Seeding twice changes nothing."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from siyu.core import db
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from siyu.tenants.tables import Staff, Tenant

DEMO_SLUG = "demo"
# Credentials the simulator is started with; they only work against the simulator.
DEMO_ACCOUNTS: dict[str, dict[str, str]] = {
    "oa": {"app_id": "wx5d1e0000000000a1", "app_secret": "demoOaSecret0000000000000000000a1",
           "token": "SiyuDemoOaToken2026", "aes_key": "DemoOaEncodingAesKey000000000000000000000a1",
           "mode": "safe", "oa_kind": "service", "original_id": "gh_00000000d0a1"},
    "mp": {"app_id": "wx5d1e0000000000b2", "app_secret": "demoMpSecret0000000000000000000b2",
           "token": "SiyuDemoMpToken2026", "aes_key": "DemoMpEncodingAesKey000000000000000000000b2",
           "push_format": "xml", "original_id": "gh_00000000d0b2"},
    "wecom": {"corp_id": "ww5d1e0000000000c3", "agent_id": "1000002",
              "secret": "demoWecomSecret00000000000000000000000000c3",
              "token": "SiyuDemoWecomToken2026", "aes_key": "DemoWecomEncodingAesKey000000000000000000c3",
              "kf_enabled": "1"},
}


DEMO_API_KEY_NAME = "Mini Program backend (demo simulator)"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


async def _demo_api_key(data_dir: Path, tenant_id: int, actor: svc.Actor) -> str:
    """The key the simulated Mini Program backend reports logins with (`POST /api/v1/mp/login`). Siyu keeps
    only its hash, so the key itself is kept (0600) under the data dir; a new one is made only when that
    file is gone or its key was revoked."""
    path = data_dir / "demo-api-key"
    if path.exists():
        key = path.read_text().strip()
        prefix = key.removeprefix(svc.API_KEY_PREFIX).split("_", 1)[0]
        if any(k["prefix"] == prefix and k["revoked_at"] is None for k in await svc.list_api_keys(tenant_id)):
            return key
    _, key = await svc.do_create_api_key(actor, tenant_id, DEMO_API_KEY_NAME)
    _write_private(path, key + "\n")
    return key


def _logins(data_dir: Path) -> dict[str, str]:
    """Demo passwords are generated once and kept (0600) under the data dir."""
    path = data_dir / "demo-logins.json"
    if path.exists():
        return json.loads(path.read_text())
    logins = {email: secrets.token_urlsafe(9) for email in (
        "admin@siyu.local", "admin@demo.siyu.local", "agent1@demo.siyu.local", "agent2@demo.siyu.local")}
    _write_private(path, json.dumps(logins, indent=2))
    return logins


async def seed_demo(data_dir: Path) -> dict[str, Any]:
    logins = _logins(data_dir)
    actor = svc.Actor(None, "demo-seed")
    created = False
    async with db.transaction():
        if not await Staff.exists().where(Staff.email == "admin@siyu.local"):
            await staff_svc.do_create_staff(actor, None, "admin@siyu.local", "platform_admin",
                                            logins["admin@siyu.local"], name="Platform Admin")
            created = True
        tenant = await Tenant.objects().where(Tenant.slug == DEMO_SLUG).first()
        if tenant is None:
            tenant = await svc.do_create_tenant(actor, {"slug": DEMO_SLUG, "name": "Maison Lumière (Demo)",
                                                        "open_platform_bound": "1"})
            sales = await staff_svc.do_create_team(actor, tenant.id, "Shanghai sales")
            vip = await staff_svc.do_create_team(actor, tenant.id, "VIP clients")
            people = [("admin@demo.siyu.local", "tenant_admin", "Léa Martin", []),
                      ("agent1@demo.siyu.local", "agent", "王芳 Wang Fang", [sales]),
                      ("agent2@demo.siyu.local", "agent", "李伟 Li Wei", [sales, vip])]
            for email, role, name, teams in people:
                s = await staff_svc.do_create_staff(actor, tenant.id, email, role, logins[email], name=name)
                if teams:
                    await staff_svc.set_teams(tenant.id, s.id, teams)
            for kind, data in DEMO_ACCOUNTS.items():
                await svc.do_link_channel(actor, tenant.id, kind, data)
            created = True
    api_key = await _demo_api_key(data_dir, tenant.id, actor)
    return {"created": created, "logins": logins, "tenant_slug": DEMO_SLUG, "api_key": api_key}

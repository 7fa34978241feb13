"""Finding contacts by the ids other systems know: an openid, a unionid or a WeCom external_userid."""

from __future__ import annotations

import re
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_

# WeChat ids: openids and unionids are 28 characters of [A-Za-z0-9_-]; external_userids start with "wm"/"wo".
IDENTITY_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")


def check_identity(value: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidInput.one("identity", N_("This field is required."))
    if not IDENTITY_RE.match(value):
        raise InvalidInput.one("identity", N_("An openid, unionid or external_userid: 6 to 64 letters, digits, - or _."))
    return value


async def find_by_identity(tenant_id: int, value: str) -> list[int]:
    """Live contacts holding this openid / external_userid, or this unionid (on an identity or a contact)."""
    value = check_identity(value)
    # One indexed lookup per kind of id (an OR across the joined tables would read them whole).
    rows = await db.fetch(
        "SELECT DISTINCT coalesce(c.merged_into, c.id) AS id FROM contact c WHERE c.tenant = $1 AND c.id IN ("
        "SELECT contact FROM identity WHERE tenant = $1 AND external_id = $2 UNION ALL "
        "SELECT contact FROM identity WHERE tenant = $1 AND unionid = $2 UNION ALL "
        "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2) ORDER BY 1",
        tenant_id, value)
    return [int(r["id"]) for r in rows]


def contact_json(contact: dict[str, Any], identities: list[dict[str, Any]]) -> dict[str, Any]:
    def iso(v: Any) -> str | None:
        return v.isoformat() if v is not None else None

    return {
        "id": contact["id"], "display_name": contact.get("display_name") or "", "unionid": contact.get("unionid"),
        "phone": contact.get("phone") or "", "remark": contact.get("remark") or "",
        "first_seen_at": iso(contact.get("first_seen_at")), "last_interaction_at": iso(contact.get("last_interaction_at")),
        "merged_into": contact.get("merged_into"),
        "identities": [{"channel": i["channel"], "external_id": i["external_id"], "unionid": i["unionid"],
                        "first_seen_at": iso(i["first_seen_at"]), "last_seen_at": iso(i["last_seen_at"]),
                        "erased": i["erased_at"] is not None} for i in identities],
    }

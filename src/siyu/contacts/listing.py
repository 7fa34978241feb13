"""The contact list's filters and its CSV export.

The page's filters (linked channel, tag, rep owner, last interaction, purchases, spend) are the segments'
definition filled from the query string (`ListFilters.definition`), compiled by the installed compiler (see
`siyu.contacts.audience`): one filter language for segments and the list. Erased contacts stay listed (with
their badge), as they always were. The search text is the list's own (`siyu.contacts.search`).

The export streams every contact the list would show, in the list's order, read in keyset pages while it is
sent: UTF-8 with a BOM (spreadsheets read the Chinese), cells that a spreadsheet would run as a formula
prefixed with `'`, audited before the first byte leaves.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from siyu.contacts import audience as audiences
from siyu.contacts import search as finder
from siyu.contacts.audience import Audience
from siyu.contacts.scope import EVERYONE, Scope
from siyu.core import db
from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit

CHANNELS = ("oa", "mp", "wecom")
# Last interaction: the choices of the page's menu, as (op, days) of the segments' recency filter.
SEEN = {"within:7": ("within", 7), "within:30": ("within", 30), "within:90": ("within", 90),
        "more_than:30": ("more_than", 30), "more_than:90": ("more_than", 90), "more_than:365": ("more_than", 365),
        "never": ("never", None)}
BOUGHT = ("yes", "no")
USERID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
YUAN_RE = re.compile(r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$")
MAX_TAG_ID = 2**31 - 1
EXPORT_BATCH = 500
OWNER_CHOICES = 200

# Where a definition's mistake shows on the page's form.
_FORM_FIELD = {"channels": "channel", "tags": "tag", "owner": "owner", "last_interaction": "seen",
               "orders": "bought", "spent.at_most": "spent_max", "spent": "spent_min"}


@dataclass(frozen=True)
class ListFilters:
    q: str = ""
    channel: str = ""
    tag: int | None = None
    owner: str = ""  # any | none | rep:<WeCom UserID>
    seen: str = ""  # a key of SEEN
    bought: str = ""  # yes | no
    spent_min: int | None = None  # fen
    spent_max: int | None = None

    def definition(self) -> dict[str, Any]:
        """The filters in the segments' language (erased contacts included, as the list shows them)."""
        d: dict[str, Any] = {"include_erased": True}
        if self.channel:
            d["channels"] = [self.channel]
        if self.tag is not None:
            d["tags"] = {"ids": [self.tag], "match": "any"}
        if self.owner in ("any", "none"):
            d["owner"] = {"op": self.owner}
        elif self.owner.startswith("rep:"):
            d["owner"] = {"op": "is", "userid": self.owner[4:]}
        if self.seen:
            op, days = SEEN[self.seen]
            d["last_interaction"] = {"op": op} if days is None else {"op": op, "days": days}
        if self.bought == "yes":
            d["orders"] = {"at_least": 1, "at_most": None}
        elif self.bought == "no":
            d["orders"] = {"at_least": None, "at_most": 0}
        if self.spent_min is not None or self.spent_max is not None:
            d["spent"] = {"at_least": self.spent_min, "at_most": self.spent_max}
        return d

    def filtered(self) -> bool:
        """Whether anything beyond the search text narrows the list."""
        return self.definition() != {"include_erased": True}

    def as_query(self) -> dict[str, str]:
        """The filters as the page's query string (what "load more", the export and the bulk form carry)."""
        out = {"q": self.q, "channel": self.channel, "tag": "" if self.tag is None else str(self.tag),
               "owner": self.owner, "seen": self.seen, "bought": self.bought,
               "spent_min": yuan(self.spent_min), "spent_max": yuan(self.spent_max)}
        return {k: v for k, v in out.items() if v}


def yuan(fen: int | None) -> str:
    return "" if fen is None else f"{Decimal(fen) / 100:.2f}".removesuffix(".00")


def parse_filters(query: Mapping[str, str]) -> ListFilters:
    """The list's filters from a query string (or a form); InvalidInput names every wrong one."""
    errors: list[FieldError] = []

    def choice(name: str, allowed: tuple[str, ...] | dict[str, Any]) -> str:
        raw = (query.get(name) or "").strip()
        if raw and raw not in allowed:
            errors.append(FieldError(name, N_("Choose one of: {choices}."), {"choices": ", ".join(allowed)}))
            return ""
        return raw

    def fen(name: str) -> int | None:
        raw = (query.get(name) or "").strip()
        if not raw:
            return None
        if not YUAN_RE.match(raw):
            errors.append(FieldError(name, N_("Enter an amount in yuan, like 128 or 99.90.")))
            return None
        return int(Decimal(raw) * 100)

    q = ""
    try:
        q = finder.clean_query(query.get("q"))
    except InvalidInput as exc:
        errors += exc.errors
    tag = None
    raw_tag = (query.get("tag") or "").strip()
    if raw_tag:
        if not (raw_tag.isascii() and raw_tag.isdigit()) or len(raw_tag) > 10 or not 0 < int(raw_tag) <= MAX_TAG_ID:
            errors.append(FieldError("tag", N_("This is an unknown tag; reload the page and choose again.")))
        else:
            tag = int(raw_tag)
    owner = (query.get("owner") or "").strip()
    if owner and owner not in ("any", "none") and not (owner.startswith("rep:") and USERID_RE.match(owner[4:])):
        errors.append(FieldError("owner", N_("Choose a sales rep from the list.")))
        owner = ""
    found = ListFilters(q=q, channel=choice("channel", CHANNELS), tag=tag, owner=owner, seen=choice("seen", SEEN),
                        bought=choice("bought", BOUGHT), spent_min=fen("spent_min"), spent_max=fen("spent_max"))
    if found.spent_min is not None and found.spent_max is not None and found.spent_min > found.spent_max:
        errors.append(FieldError("spent_max", N_("The upper bound is below the lower one.")))
    if errors:
        raise InvalidInput(errors)
    return found


def _form_field(name: str) -> str:
    for prefix, field in _FORM_FIELD.items():
        if name == prefix or name.startswith(prefix + "."):
            return field
    return name


async def audience_of(tenant_id: int, filters: ListFilters) -> Audience | None:
    """The filters compiled (None without any: the list stays the plain list). Their mistakes are named by
    the page's fields (`tag` for another tenant's tag, …)."""
    if not filters.filtered():
        return None
    try:
        return await audiences.compiler().definition(tenant_id, filters.definition())
    except InvalidInput as exc:
        raise InvalidInput([FieldError(_form_field(e.field), e.message, e.params) for e in exc.errors]) from None


async def owner_choices(tenant_id: int) -> list[str]:
    """The WeCom UserIDs of reps who own live contacts now: the choices of the owner filter."""
    rows = await db.fetch("SELECT DISTINCT staff_userid FROM owner WHERE tenant = $1 AND removed_at IS NULL "
                          "ORDER BY staff_userid LIMIT $2", tenant_id, OWNER_CHOICES)
    return [r["staff_userid"] for r in rows]


# --- CSV -------------------------------------------------------------------------------------------------

CSV_HEADER = ["id", "display_name", "remark", "phone", "unionid", "channels", "oa_openid", "mp_openid",
              "wecom_external_userid", "tags", "first_seen_at", "last_interaction_at", "erased"]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a nickname "=HYPERLINK(…)" stays text)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA) else text


async def do_record_export(tenant_id: int, filters: ListFilters, actor: Actor) -> None:
    async with db.transaction():
        await record_audit(actor, tenant_id, "contacts.exported", "tenant", tenant_id,
                           {"filters": filters.as_query()})


async def export_csv(tenant_id: int, filters: ListFilters, found: Audience | None, zone: str,
                     scope: Scope = EVERYONE) -> AsyncIterator[bytes]:
    """Every contact the list shows under these filters, newest interaction first, as CSV, read in keyset
    pages so memory stays flat whatever the number of rows."""
    tz = ZoneInfo(zone)

    def when(value: Any) -> str:
        return value.astimezone(tz).isoformat(timespec="seconds") if value is not None else ""

    yield "\ufeff".encode()
    out = io.StringIO()
    csv.writer(out).writerow(CSV_HEADER)
    yield out.getvalue().encode()
    cursor: str | None = None
    while True:
        page = await finder.search(tenant_id, filters.q, cursor=cursor, limit=EXPORT_BATCH, scope=scope,
                                   audience=found, max_page=EXPORT_BATCH)
        out = io.StringIO()
        writer = csv.writer(out)
        for c in page.contacts:
            ids: dict[str, list[str]] = {ch: [] for ch in CHANNELS}
            for i in c["identities"]:
                ids.setdefault(i["channel"], []).append(i["external_id"])
            writer.writerow([cell(v) for v in (
                c["id"], c["display_name"], c["remark"], c["phone"], c["unionid"],
                " ".join(ch for ch in CHANNELS if ids[ch]), " ".join(ids["oa"]), " ".join(ids["mp"]),
                " ".join(ids["wecom"]), "; ".join(t["name"] for t in c["tags"]), when(c["first_seen_at"]),
                when(c["last_interaction_at"]), "yes" if c["erased_at"] is not None else "")])
        yield out.getvalue().encode()
        cursor = page.next_cursor
        if cursor is None:
            return

"""Per-tenant handoff and routing settings, and what each team serves."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from siyu.core import db
from siyu.core.errors import FieldError, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit

DEFAULT_KEYWORDS = ("人工", "客服", "转人工", "human", "agent")
CHANNELS = ("oa", "mp", "wecom")
LANGUAGES = ("zh_CN", "zh_TW", "en")
NOTICE_THING_MAX = 20  # WeChat's limit for a template's `thing` keyword
NOTICE_TEXT_MAX = 200
TEMPLATE_KEY = re.compile(r"^[a-z_]{1,24}[0-9]{0,3}$")
TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{10,64}$")


@dataclass(frozen=True)
class Notice:
    kind: str  # template (OA template message) | subscribe (one-time subscription message, needs consent)
    template_id: str
    text_key: str
    time_key: str

    @property
    def text_max(self) -> int:
        """How long the rep's text may be: a `thing` keyword takes 20 characters."""
        return NOTICE_THING_MAX if self.text_key.startswith("thing") else NOTICE_TEXT_MAX


@dataclass(frozen=True)
class InboxSettings:
    handoff_keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    handoff_menu_keys: tuple[str, ...] = ()
    unanswered_limit: int = 3
    vip_tag_ids: tuple[int, ...] = ()
    sla_minutes: int = 5
    recent_days: int = 30
    notify_customer: bool = True
    notice_template_id: str = ""
    notice_text_key: str = "thing1"
    notice_time_key: str = ""
    mp_notice_template_id: str = ""
    mp_notice_text_key: str = "thing1"
    mp_notice_time_key: str = ""

    def notice_for(self, channel: str) -> Notice | None:
        """The template a rep may send on `channel` when its reply window is closed: the Official Account's
        template message, the Mini Program's subscription message; None when none is set."""
        if channel == "oa" and self.notice_template_id:
            return Notice("template", self.notice_template_id, self.notice_text_key, self.notice_time_key)
        if channel == "mp" and self.mp_notice_template_id:
            return Notice("subscribe", self.mp_notice_template_id, self.mp_notice_text_key, self.mp_notice_time_key)
        return None

    def as_form(self) -> dict[str, Any]:
        return {"handoff_keywords": ", ".join(self.handoff_keywords),
                "handoff_menu_keys": ", ".join(self.handoff_menu_keys), "unanswered_limit": self.unanswered_limit,
                "vip_tag_ids": list(self.vip_tag_ids), "sla_minutes": self.sla_minutes,
                "recent_days": self.recent_days, "notify_customer": self.notify_customer,
                "notice_template_id": self.notice_template_id, "notice_text_key": self.notice_text_key,
                "notice_time_key": self.notice_time_key, "mp_notice_template_id": self.mp_notice_template_id,
                "mp_notice_text_key": self.mp_notice_text_key, "mp_notice_time_key": self.mp_notice_time_key}


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def asks_for_a_human(settings: InboxSettings, text: str) -> bool:
    """A handoff keyword in the message: Chinese keywords anywhere in it (no word boundaries to find),
    Latin ones as whole words ("I want an agent", not "management")."""
    clean = _norm(text)
    if not clean:
        return False
    words = set("".join(c if c.isalnum() else " " for c in clean).split())
    for keyword in settings.handoff_keywords:
        k = _norm(keyword)
        if not k:
            continue
        if k.isascii():
            if k in words or (" " in k and k in clean):
                return True
        elif k in clean:
            return True
    return False


async def get_settings(tenant_id: int) -> InboxSettings:
    row = await db.fetchrow(
        "SELECT handoff_keywords::text AS kw, handoff_menu_keys::text AS menu, unanswered_limit, "
        "vip_tag_ids::text AS vip, sla_minutes, recent_days, notify_customer, notice_template_id, notice_text_key, "
        "notice_time_key, mp_notice_template_id, mp_notice_text_key, mp_notice_time_key "
        "FROM inbox_settings WHERE tenant = $1",
        tenant_id)
    if row is None:
        return InboxSettings()
    return InboxSettings(tuple(json.loads(row["kw"])), tuple(json.loads(row["menu"])), int(row["unanswered_limit"]),
                         tuple(int(t) for t in json.loads(row["vip"])), int(row["sla_minutes"]),
                         int(row["recent_days"]), bool(row["notify_customer"]), row["notice_template_id"],
                         row["notice_text_key"], row["notice_time_key"], row["mp_notice_template_id"],
                         row["mp_notice_text_key"], row["mp_notice_time_key"])


def _list(raw: Any) -> list[str]:
    if isinstance(raw, list | tuple):
        items = [str(x) for x in raw]
    else:
        items = str(raw or "").replace("，", ",").split(",")
    return [" ".join(i.split()) for i in items if i.strip()]


def _bounded_int(raw: Any, name: str, low: int, high: int, errors: list[FieldError]) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        errors.append(FieldError(name, N_("Use a number from {min} to {max}."), {"min": low, "max": high}))
    return value


def _notice_fields(data: dict[str, Any], prefix: str, errors: list[FieldError]) -> tuple[str, str, str]:
    """A notice template's id and keywords from the form (`{prefix}_template_id`, `…_text_key`, `…_time_key`)."""
    template_id = str(data.get(f"{prefix}_template_id") or "").strip()
    if template_id and not TEMPLATE_ID.match(template_id):
        errors.append(FieldError(f"{prefix}_template_id", N_("Paste the template ID as WeChat's admin console "
                                                              "shows it (letters, digits, - and _)."), {}))
    text_key = str(data.get(f"{prefix}_text_key") or "").strip() or "thing1"
    time_key = str(data.get(f"{prefix}_time_key") or "").strip()
    for name, key in ((f"{prefix}_text_key", text_key), (f"{prefix}_time_key", time_key)):
        if key and not TEMPLATE_KEY.match(key):
            errors.append(FieldError(name, N_("Use the keyword's name as the template shows it, such as thing1 or "
                                              "time2."), {}))
    if time_key and time_key == text_key:
        errors.append(FieldError(f"{prefix}_time_key", N_("Use another keyword than the text's."), {}))
    return template_id, text_key, time_key


async def do_update_settings(tenant_id: int, data: dict[str, Any], actor: Actor) -> InboxSettings:
    errors: list[FieldError] = []
    keywords = _list(data.get("handoff_keywords", ""))
    if len(keywords) > 30 or any(len(k) > 20 for k in keywords):
        errors.append(FieldError("handoff_keywords", N_("Up to 30 keywords of 1 to 20 characters."), {}))
    menu_keys = _list(data.get("handoff_menu_keys", ""))
    if len(menu_keys) > 20 or any(len(k) > 128 for k in menu_keys):
        errors.append(FieldError("handoff_menu_keys", N_("Up to 20 menu keys of 1 to 128 characters."), {}))
    unanswered = _bounded_int(data.get("unanswered_limit", 3), "unanswered_limit", 0, 20, errors)
    sla = _bounded_int(data.get("sla_minutes", 5), "sla_minutes", 1, 240, errors)
    recent = _bounded_int(data.get("recent_days", 30), "recent_days", 0, 365, errors)
    raw_tags = data.get("vip_tag_ids") or []
    raw_tags = raw_tags if isinstance(raw_tags, list | tuple) else [raw_tags]
    tag_ids: list[int] = []
    for t in raw_tags:
        if str(t).strip().isdigit():
            tag_ids.append(int(str(t).strip()))
        elif str(t).strip():
            errors.append(FieldError("vip_tag_ids", N_("Choose tags from the list."), {}))
    template_id, text_key, time_key = _notice_fields(data, "notice", errors)
    mp_template_id, mp_text_key, mp_time_key = _notice_fields(data, "mp_notice", errors)
    if errors:
        raise InvalidInput(errors)
    notify = str(data.get("notify_customer", "")).lower() in ("1", "true", "on", "yes")
    async with db.transaction():
        if tag_ids:
            found = await db.fetch("SELECT id FROM tag WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id, tag_ids)
            if len(found) != len(set(tag_ids)):
                raise InvalidInput.one("vip_tag_ids", N_("Choose tags from the list."))
        await db.execute(
            "INSERT INTO inbox_settings (tenant, handoff_keywords, handoff_menu_keys, unanswered_limit, vip_tag_ids, "
            "sla_minutes, recent_days, notify_customer, notice_template_id, notice_text_key, notice_time_key, "
            "mp_notice_template_id, mp_notice_text_key, mp_notice_time_key, updated_at) "
            "VALUES ($1, $2::jsonb, $3::jsonb, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, now()) "
            "ON CONFLICT (tenant) DO UPDATE SET "
            "handoff_keywords = EXCLUDED.handoff_keywords, handoff_menu_keys = EXCLUDED.handoff_menu_keys, "
            "unanswered_limit = EXCLUDED.unanswered_limit, vip_tag_ids = EXCLUDED.vip_tag_ids, "
            "sla_minutes = EXCLUDED.sla_minutes, recent_days = EXCLUDED.recent_days, "
            "notify_customer = EXCLUDED.notify_customer, notice_template_id = EXCLUDED.notice_template_id, "
            "notice_text_key = EXCLUDED.notice_text_key, notice_time_key = EXCLUDED.notice_time_key, "
            "mp_notice_template_id = EXCLUDED.mp_notice_template_id, mp_notice_text_key = EXCLUDED.mp_notice_text_key, "
            "mp_notice_time_key = EXCLUDED.mp_notice_time_key, updated_at = now()",
            tenant_id, json.dumps(keywords, ensure_ascii=False), json.dumps(menu_keys, ensure_ascii=False),
            unanswered, json.dumps(sorted(set(tag_ids))), sla, recent, notify, template_id, text_key, time_key,
            mp_template_id, mp_text_key, mp_time_key)
        await record_audit(actor, tenant_id, "inbox.settings.updated", "tenant", tenant_id,
                           {"handoff_keywords": keywords, "unanswered_limit": unanswered, "sla_minutes": sla,
                            "notice_template_id": template_id, "mp_notice_template_id": mp_template_id})
    return await get_settings(tenant_id)


# --- teams -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeamRoute:
    team_id: int
    channels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    tag_ids: tuple[int, ...] = ()
    managers: tuple[int, ...] = field(default=())

    def serves(self, channel: str, language: str, tag_ids: set[int]) -> bool:
        return ((not self.channels or channel in self.channels)
                and (not self.languages or (language or "zh_CN") in self.languages)
                and (not self.tag_ids or bool(tag_ids & set(self.tag_ids))))


async def team_routes(tenant_id: int) -> list[TeamRoute]:
    rows = await db.fetch("SELECT team, channels, languages, tag_ids, managers FROM inbox_team_route "
                          "WHERE tenant = $1 ORDER BY team", tenant_id)
    return [TeamRoute(int(r["team"]), tuple(r["channels"] or ()), tuple(r["languages"] or ()),
                      tuple(r["tag_ids"] or ()), tuple(r["managers"] or ())) for r in rows]


async def do_set_team_route(tenant_id: int, team_id: int, channels: list[str], languages: list[str],
                            tag_ids: list[int], managers: list[int], actor: Actor) -> None:
    errors: list[FieldError] = []
    if any(c not in CHANNELS for c in channels):
        errors.append(FieldError("channels", N_("Choose one of: {choices}."), {"choices": ", ".join(CHANNELS)}))
    if any(lang not in LANGUAGES for lang in languages):
        errors.append(FieldError("languages", N_("Choose one of: {choices}."), {"choices": ", ".join(LANGUAGES)}))
    if errors:
        raise InvalidInput(errors)
    async with db.transaction():
        if await db.fetchrow("SELECT 1 FROM team WHERE tenant = $1 AND id = $2", tenant_id, team_id) is None:
            raise NotFound()
        if tag_ids and len(await db.fetch("SELECT id FROM tag WHERE tenant = $1 AND id = ANY($2::int[])",
                                          tenant_id, tag_ids)) != len(set(tag_ids)):
            raise InvalidInput.one("tag_ids", N_("Choose tags from the list."))
        if managers and len(await db.fetch("SELECT id FROM staff WHERE tenant = $1 AND id = ANY($2::int[])",
                                           tenant_id, managers)) != len(set(managers)):
            raise InvalidInput.one("managers", N_("Choose people of this brand."))
        await db.execute(
            "INSERT INTO inbox_team_route (tenant, team, channels, languages, tag_ids, managers, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (tenant, team) DO UPDATE SET "
            "channels = EXCLUDED.channels, languages = EXCLUDED.languages, tag_ids = EXCLUDED.tag_ids, "
            "managers = EXCLUDED.managers, updated_at = now()",
            tenant_id, team_id, sorted(set(channels)), sorted(set(languages)), sorted(set(tag_ids)),
            sorted(set(managers)))
        await record_audit(actor, tenant_id, "inbox.team_route.updated", "team", team_id,
                           {"channels": channels, "languages": languages, "tag_ids": tag_ids, "managers": managers})

"""The audit log as people read it: one sentence per entry in the reader's language, naming who did what
to what with links to it, filtered by person, action and dates, in keyset pages, and as CSV.

Every action code written through `services.record_audit` has its `Sentence` in `SENTENCES` (a test scans
the code for the codes and fails on one without). A sentence is an English msgid whose `{placeholders}`
are filled from the entry: `{actor}` is who acted, a name in `refs` is an object the entry points at (a
link), and any other name is a value of the entry's `changes`. What the sentence does not name is listed
beside it as "field: value" lines, field names and known values translated.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_, gettext, set_locale

CHANNEL_KINDS = ("oa", "mp", "wecom")
PAGE = 50
# Dates outside this range are typing mistakes; they also keep date arithmetic far from its limits.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


@dataclass(frozen=True)
class Sentence:
    text: str  # msgid with {placeholders}
    label: str  # msgid: the action's short name, in the filter
    refs: dict[str, tuple[str, str]] = field(default_factory=dict)  # placeholder → (source, kind of object)
    diff: bool = False  # `changes` holds {field: [before, after]}
    gone: bool = False  # the target no longer exists: named, not linked
    group: str = ""  # the filter's value, shared by codes that read alike; the code itself when empty


def _channel_sentences() -> dict[str, Sentence]:
    texts = {
        "linked": (N_("{actor} linked the {channel} {app_id}."), N_("WeChat account linked")),
        "updated": (N_("{actor} changed the settings of the {channel} {app_id}."), N_("WeChat account changed")),
        "unlinked": (N_("{actor} unlinked the {channel} {app_id}."), N_("WeChat account unlinked")),
        "checked": (N_("{actor} checked the connection of the {channel}: {outcome}."),
                    N_("WeChat connection checked")),
        "revealed": (N_("{actor} entered their password again and was shown the callback Token and "
                        "EncodingAESKey of the {channel} {app_id}."), N_("WeChat callback secrets shown")),
    }
    return {f"channel.{kind}.{verb}": Sentence(text, label, {"channel": ("target", "channel")},
                                               group=f"channel.{verb}", gone=verb == "unlinked")
            for kind in CHANNEL_KINDS for verb, (text, label) in texts.items()}


SENTENCES: dict[str, Sentence] = {
    # the brand
    "tenant.created": Sentence(N_("{actor} created the brand {name} ({slug})."), N_("Brand created")),
    "tenant.updated": Sentence(N_("{actor} changed the brand settings."), N_("Brand settings changed"), diff=True),
    "tenant.suspended": Sentence(N_("{actor} suspended the brand's workspace."), N_("Workspace suspended"),
                                 diff=True),
    "tenant.reactivated": Sentence(N_("{actor} reactivated the brand's workspace."), N_("Workspace reactivated"),
                                   diff=True),
    **_channel_sentences(),
    "secrets.rotated": Sentence(N_("{actor} sealed the secrets of {accounts} linked accounts with the new key."),
                                N_("Secrets re-encrypted")),
    "api_key.created": Sentence(N_("{actor} created the API key “{name}” ({key})."), N_("API key created"),
                                {"key": ("target", "api_key")}),
    "api_key.revoked": Sentence(N_("{actor} revoked the API key {key}."), N_("API key revoked"),
                                {"key": ("target", "api_key")}),
    # people
    "staff.signed_in": Sentence(N_("{actor} signed in."), N_("Signed in")),
    "staff.created": Sentence(N_("{actor} added {person} as {role}."), N_("Person added"),
                              {"person": ("target", "staff")}),
    "staff.password_changed": Sentence(N_("{actor} changed the password of {person}."), N_("Password changed"),
                                       {"person": ("target", "staff")}),
    "staff.updated": Sentence(N_("{actor} changed the account of {person}."), N_("Person changed"),
                              {"person": ("target", "staff")}, diff=True),
    "team.created": Sentence(N_("{actor} created the team {team}."), N_("Team created"), {"team": ("target", "team")}),
    "team.deleted": Sentence(N_("{actor} deleted the team “{name}”."), N_("Team deleted"), gone=True),
    "invitation.created": Sentence(N_("{actor} invited {email} as {role}."), N_("Invitation sent")),
    "invitation.accepted": Sentence(N_("{actor} accepted the invitation and joined as {role}."),
                                    N_("Invitation accepted")),
    "invitation.revoked": Sentence(N_("{actor} revoked the invitation of {email}."), N_("Invitation revoked")),
    # contacts and segments
    "contact.tagged": Sentence(N_("{actor} tagged {contact} “{tag}”."), N_("Contact tagged"),
                               {"contact": ("target", "contact")}),
    "contact.untagged": Sentence(N_("{actor} removed the tag “{tag}” from {contact}."), N_("Tag removed"),
                                 {"contact": ("target", "contact")}),
    "contact.merged": Sentence(N_("{actor} merged {merged} into {contact}."), N_("Contacts merged"),
                               {"contact": ("target", "contact"), "merged": ("merged", "contact")}),
    "contact.unmerged": Sentence(N_("{actor} undid the merge of {contact} into {survivor}."), N_("Merge undone"),
                                 {"contact": ("target", "contact"), "survivor": ("survivor", "contact")}),
    "contact.exported": Sentence(N_("{actor} exported the personal data of {contact}."),
                                 N_("Personal data exported"), {"contact": ("target", "contact")}),
    "contact.erased": Sentence(N_("{actor} erased the personal data of {contact}. Reason: {reason}"),
                               N_("Personal data erased"), {"contact": ("target", "contact")}),
    "contact.erased_on_unfollow": Sentence(
        N_("{actor} erased the profile of {contact}, who unfollowed the Official Account."),
        N_("Profile erased on unfollow"), {"contact": ("contact", "contact")}),
    "contacts.settings.updated": Sentence(N_("{actor} changed the contact settings."), N_("Contact settings changed"),
                                          diff=True),
    "segment.created": Sentence(N_("{actor} created the segment {segment}."), N_("Segment created"),
                                {"segment": ("target", "segment")}),
    "segment.updated": Sentence(N_("{actor} changed the segment {segment}."), N_("Segment changed"),
                                {"segment": ("target", "segment")}, diff=True),
    "segment.deleted": Sentence(N_("{actor} deleted the segment “{name}”."), N_("Segment deleted"), gone=True),
    # the Official Account's auto-replies
    "auto_reply.created": Sentence(N_("{actor} added the auto-reply {rule}."), N_("Auto-reply added"),
                                   {"rule": ("target", "auto_reply")}),
    "auto_reply.updated": Sentence(N_("{actor} changed the auto-reply {rule}."), N_("Auto-reply changed"),
                                   {"rule": ("target", "auto_reply")}, diff=True),
    "auto_reply.enabled": Sentence(N_("{actor} turned on the auto-reply {rule}."), N_("Auto-reply turned on"),
                                   {"rule": ("target", "auto_reply")}),
    "auto_reply.disabled": Sentence(N_("{actor} turned off the auto-reply {rule}."), N_("Auto-reply turned off"),
                                    {"rule": ("target", "auto_reply")}),
    "auto_reply.deleted": Sentence(N_("{actor} deleted the auto-reply {rule}."), N_("Auto-reply deleted"),
                                   {"rule": ("target", "auto_reply")}, gone=True),
    # the inbox
    "inbox.settings.updated": Sentence(N_("{actor} changed the inbox settings."), N_("Inbox settings changed")),
    "inbox.team_route.updated": Sentence(N_("{actor} changed what the team {team} serves."),
                                         N_("Team's routing changed"), {"team": ("target", "team")}),
    "inbox.presence": Sentence(N_("{actor} set the presence of {person} to {presence}."), N_("Presence changed"),
                               {"person": ("target", "staff")}, diff=True),
    "inbox.canned.created": Sentence(N_("{actor} added the canned reply {canned}."), N_("Canned reply added"),
                                     {"canned": ("target", "canned")}),
    "inbox.canned.updated": Sentence(N_("{actor} changed the canned reply {canned}."), N_("Canned reply changed"),
                                     {"canned": ("target", "canned")}, diff=True),
    "inbox.canned.deleted": Sentence(N_("{actor} deleted the canned reply {canned}."), N_("Canned reply deleted"),
                                     {"canned": ("target", "canned")}, gone=True),
    "conversation.handoff": Sentence(N_("{actor} handed {conversation} to a person."), N_("Handed to a person"),
                                     {"conversation": ("target", "conversation")}),
    "conversation.template": Sentence(N_("{actor} sent a service notice (template message) in {conversation}."),
                                      N_("Service notice sent"), {"conversation": ("target", "conversation")}),
    "conversation.subscribe": Sentence(N_("{actor} sent a subscription message in {conversation}."),
                                       N_("Subscription message sent"),
                                       {"conversation": ("target", "conversation")}),
    "conversation.wecom_task": Sentence(
        N_("{actor} asked the WeCom rep {owner} to write to the customer of {conversation}."),
        N_("WeCom task created"), {"conversation": ("target", "conversation")}),
    "conversation.send_again": Sentence(
        N_("{actor} sent a message of {conversation} again, as a new message: WeChat had not answered in time, so "
           "the first one may have been delivered."),
        N_("Message sent again"), {"conversation": ("target", "conversation")}),
    # commerce: the WeChat Pay merchant, products, purchases
    "pay.linked": Sentence(N_("{actor} linked the WeChat Pay merchant {mchid}."), N_("WeChat Pay linked")),
    "pay.updated": Sentence(N_("{actor} changed the WeChat Pay merchant {mchid}."), N_("WeChat Pay changed")),
    "pay.key_removed": Sentence(N_("{actor} removed the WeChat Pay key {key_id}."), N_("WeChat Pay key removed")),
    "pay.unlinked": Sentence(N_("{actor} unlinked the WeChat Pay merchant {mchid}."), N_("WeChat Pay unlinked"),
                             gone=True),
    "product.replenish_days": Sentence(N_("{actor} set how many days the product {sku} lasts."),
                                       N_("Replenishment interval set"), diff=True),
    "purchases.exported": Sentence(N_("{actor} downloaded the purchases as CSV."), N_("Purchases exported")),
    "purchases.import_started": Sentence(N_("{actor} uploaded {filename} to import orders."),
                                         N_("Purchase import started")),
    "purchases.imported": Sentence(
        N_("{actor} imported {filename}: {created} new purchases, {merged} added to known orders, {unchanged} "
           "unchanged, {failed} left out."), N_("Purchases imported")),
    "conversation.try_again": Sentence(
        N_("{actor} tried a message of {conversation} again, as a new message: WeChat had not taken the first one."),
        N_("Message tried again"), {"conversation": ("target", "conversation")}),
    # re-engagement: journeys, broadcasts, their shared rules
    "journey.created": Sentence(N_("{actor} created the journey “{name}”."), N_("Journey created")),
    "journey.updated": Sentence(N_("{actor} changed the journey “{name}” (version {version})."), N_("Journey changed")),
    "journey.status": Sentence(N_("{actor} changed the status of the journey “{name}”."), N_("Journey status changed"),
                               diff=True),
    "broadcast.created": Sentence(N_("{actor} created the broadcast “{name}”."), N_("Broadcast created")),
    "broadcast.status": Sentence(N_("{actor} changed the status of the broadcast “{name}”."),
                                 N_("Broadcast status changed"), diff=True),
    "broadcast.test": Sentence(N_("{actor} sent a test message to contact #{contact}."), N_("Test message sent")),
    "engagement.settings.updated": Sentence(N_("{actor} changed the caps and quiet hours."),
                                            N_("Caps and quiet hours changed"), diff=True),
}


def group_of(code: str) -> str:
    sentence = SENTENCES.get(code)
    return (sentence.group or code) if sentence else code


def action_groups() -> dict[str, tuple[str, list[str]]]:
    """Filter value → (label msgid, the codes it stands for), in the registry's order."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for code, sentence in SENTENCES.items():
        key = sentence.group or code
        groups.setdefault(key, (sentence.label, []))[1].append(code)
    return groups


# --- words for the names and values the entries carry ------------------------------------------------

FIELD_LABELS = {
    "name": N_("Name"), "slug": N_("Slug"), "timezone": N_("Time zone"), "locale": N_("Language"),
    "open_platform_bound": N_("Bound to the Open Platform"), "status": N_("Status"),
    "app_id": N_("AppID / CorpID"), "secrets_changed": N_("Secrets replaced"),
    "token_changed": N_("Callback Token replaced"), "oa_kind": N_("Account type"),
    "message_mode": N_("Message encryption"), "push_format": N_("Push format"), "original_id": N_("Original ID"),
    "agent_id": N_("AgentId"), "kf_enabled": N_("WeChat customer service (微信客服)"), "ok": N_("Connected"),
    "errcode": N_("WeChat error code"), "accounts": N_("Accounts"), "prefix": N_("Key"), "email": N_("Email"),
    "role": N_("Role"), "max_concurrent": N_("Capacity"), "is_active": N_("Active"), "team_ids": N_("Teams"),
    "tag": N_("Tag"), "merge_id": N_("Merge"), "merged": N_("Merged contact"), "survivor": N_("Kept contact"),
    "reason": N_("Reason"), "identities": N_("Identities"), "events": N_("Timeline events"),
    "contacts": N_("Contacts"), "tags": N_("Tags"), "callbacks": N_("Stored callbacks"),
    "contact": N_("Contact"), "contact_erased": N_("Contact's details erased"),
    "erase_on_unfollow": N_("Erase on unfollow"), "description": N_("Description"),
    "definition": N_("Definition"), "trigger": N_("Trigger"), "match_type": N_("Keyword match"),
    "keyword": N_("Keyword"), "scene": N_("QR code scene"), "menu_key": N_("Menu button key"), "reply": N_("Reply"),
    "enabled": N_("On"), "handoff_keywords": N_("Handoff keywords"), "handoff_menu_keys": N_("Handoff menu buttons"),
    "unanswered_limit": N_("Unanswered messages before handoff"), "sla_minutes": N_("First reply within (minutes)"),
    "recent_days": N_("Served recently (days)"), "vip_tag_ids": N_("VIP tags"),
    "notify_customer": N_("Tell the customer what happens next"), "notice_template_id": N_("Template ID"),
    "mp_notice_template_id": N_("Subscription template ID"), "channels": N_("Channels"),
    "languages": N_("Languages"), "tag_ids": N_("Tags"), "managers": N_("Managers"), "presence": N_("Presence"),
    "shortcut": N_("Shortcut"), "scope": N_("For"), "message": N_("Message"), "template_id": N_("Template ID"),
    "owner": N_("WeCom rep"), "new": N_("New message"), "type": N_("Kind of message"),
    "mchid": N_("Merchant number (mchid)"), "api_v3_key_changed": N_("APIv3 key replaced"),
    "keys_added": N_("Keys added"), "key_id": N_("Key"), "sku": N_("SKU"),
    "replenish_days": N_("Runs out after (days)"), "filters": N_("Filters"),
}

VALUE_LABELS = {
    ("role", "tenant_admin"): N_("Administrator"), ("role", "agent"): N_("Sales rep"),
    ("status", "active"): N_("active"), ("status", "suspended"): N_("suspended"),
    ("status", "bot"): N_("with the bot"), ("status", "queued"): N_("waiting"),
    ("status", "assigned"): N_("assigned"), ("status", "snoozed"): N_("snoozed"),
    ("status", "resolved"): N_("resolved"),
    ("presence", "online"): N_("online"), ("presence", "away"): N_("away"), ("presence", "offline"): N_("offline"),
    ("reason", "unionid"): N_("the same unionid"), ("reason", "manual"): N_("by hand"),
    ("reason", "keyword"): N_("a handoff keyword"), ("reason", "menu"): N_("the handoff menu button"),
    ("reason", "unanswered"): N_("messages the bot could not answer"), ("reason", "vip"): N_("a VIP tag"),
    ("reason", "api"): N_("a request through the API"),
    ("trigger", "welcome"): N_("welcome on follow"), ("trigger", "keyword"): N_("keyword"),
    ("trigger", "click"): N_("menu button"),
    ("match_type", "exact"): N_("exact"), ("match_type", "contains"): N_("contains"),
    ("scope", "personal"): N_("me only"), ("scope", "tenant"): N_("the whole brand"),
    ("secrets_changed", "secret"): N_("AppSecret / Secret"), ("secrets_changed", "aes_key"): N_("EncodingAESKey"),
    ("oa_kind", "service"): N_("Service account"), ("oa_kind", "subscription"): N_("Subscription account"),
    ("message_mode", "plain"): N_("plain text"), ("message_mode", "compatible"): N_("compatible"),
    ("message_mode", "safe"): N_("safe (encrypted)"),
    ("channels", "oa"): N_("Official Account"), ("channels", "mp"): N_("Mini Program"),
    ("channels", "wecom"): N_("WeCom"),
}
CHANNEL_NAMES = {"oa": N_("Official Account"), "mp": N_("Mini Program"), "wecom": N_("WeCom")}
ACTOR_NAMES = {"system": N_("Siyu (automatic)"), "cli": N_("The command line"), "demo-seed": N_("The demo setup")}
API_KEY_ACTOR = re.compile(r"^api-key:(\d{1,10})$")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def format_value(key: str, value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return gettext(N_("yes")) if value else gettext(N_("no"))
    if isinstance(value, list):
        return ", ".join(format_value(key, v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    label = VALUE_LABELS.get((key, str(value)))
    return gettext(label) if label else str(value)


# --- an entry, read ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    text: str
    href: str | None = None

    def html(self) -> Markup:
        if self.href is None:
            return escape(self.text)
        return Markup('<a href="{}">{}</a>').format(self.href, self.text)


@dataclass(frozen=True)
class Described:
    html: Markup  # the sentence with its links
    text: str  # the same, plain (CSV)
    details: list[tuple[str, str]]  # what the sentence does not say: (field, value), translated


@dataclass
class Names:
    """The names the page's entries refer to by id, read once per page."""

    staff: dict[int, str] = field(default_factory=dict)  # this tenant's people
    teams: dict[int, str] = field(default_factory=dict)
    keys: dict[int, tuple[str, str]] = field(default_factory=dict)  # api key id → (name, prefix)


def _int(value: Any) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


RULE_FIELDS = ("trigger", "match_type", "keyword", "scene", "menu_key")


def _now(value: Any, diff: bool) -> Any:
    """In a diff entry a field is [before, after]: its value now is the after."""
    return value[1] if diff and isinstance(value, list) and len(value) == 2 else value


def _rule_words(rule: dict[str, Any]) -> str | None:
    trigger = rule.get("trigger")
    if trigger == "keyword":
        return gettext(N_("for the keyword “{keyword}”")).format(keyword=rule.get("keyword", ""))
    if trigger == "click":
        return gettext(N_("for the menu button {key}")).format(key=rule.get("menu_key", ""))
    if trigger == "welcome":
        if rule.get("scene"):
            return gettext(N_("welcoming followers from the QR scene {scene}")).format(scene=rule["scene"])
        return gettext(N_("welcoming new followers"))
    return None


def _ref(kind: str, ident: Any, entry: dict[str, Any], names: Names, diff: bool) -> Part:
    """An object the entry names, as a link to its page (when it has one and still exists)."""
    changes = entry["changes"]
    oid = _int(ident)
    number = f"#{ident}"
    paths = {"contact": "/contacts/{}", "conversation": "/inbox/conversations/{}", "staff": "/settings/staff/{}",
             "segment": "/segments/{}", "auto_reply": "/settings/auto-replies/{}", "canned": "/inbox/canned/{}"}
    href = paths[kind].format(oid) if kind in paths and oid is not None else None
    if kind == "contact":
        text = gettext(N_("contact {number}")).format(number=number)
    elif kind == "conversation":
        text = gettext(N_("conversation {number}")).format(number=number)
    elif kind == "staff":
        name = names.staff.get(oid) if oid is not None else None
        text = name or str(changes.get("email") or gettext(N_("person {number}")).format(number=number))
        href = href if name else None  # not (or no longer) one of this brand's people
    elif kind == "team":
        name = (names.teams.get(oid) if oid is not None else None) or changes.get("name")
        text = f"“{name}”" if name else gettext(N_("team {number}")).format(number=number)
        href = "/settings/inbox/" if entry["action"].startswith("inbox.") else "/settings/staff"
    elif kind == "segment":
        name = _now(changes.get("name"), diff)
        text = f"“{name}”" if name else gettext(N_("segment {number}")).format(number=number)
    elif kind == "auto_reply":
        rule = changes.get("rule") if isinstance(changes.get("rule"), dict) else changes
        text = _rule_words(rule) or number
    elif kind == "canned":
        shortcut = _now(changes.get("shortcut"), diff)
        text = f"/{shortcut}" if shortcut else number
    elif kind == "api_key":
        prefix = changes.get("prefix") or (names.keys.get(oid, ("", ""))[1] if oid is not None else "")
        text, href = (f"siyu_{prefix}_…" if prefix else number), "/settings/api-keys"
    else:  # a linked account: the code names its kind
        channel = entry["action"].split(".")[1]
        text, href = gettext(CHANNEL_NAMES.get(channel, channel)), f"/settings/channels?step={channel}"
    return Part(text, href)


def _actor(entry: dict[str, Any], names: Names) -> Part:
    label = entry["actor_label"] or ""
    if entry["actor"] is not None:
        name = names.staff.get(entry["actor"])
        if name is not None:
            return Part(name, f"/settings/staff/{entry['actor']}")
        if entry.get("actor_platform"):
            return Part(gettext(N_("{email} (Siyu platform)")).format(email=label))
        return Part(label)
    key = API_KEY_ACTOR.match(label)
    if key:
        name, prefix = names.keys.get(int(key.group(1)), ("", ""))
        shown = name or (f"siyu_{prefix}_…" if prefix else f"#{key.group(1)}")
        return Part(gettext(N_("API key “{name}”")).format(name=shown), "/settings/api-keys")
    if label in ACTOR_NAMES:
        return Part(gettext(ACTOR_NAMES[label]))
    return Part(label or "—")


def describe(entry: dict[str, Any], names: Names) -> Described:
    code = entry["action"]
    changes: dict[str, Any] = entry["changes"] if isinstance(entry["changes"], dict) else {}
    entry = {**entry, "changes": changes}
    values: dict[str, Part] = {"actor": _actor(entry, names)}
    used: set[str] = set()
    sentence = SENTENCES.get(code)
    diff = bool(sentence and sentence.diff)
    if sentence is None:  # an entry written before its sentence existed: say so, in words
        template = gettext(N_("{actor} did something Siyu has no words for yet ({code})."))
        values["code"] = Part(code)
    else:
        template = gettext(sentence.text)
        for name in _PLACEHOLDER.findall(sentence.text):
            if name == "actor":
                continue
            if name in sentence.refs:
                source, kind = sentence.refs[name]
                ident = entry["target_id"] if source == "target" else changes.get(source)
                part = _ref(kind, ident, entry, names, diff)
                values[name] = Part(part.text) if sentence.gone and source == "target" else part
                used.add(source)
                if kind == "auto_reply":
                    used.update(("rule",) if "rule" in changes else RULE_FIELDS)
                elif kind in ("team", "segment") and source == "target" and not diff:
                    used.add("name")  # the link is named by it
            elif name == "outcome":
                ok = changes.get("ok")
                values[name] = Part(gettext(N_("connected")) if ok else
                                    gettext(N_("failed (WeChat error {code})")).format(code=changes.get("errcode")))
                used.update(("ok", "errcode"))
            else:
                values[name] = Part(format_value(name, _now(changes.get(name), diff)))
                used.add(name)
    details: list[tuple[str, str]] = []
    for key, value in changes.items():
        if key in used:
            continue
        label = gettext(FIELD_LABELS[key]) if key in FIELD_LABELS else key
        if diff and isinstance(value, list) and len(value) == 2:
            details.append((label, f"{format_value(key, value[0])} → {format_value(key, value[1])}"))
        elif key in ("message", "merge_id"):
            details.append((label, f"#{value}"))
        else:
            details.append((label, format_value(key, value)))
    html_parts: list[Markup] = []
    text_parts: list[str] = []
    for i, piece in enumerate(_PLACEHOLDER.split(template)):
        if i % 2 == 0:
            html_parts.append(escape(piece))
            text_parts.append(piece)
        else:
            part = values.get(piece, Part("{" + piece + "}"))
            html_parts.append(part.html())
            text_parts.append(part.text)
    return Described(Markup("").join(html_parts), "".join(text_parts), details)


# --- filters and pages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    who: str = ""  # "" | a staff id | "auto" (Siyu itself, the CLI, the demo) | "key:<api key id>"
    action: str = ""  # a key of action_groups()
    start: date | None = None  # first day, in the tenant's time zone
    end: date | None = None  # last day, included

    def query(self) -> dict[str, str]:
        q = {"who": self.who, "action": self.action,
             "from": self.start.isoformat() if self.start else "", "to": self.end.isoformat() if self.end else ""}
        return {k: v for k, v in q.items() if v}


def _day(name: str, raw: str) -> date | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise InvalidInput.one(name, N_("Enter a date as YYYY-MM-DD."))
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidInput.one(name, N_("Enter a date between {first} and {last}."),
                               first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat())
    return day


def parse_filters(params: Any) -> Filters:
    """The filters of a query string, checked: 400 naming the field otherwise."""
    who = str(params.get("who") or "").strip()
    if who and not (who == "auto" or _int(who) is not None
                    or (who.startswith("key:") and _int(who[4:]) is not None)):
        raise InvalidInput.one("who", N_("Choose a person from the list."))
    action = str(params.get("action") or "").strip()
    if action and action not in action_groups():
        raise InvalidInput.one("action", N_("Choose an action from the list."))
    start, end = _day("from", str(params.get("from") or "")), _day("to", str(params.get("to") or ""))
    if start and end and end < start:
        raise InvalidInput.one("to", N_("The last day comes on or after the first day."))
    return Filters(who, action, start, end)


CURSOR = re.compile(r"^(\d{1,16})\.(\d{1,10})$")
EPOCH = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


def parse_cursor(raw: str | None) -> tuple[datetime, int] | None:
    """`before` = microseconds since the epoch "." id of the last entry shown."""
    if raw is None:
        return None
    m = CURSOR.match(raw)
    if m is None:
        raise InvalidInput.one("before", N_("This link to older entries is damaged: open the audit log again."))
    # Sixteen digits reach the 23rd century at most: no overflow; ids are 32-bit.
    return EPOCH + timedelta(microseconds=int(m.group(1))), min(int(m.group(2)), 2**31 - 1)


def cursor_of(entry: dict[str, Any]) -> str:
    delta = entry["created_at"] - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}.{entry['id']}"


class _Sql:
    """A WHERE clause with its parameters numbered as they are added."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.where: list[str] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str) -> None:
        self.where.append(condition)


async def list_entries(tenant_id: int, tz: str, filters: Filters, before: tuple[datetime, int] | None = None,
                       limit: int = PAGE) -> list[dict[str, Any]]:
    """Newest first, one keyset page on (created_at, id): the index `audit_log_tenant_created` (or the
    person's / the action's index) is read in order and the scan stops after `limit` rows."""
    q = _Sql()
    q.add(f"a.tenant = {q.arg(tenant_id)}")
    if filters.who == "auto":
        q.add("a.actor IS NULL AND a.actor_label NOT LIKE 'api-key:%'")
    elif filters.who.startswith("key:"):
        q.add(f"a.actor IS NULL AND a.actor_label = {q.arg('api-key:' + filters.who[4:])}")
    elif filters.who:
        q.add(f"a.actor = {q.arg(min(int(filters.who), 2**31 - 1))}")
    if filters.action:
        q.add(f"a.action = ANY({q.arg(action_groups()[filters.action][1])}::varchar[])")
    zone = ZoneInfo(tz)
    if filters.start:
        q.add(f"a.created_at >= {q.arg(datetime.combine(filters.start, time(), zone))}")
    if filters.end:
        q.add(f"a.created_at < {q.arg(datetime.combine(filters.end + timedelta(days=1), time(), zone))}")
    if before is not None:
        q.add(f"(a.created_at, a.id) < ({q.arg(before[0])}, {q.arg(before[1])})")
    rows = await db.fetch(
        "SELECT a.id, a.actor, a.actor_label, a.action, a.target_type, a.target_id, a.changes::text AS changes, "
        "a.ip, a.created_at, s.tenant IS NULL AND s.id IS NOT NULL AS actor_platform "
        f"FROM audit_log a LEFT JOIN staff s ON s.id = a.actor WHERE {' AND '.join(q.where)} "
        f"ORDER BY a.created_at DESC, a.id DESC LIMIT {q.arg(limit)}", *q.args)
    return [{**dict(r), "changes": json.loads(r["changes"]) if r["changes"] else {}} for r in rows]


async def names_for(tenant_id: int, entries: Iterable[dict[str, Any]]) -> Names:
    """The tenant's people, teams and API keys that the entries name (three reads at most, per page)."""
    entries = list(entries)
    staff_ids = {e["actor"] for e in entries if e["actor"] is not None}
    staff_ids |= {i for e in entries if e["target_type"] == "staff" and (i := _int(e["target_id"])) is not None}
    team_ids = {i for e in entries if e["target_type"] == "team" and (i := _int(e["target_id"])) is not None}
    key_ids = {int(m.group(1)) for e in entries if (m := API_KEY_ACTOR.match(e["actor_label"] or ""))}
    key_ids |= {i for e in entries if e["target_type"] == "api_key" and (i := _int(e["target_id"])) is not None}
    names = Names()
    if staff_ids:
        for r in await db.fetch("SELECT id, name, email FROM staff WHERE tenant = $1 AND id = ANY($2::int[])",
                                tenant_id, sorted(staff_ids)):
            names.staff[r["id"]] = r["name"] or r["email"]
    if team_ids:
        for r in await db.fetch("SELECT id, name FROM team WHERE tenant = $1 AND id = ANY($2::int[])",
                                tenant_id, sorted(team_ids)):
            names.teams[r["id"]] = r["name"]
    if key_ids:
        for r in await db.fetch("SELECT id, name, prefix FROM api_key WHERE tenant = $1 AND id = ANY($2::int[])",
                                tenant_id, sorted(key_ids)):
            names.keys[r["id"]] = (r["name"], r["prefix"])
    return names


async def people(tenant_id: int) -> list[dict[str, Any]]:
    """Who can be chosen in the person filter: the tenant's people and its API keys."""
    staff = await db.fetch("SELECT id, name, email FROM staff WHERE tenant = $1 ORDER BY lower(name), email",
                           tenant_id)
    keys = await db.fetch("SELECT id, name, prefix FROM api_key WHERE tenant = $1 ORDER BY created_at", tenant_id)
    return ([{"value": str(r["id"]), "label": r["name"] or r["email"]} for r in staff]
            + [{"value": f"key:{r['id']}", "label": gettext(N_("API key “{name}”")).format(
                name=r["name"] or f"siyu_{r['prefix']}_…")} for r in keys])


def local_time(value: datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


# --- CSV ----------------------------------------------------------------------------------------------

CSV_BATCH = 500
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """A spreadsheet must not run what a person typed (a team named "=HYPERLINK(…)")."""
    return "'" + value if value.startswith(_FORMULA) else value


async def csv_lines(tenant_id: int, tz: str, filters: Filters, locale: str) -> AsyncIterator[str]:
    """The filtered log as CSV, newest first, read in keyset batches while it is sent. A BOM first, so
    spreadsheet programs read the Chinese as UTF-8."""
    # The body is sent after the handler has returned, in the same request: say it in the reader's language.
    set_locale(locale)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([gettext(N_("When")) + f" ({tz})", gettext(N_("Who")), gettext(N_("What")),
                     gettext(N_("Details")), gettext(N_("Action code")), gettext(N_("IP address"))])
    yield "\ufeff" + out.getvalue()
    before: tuple[datetime, int] | None = None
    while True:
        rows = await list_entries(tenant_id, tz, filters, before, limit=CSV_BATCH)
        if not rows:
            return
        names = await names_for(tenant_id, rows)
        out = io.StringIO()
        writer = csv.writer(out)
        for e in rows:
            said = describe(e, names)
            writer.writerow([local_time(e["created_at"], tz), _cell(_actor(e, names).text), _cell(said.text),
                             _cell("; ".join(f"{k}: {v}" for k, v in said.details)), e["action"], e["ip"]])
        yield out.getvalue()
        if len(rows) < CSV_BATCH:
            return
        before = (rows[-1]["created_at"], rows[-1]["id"])

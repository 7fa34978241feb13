"""What a journey does, as strict JSON: the public contract of the API and of export / import.

    {"name": "After the first order",
     "trigger": {"kind": "purchase", "skus": ["TEA-1"], "min_fen": 0, "max_fen": null,
                 "order": "any" | "first" | "repeat", "sources": ["api", "pay"]}
              | {"kind": "refund", "skus": []}
              | {"kind": "replenishment", "skus": []}          # at the purchase's replenishment date
              | {"kind": "inactivity", "days": 60, "since": "purchase" | "interaction"}
              | {"kind": "segment_entry", "segment_id": 3}
              | {"kind": "follow", "channels": ["oa", "wecom"]},
     "steps": [{"id": "thanks", "send": {"purpose": "service" | "marketing", "text": "…",
                                          "template": {"oa": {"template_id", "data"}, "mp": {"template_id", "data", "page"}},
                                          "channels": ["window", "wecom_task", "subscribe", "template", "mass"]}},
               {"id": "w1", "wait": "PT10M"},                   # ISO 8601: weeks, days, hours, minutes, seconds
               {"id": "w2", "wait": "replenishment"},           # purchase journeys: until the products run out
               {"id": "c1", "stop_if": {"purchased": true, "tags_any": [4]}}],
     "exit": {"purchased": true, "refunded": true, "unfollowed": true, "in_conversation": true,
              "tags_any": [], "segment_id": null},
     "reentry_days": null, "holdout_percent": 10, "status": "draft" | "active" | "paused" | "archived"}

Step ids are stable: a send is keyed by its step id in the ledger, so an edit never sends a step again to a
person who already had it, whatever moves around it. Parsing names the field of every mistake
("steps[2].send.channels", "trigger.days", …) and bounds everything it reads.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_

TRIGGERS = ("purchase", "refund", "replenishment", "inactivity", "segment_entry", "follow")
PURCHASE_ORDERS = ("any", "first", "repeat")
PURCHASE_SOURCES = ("api", "pay", "import")
SINCE = ("purchase", "interaction")
FOLLOW_CHANNELS = ("oa", "wecom")
PURPOSES = ("service", "marketing")
# The ladder, in WeChat's order of preference: an open reply window, a 1:1 task through the customer's WeCom
# rep, a Mini Program subscription message / an OA template (service only), an OA mass send.
CHANNELS = ("window", "wecom_task", "subscribe", "template", "mass")
SERVICE_ONLY = ("subscribe", "template")
STATUSES = ("draft", "active", "paused", "archived")
EXIT_FLAGS = ("purchased", "refunded", "unfollowed", "in_conversation")
REPLENISHMENT = "replenishment"

NAME_MAX = 80
TEXT_MAX = 600
MAX_STEPS = 20
MAX_SKUS = 50
MAX_TAGS = 20
MAX_DATA_KEYS = 10
MAX_WAIT = timedelta(days=365)
MAX_DAYS = 3650
_INT_MAX = 2**31 - 1
_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_SKU_MAX = 64
# P[nW][nD][T[nH][nM][nS]]: no years or months (their length depends on the calendar).
_DURATION = re.compile(r"^P(?:(\d{1,4})W)?(?:(\d{1,4})D)?(?:T(?:(\d{1,5})H)?(?:(\d{1,6})M)?(?:(\d{1,7})S)?)?$")


@dataclass(frozen=True)
class Trigger:
    kind: str
    skus: tuple[str, ...] = ()
    min_fen: int | None = None
    max_fen: int | None = None
    order: str = "any"
    sources: tuple[str, ...] = ()
    days: int | None = None
    since: str = "purchase"
    segment_id: int | None = None
    channels: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        k = self.kind
        if k == "purchase":
            return {"kind": k, "skus": list(self.skus), "min_fen": self.min_fen, "max_fen": self.max_fen,
                    "order": self.order, "sources": list(self.sources)}
        if k in ("refund", "replenishment"):
            return {"kind": k, "skus": list(self.skus)}
        if k == "inactivity":
            return {"kind": k, "days": self.days, "since": self.since}
        if k == "segment_entry":
            return {"kind": k, "segment_id": self.segment_id}
        return {"kind": k, "channels": list(self.channels)}


@dataclass(frozen=True)
class Template:
    template_id: str
    data: tuple[tuple[str, str], ...]
    page: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"template_id": self.template_id, "data": dict(self.data)}
        if self.page:
            out["page"] = self.page
        return out


@dataclass(frozen=True)
class Message:
    purpose: str
    text: str
    channels: tuple[str, ...]
    oa_template: Template | None = None
    mp_template: Template | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"purpose": self.purpose, "text": self.text, "channels": list(self.channels)}
        template = {name: t.as_json() for name, t in (("oa", self.oa_template), ("mp", self.mp_template)) if t}
        if template:
            out["template"] = template
        return out


@dataclass(frozen=True)
class Conditions:
    """Exit rules (checked before every send) and stop_if steps (before the sends after them)."""

    purchased: bool = False
    refunded: bool = False
    unfollowed: bool = False
    in_conversation: bool = False
    tags_any: tuple[int, ...] = ()
    segment_id: int | None = None  # leaving this segment

    def as_json(self) -> dict[str, Any]:
        return {"purchased": self.purchased, "refunded": self.refunded, "unfollowed": self.unfollowed,
                "in_conversation": self.in_conversation, "tags_any": list(self.tags_any),
                "segment_id": self.segment_id}


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # wait | send | stop_if
    wait: timedelta | None = None
    until_replenishment: bool = False
    send: Message | None = None
    stop_if: Conditions | None = None

    def as_json(self) -> dict[str, Any]:
        if self.kind == "wait":
            return {"id": self.id, "wait": REPLENISHMENT if self.until_replenishment else duration(self.wait)}
        if self.kind == "send":
            assert self.send is not None
            return {"id": self.id, "send": self.send.as_json()}
        assert self.stop_if is not None
        return {"id": self.id, "stop_if": self.stop_if.as_json()}


@dataclass(frozen=True)
class Journey:
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    exit: Conditions
    reentry_days: int | None = None
    holdout_percent: int = 0
    status: str = "draft"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "trigger": self.trigger.as_json(), "steps": [s.as_json() for s in self.steps],
                "exit": self.exit.as_json(), "reentry_days": self.reentry_days,
                "holdout_percent": self.holdout_percent, "status": self.status}

    def sends(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "send"]

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def segment_ids(self) -> set[int]:
        found = {c.segment_id for c in [self.exit, *(s.stop_if for s in self.steps if s.stop_if)] if c.segment_id}
        if self.trigger.segment_id:
            found.add(self.trigger.segment_id)
        return {int(s) for s in found if s}

    def tag_ids(self) -> set[int]:
        return set(self.exit.tags_any) | {t for s in self.steps if s.stop_if for t in s.stop_if.tags_any}


def duration(value: timedelta | None) -> str:
    """The ISO 8601 form of a wait, in the units a person would write (P7D, PT30M, P1DT2H)."""
    total = int((value or timedelta()).total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    out = "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return out if out != "P" else "PT0S"


def parse_duration(raw: str) -> timedelta | None:
    m = _DURATION.match(raw) if isinstance(raw, str) and raw not in ("P", "PT") and not raw.endswith("T") else None
    if m is None:
        return None
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


# --- parsing -----------------------------------------------------------------------------------------------

@dataclass
class _Errors:
    found: list[FieldError] = field(default_factory=list)

    def add(self, name: str, message: str, **params: object) -> None:
        if all(e.field != name for e in self.found):  # the first mistake of each field
            self.found.append(FieldError(name, message, params))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: Any, name: str, allowed: tuple[str, ...], errors: _Errors) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.add(name, N_("Give an object with: {keys}."), keys=", ".join(allowed))
        return None
    unknown = sorted(str(k)[:40] for k in set(value) - set(allowed))
    if unknown:
        errors.add(name, N_("Unknown keys: {keys}."), keys=", ".join(unknown))
        return None
    return value


def _number(value: Any, name: str, low: int, high: int, errors: _Errors, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if not _is_int(value) or not low <= value <= high:
        errors.add(name, N_("Enter a whole number from {low} to {high}."), low=low, high=high)
        return None
    return int(value)


def _flag(value: Any, name: str, default: bool, errors: _Errors) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        errors.add(name, N_("Use true or false."))
        return default
    return value


def _choices(value: Any, name: str, allowed: tuple[str, ...], errors: _Errors) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > len(allowed) or not all(v in allowed for v in value):
        errors.add(name, N_("Choose from: {choices}."), choices=", ".join(allowed))
        return ()
    return tuple(dict.fromkeys(value))


def _ids(value: Any, name: str, errors: _Errors, most: int) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > most or not all(_is_int(v) and 0 < v <= _INT_MAX for v in value):
        errors.add(name, N_("Give a list of at most {max} ids."), max=most)
        return ()
    return tuple(dict.fromkeys(value))


def _skus(value: Any, name: str, errors: _Errors) -> tuple[str, ...]:
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) > MAX_SKUS
            or not all(isinstance(v, str) and 0 < len(v.strip()) <= _SKU_MAX and v.isprintable() for v in value)):
        errors.add(name, N_("Give a list of at most {max} SKUs."), max=MAX_SKUS)
        return ()
    return tuple(dict.fromkeys(v.strip() for v in value))


def _trigger(raw: Any, errors: _Errors) -> Trigger | None:
    if not isinstance(raw, dict) or raw.get("kind") not in TRIGGERS:
        errors.add("trigger.kind", N_("Choose one of: {choices}."), choices=", ".join(TRIGGERS))
        return None
    kind = raw["kind"]
    keys = {"purchase": ("skus", "min_fen", "max_fen", "order", "sources"), "refund": ("skus",),
            "replenishment": ("skus",), "inactivity": ("days", "since"), "segment_entry": ("segment_id",),
            "follow": ("channels",)}[kind]
    obj = _object(raw, "trigger", ("kind", *keys), errors)
    if obj is None:
        return None
    if kind == "purchase":
        low = _number(obj.get("min_fen"), "trigger.min_fen", 0, 10**12, errors)
        high = _number(obj.get("max_fen"), "trigger.max_fen", 0, 10**12, errors)
        if low is not None and high is not None and low > high:
            errors.add("trigger.max_fen", N_("The highest amount is below the lowest."))
        order = obj.get("order", "any")
        if order not in PURCHASE_ORDERS:
            errors.add("trigger.order", N_("Choose one of: {choices}."), choices=", ".join(PURCHASE_ORDERS))
            order = "any"
        return Trigger(kind, skus=_skus(obj.get("skus"), "trigger.skus", errors), min_fen=low, max_fen=high,
                       order=order, sources=_choices(obj.get("sources"), "trigger.sources", PURCHASE_SOURCES, errors))
    if kind in ("refund", "replenishment"):
        return Trigger(kind, skus=_skus(obj.get("skus"), "trigger.skus", errors))
    if kind == "inactivity":
        days = _number(obj.get("days"), "trigger.days", 1, MAX_DAYS, errors, optional=False)
        since = obj.get("since", "purchase")
        if since not in SINCE:
            errors.add("trigger.since", N_("Choose one of: {choices}."), choices=", ".join(SINCE))
            since = "purchase"
        return Trigger(kind, days=days, since=since)
    if kind == "segment_entry":
        return Trigger(kind, segment_id=_number(obj.get("segment_id"), "trigger.segment_id", 1, _INT_MAX, errors,
                                                optional=False))
    channels = _choices(obj.get("channels"), "trigger.channels", FOLLOW_CHANNELS, errors) or FOLLOW_CHANNELS
    return Trigger(kind, channels=tuple(c for c in FOLLOW_CHANNELS if c in channels))


def _conditions(raw: Any, name: str, defaults: Conditions, errors: _Errors) -> Conditions:
    if raw is None:
        return defaults
    obj = _object(raw, name, (*EXIT_FLAGS, "tags_any", "segment_id"), errors)
    if obj is None:
        return defaults
    flags = {f: _flag(obj.get(f), f"{name}.{f}", getattr(defaults, f), errors) for f in EXIT_FLAGS}
    tags = _ids(obj.get("tags_any"), f"{name}.tags_any", errors, MAX_TAGS) if "tags_any" in obj else defaults.tags_any
    segment = (_number(obj.get("segment_id"), f"{name}.segment_id", 1, _INT_MAX, errors) if "segment_id" in obj
               else defaults.segment_id)
    return Conditions(**flags, tags_any=tags, segment_id=segment)


def _template(raw: Any, name: str, errors: _Errors, with_page: bool) -> Template | None:
    if raw is None:
        return None
    obj = _object(raw, name, ("template_id", "data", "page") if with_page else ("template_id", "data"), errors)
    if obj is None:
        return None
    template_id = obj.get("template_id")
    if not isinstance(template_id, str) or not _TEMPLATE_ID.match(template_id):
        errors.add(f"{name}.template_id", N_("Enter the template id WeChat gave (letters, digits, _ and -)."))
        return None
    data = obj.get("data") or {}
    if (not isinstance(data, dict) or len(data) > MAX_DATA_KEYS
            or not all(isinstance(k, str) and _DATA_KEY.match(k) and isinstance(v, str) and len(v) <= 200
                       for k, v in data.items())):
        errors.add(f"{name}.data", N_("Map up to {max} template keywords (like thing1) to texts of up to 200 "
                                      "characters."), max=MAX_DATA_KEYS)
        return None
    page = obj.get("page", "")
    if not isinstance(page, str) or len(page) > 200 or not page.isprintable():
        errors.add(f"{name}.page", N_("Enter a Mini Program page path of up to 200 characters."))
        page = ""
    return Template(template_id, tuple(sorted(data.items())), page)


def parse_message(raw: Any, name: str, errors: _Errors) -> Message | None:
    """A message: what a send step and a broadcast carry."""
    obj = _object(raw, name, ("purpose", "text", "template", "channels"), errors)
    if obj is None:
        return None
    purpose = obj.get("purpose")
    if purpose not in PURPOSES:
        errors.add(f"{name}.purpose", N_("Choose one of: {choices}."), choices=", ".join(PURPOSES))
        return None
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > TEXT_MAX or "\x00" in text:
        errors.add(f"{name}.text", N_("Write the message: 1 to {max} characters."), max=TEXT_MAX)
        return None
    oa = mp = None
    if obj.get("template") is not None:
        tobj = _object(obj["template"], f"{name}.template", ("oa", "mp"), errors)
        if tobj is not None:
            oa = _template(tobj.get("oa"), f"{name}.template.oa", errors, with_page=False)
            mp = _template(tobj.get("mp"), f"{name}.template.mp", errors, with_page=True)
    if obj.get("channels") is None:
        usable = {"subscribe": mp is not None, "template": oa is not None}
        channels = tuple(c for c in CHANNELS if usable.get(c, True) and (purpose == "service" or c not in SERVICE_ONLY))
    else:
        raw_channels = obj["channels"]
        if (not isinstance(raw_channels, list) or not raw_channels or len(raw_channels) > len(CHANNELS)
                or not all(c in CHANNELS for c in raw_channels)):
            errors.add(f"{name}.channels", N_("Choose, in order, from: {choices}."), choices=", ".join(CHANNELS))
            return None
        channels = tuple(dict.fromkeys(raw_channels))
        if purpose == "marketing" and all(c in SERVICE_ONLY for c in channels):
            errors.add(f"{name}.channels", N_("WeChat forbids marketing in subscription messages and templates: "
                                              "a marketing message needs window, wecom_task or mass."))
            return None
        if purpose == "service" and "subscribe" in channels and mp is None:
            errors.add(f"{name}.template.mp", N_("The subscribe channel needs the Mini Program's template."))
        if purpose == "service" and "template" in channels and oa is None:
            errors.add(f"{name}.template.oa", N_("The template channel needs the Official Account's template."))
    return Message(purpose, text.strip(), channels, oa, mp)


def _steps(raw: Any, trigger: Trigger | None, errors: _Errors) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_STEPS:
        errors.add("steps", N_("Give 1 to {max} steps."), max=MAX_STEPS)
        return ()
    steps: list[Step] = []
    seen: set[str] = set()
    for n, item in enumerate(raw):
        name = f"steps[{n}]"
        kinds = [k for k in ("wait", "send", "stop_if") if isinstance(item, dict) and k in item]
        if len(kinds) != 1:
            errors.add(name, N_("Each step is one of: wait, send, stop_if."))
            continue
        kind = kinds[0]
        obj = _object(item, name, ("id", kind), errors)
        if obj is None:
            continue
        step_id = obj.get("id")
        if step_id is None:
            step_id = "s" + secrets.token_hex(3)  # new steps get a fresh id that no earlier step had
        if not isinstance(step_id, str) or not _STEP_ID.match(step_id) or step_id in seen:
            errors.add(f"{name}.id", N_("Step ids are 1 to 32 lower-case letters, digits, _ or -, each used once."))
            continue
        seen.add(step_id)
        if kind == "wait":
            value = obj["wait"]
            if value == REPLENISHMENT:
                if trigger is not None and trigger.kind != "purchase":
                    errors.add(f"{name}.wait", N_("Only journeys started by a purchase can wait for its "
                                                   "replenishment date."))
                steps.append(Step(step_id, "wait", until_replenishment=True))
                continue
            wait = parse_duration(value)
            if wait is None or wait > MAX_WAIT:
                errors.add(f"{name}.wait", N_("Write an ISO 8601 duration of at most a year in weeks, days, hours, "
                                               "minutes or seconds, like P3D or PT30M."))
                continue
            steps.append(Step(step_id, "wait", wait=wait))
        elif kind == "send":
            message = parse_message(obj["send"], f"{name}.send", errors)
            if message is not None:
                steps.append(Step(step_id, "send", send=message))
        else:
            steps.append(Step(step_id, "stop_if", stop_if=_conditions(obj["stop_if"], f"{name}.stop_if",
                                                                       Conditions(), errors)))
    if steps and not any(s.kind == "send" for s in steps) and not errors.found:
        errors.add("steps", N_("A journey needs at least one send step."))
    return tuple(steps)


KEYS = ("name", "trigger", "steps", "exit", "reentry_days", "holdout_percent", "status")


def clean_name(value: Any, errors: _Errors) -> str:
    name = " ".join(value.split()) if isinstance(value, str) else ""
    if not name or len(name) > NAME_MAX or not name.isprintable():
        errors.add("name", N_("Use 1 to {max} characters."), max=NAME_MAX)
    return name


def parse(raw: Any) -> Journey:
    """The journey `raw` describes, or InvalidInput naming each wrong field. The shape only: whether the
    segments and tags exist is for the services to say (they know the tenant)."""
    errors = _Errors()
    if not isinstance(raw, dict):
        raise InvalidInput.one("definition", N_("Send a JSON object."))
    for key in sorted(str(k)[:40] for k in set(raw) - set(KEYS)):
        errors.add(key, N_("Journeys have no field of this name."))
    name = clean_name(raw.get("name"), errors)
    trigger = _trigger(raw.get("trigger"), errors)
    steps = _steps(raw.get("steps"), trigger, errors)
    defaults = Conditions(purchased=True, refunded=True, unfollowed=True, in_conversation=True,
                          segment_id=trigger.segment_id if trigger and trigger.kind == "segment_entry" else None)
    exit_rules = _conditions(raw.get("exit"), "exit", defaults, errors)
    reentry = _number(raw.get("reentry_days"), "reentry_days", 1, MAX_DAYS, errors)
    holdout = _number(raw.get("holdout_percent", 0), "holdout_percent", 0, 90, errors, optional=False)
    status = raw.get("status", "draft")
    if status not in STATUSES:
        errors.add("status", N_("Choose one of: {choices}."), choices=", ".join(STATUSES))
    if errors.found:
        raise InvalidInput(errors.found)
    assert trigger is not None
    return Journey(name, trigger, steps, exit_rules, reentry, holdout or 0, status)


def parse_broadcast_message(raw: Any) -> Message:
    errors = _Errors()
    message = parse_message(raw, "message", errors)
    if errors.found or message is None:
        raise InvalidInput(errors.found or [FieldError("message", N_("Send a JSON object."))])
    return message

"""The journey editor's and the broadcast composer's form fields ⇄ the JSON the services check. The forms
are plain HTML (they work without JavaScript); the services' strict parsers name every mistake, and the
editor shows each one beside its field."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from siyu.engagement.definition import CHANNELS, duration

EMPTY_STEPS = 2  # blank rows under the steps, to add one without JavaScript
MAX_ROWS = 20
_ROW = re.compile(r"^steps\[(\d{1,2})\]")


def _int(raw: Any) -> int | str | None:
    text = str(raw or "").strip()
    if not text:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else text


def _fen(raw: Any) -> int | str | None:
    text = str(raw or "").strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    return int(value * 100) if value == value.quantize(Decimal("0.01")) and value >= 0 else text


def _yuan(fen: Any) -> str:
    return "" if fen is None else f"{Decimal(fen) / 100:.2f}"


def _list(raw: Any) -> list[str]:
    return [s.strip() for s in re.split(r"[,，\s]+", str(raw or "")) if s.strip()]


def _data(raw: Any) -> dict[str, str]:
    """`keyword=value` lines (the template's keywords)."""
    out = {}
    for line in str(raw or "").splitlines():
        key, sep, value = line.partition("=")
        if key.strip():
            out[key.strip()] = value.strip() if sep else ""
    return out


def _data_text(data: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in data.items())


def message_from_form(form: Any, prefix: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"purpose": str(form.get(f"{prefix}.purpose") or ""), "text": str(form.get(f"{prefix}.text") or "")}
    channels = [c for c in CHANNELS if c in form.getall(f"{prefix}.channels", [])]
    if channels:
        msg["channels"] = channels
    template: dict[str, Any] = {}
    for kind in ("oa", "mp"):
        template_id = str(form.get(f"{prefix}.{kind}_template") or "").strip()
        if template_id:
            template[kind] = {"template_id": template_id, "data": _data(form.get(f"{prefix}.{kind}_data"))}
            page = str(form.get(f"{prefix}.mp_page") or "").strip()
            if kind == "mp" and page:
                template[kind]["page"] = page
    if template:
        msg["template"] = template
    return msg


def message_fields(msg: dict[str, Any] | None) -> dict[str, Any]:
    msg = msg or {}
    template = msg.get("template") or {}
    return {"purpose": msg.get("purpose", "marketing"), "text": msg.get("text", ""),
            "channels": list(msg.get("channels") or []),
            "oa_template": (template.get("oa") or {}).get("template_id", ""),
            "oa_data": _data_text((template.get("oa") or {}).get("data") or {}),
            "mp_template": (template.get("mp") or {}).get("template_id", ""),
            "mp_data": _data_text((template.get("mp") or {}).get("data") or {}),
            "mp_page": (template.get("mp") or {}).get("page", "")}


def _conditions(form: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {flag: bool(form.get(f"{prefix}.{flag}")) for flag in
                           ("purchased", "refunded", "unfollowed", "in_conversation")}
    out["tags_any"] = [_int(t) for t in form.getall(f"{prefix}.tags_any", []) if str(t).strip()]
    out["segment_id"] = _int(form.get(f"{prefix}.segment_id"))
    return out


def journey_from_form(form: Any) -> tuple[dict[str, Any], list[int]]:
    """The editor's fields as a journey in the API's JSON shape (the services check it), and for each of its
    steps the form row it came from (rows left blank are not steps)."""
    kind = str(form.get("trigger.kind") or "")
    trigger: dict[str, Any] = {"kind": kind}
    if kind == "purchase":
        trigger.update(skus=_list(form.get("trigger.skus")), min_fen=_fen(form.get("trigger.min_yuan")),
                       max_fen=_fen(form.get("trigger.max_yuan")), order=str(form.get("trigger.order") or "any"),
                       sources=[s for s in ("api", "pay", "import") if s in form.getall("trigger.sources", [])])
    elif kind in ("refund", "replenishment"):
        trigger["skus"] = _list(form.get("trigger.skus"))
    elif kind == "inactivity":
        trigger.update(days=_int(form.get("trigger.days")), since=str(form.get("trigger.since") or "purchase"))
    elif kind == "segment_entry":
        trigger["segment_id"] = _int(form.get("trigger.segment_id"))
    elif kind == "follow":
        trigger["channels"] = [c for c in ("oa", "wecom") if c in form.getall("trigger.channels", [])] or None
    steps: list[dict[str, Any]] = []
    rows: list[int] = []
    for n in range(MAX_ROWS + EMPTY_STEPS):
        p = f"steps[{n}]"
        step_kind = str(form.get(f"{p}.kind") or "")
        if step_kind not in ("wait", "send", "stop_if"):
            continue
        step: dict[str, Any] = {}
        step_id = str(form.get(f"{p}.id") or "").strip()
        if step_id:
            step["id"] = step_id
        if step_kind == "wait":
            step["wait"] = str(form.get(f"{p}.wait") or "").strip()
        elif step_kind == "send":
            step["send"] = message_from_form(form, p)
        else:
            step["stop_if"] = _conditions(form, f"{p}.stop")
        steps.append(step)
        rows.append(n)
    return {"name": str(form.get("name") or ""), "trigger": trigger, "steps": steps,
            "exit": _conditions(form, "exit"), "reentry_days": _int(form.get("reentry_days")),
            "holdout_percent": _int(form.get("holdout_percent")) or 0,
            "status": str(form.get("status") or "draft")}, rows


def journey_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """What the editor shows for a journey's JSON (a checked one, or what a person typed)."""
    trigger = raw.get("trigger") or {}
    rows = []
    for step in raw.get("steps") or []:
        row: dict[str, Any] = {"id": step.get("id", ""), "kind": next((k for k in ("wait", "send", "stop_if")
                                                                         if k in step), "")}
        wait = step.get("wait")
        row["wait"] = duration(wait) if hasattr(wait, "total_seconds") else (wait or "")
        row.update(message_fields(step.get("send") if row["kind"] == "send" else None))
        stop = step.get("stop_if") or {}
        row["stop"] = {**stop, "tags_any": [str(t) for t in stop.get("tags_any") or []]}
        rows.append(row)
    for _ in range(EMPTY_STEPS):
        rows.append({"id": "", "kind": "", "wait": "", "stop": {}, **message_fields(None)})
    exit_rules = raw.get("exit") or {}
    return {"name": raw.get("name", ""), "status": raw.get("status", "draft"),
            "holdout_percent": str(raw.get("holdout_percent") or 0),
            "reentry_days": "" if raw.get("reentry_days") is None else str(raw["reentry_days"]),
            "trigger": {**trigger, "skus": ", ".join(trigger.get("skus") or []),
                        "min_yuan": _yuan(trigger.get("min_fen")) if isinstance(trigger.get("min_fen"), int) else "",
                        "max_yuan": _yuan(trigger.get("max_fen")) if isinstance(trigger.get("max_fen"), int) else "",
                        "sources": list(trigger.get("sources") or []), "channels": list(trigger.get("channels") or [])},
            "exit": {**exit_rules, "tags_any": [str(t) for t in exit_rules.get("tags_any") or []]},
            "steps": rows}


def row_of(field: str) -> int | None:
    m = _ROW.match(field)
    return int(m.group(1)) if m else None


def broadcast_from_form(form: Any) -> dict[str, Any]:
    return {"name": str(form.get("name") or ""), "segment_id": _int(form.get("segment_id")),
            "message": message_from_form(form, "message"), "rate_per_minute": _int(form.get("rate_per_minute")),
            "holdout_percent": _int(form.get("holdout_percent")) or 0}

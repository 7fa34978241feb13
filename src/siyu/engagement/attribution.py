"""Did it work? Conversions and the figures of a journey step or a broadcast.

A conversion is a purchase within the conversion window (the tenant's, default 7 days) after a message was
sent to the buyer, or, for a held-out person, after the moment it would have been sent: one per message (the
first purchase after it). A purchase whose Pay `attach` (or Mini Program page path) carries a message's token
is credited to that message too (last touch), whatever the window.

The figures compare the people who were sent the message with the held-out ones: conversion rate of each,
the difference with a 95 % confidence interval (normal approximation of two proportions) and the relative
lift. Last touch over-credits; the holdout comparison is the honest number.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siyu.core import db
from siyu.core.settings import get_settings as app_settings

_TOKEN = re.compile(r"(?:^|[?&;,\s])sy=([0-9a-z]{1,13})\.([0-9a-f]{8})(?:$|[&;,\s])")


def _mac(delivery_id: int) -> str:
    key = hashlib.sha256(b"siyu-attribution\x1f" + app_settings().secret_key.encode()).digest()
    return hmac.new(key, str(delivery_id).encode(), hashlib.sha256).hexdigest()[:8]


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def token(delivery_id: int) -> str:
    """`sy=<id>.<mac>`: what a message's Mini Program link carries and the brand's Mini Program passes on in
    WeChat Pay's `attach`. Signed, so a guessed token credits nothing."""
    return f"sy={_b36(delivery_id)}.{_mac(delivery_id)}"


def delivery_of(attach: str) -> int | None:
    m = _TOKEN.search(attach or "")
    if m is None:
        return None
    delivery_id = int(m.group(1), 36)
    return delivery_id if hmac.compare_digest(_mac(delivery_id), m.group(2)) else None


@dataclass(frozen=True)
class Purchase:
    """What attribution needs of a purchase (the commerce seam fills it)."""

    purchase_id: int
    contact_id: int
    amount_fen: int
    currency: str
    paid_at: datetime
    attach: str = ""


async def credit(tenant_id: int, p: Purchase, window_days: int) -> int:
    """Record the conversions this purchase makes; returns how many are new. Idempotent."""
    added = 0
    last_touch = delivery_of(p.attach)
    if last_touch is not None:
        row = await db.fetchrow(
            "INSERT INTO engagement_conversion (tenant, delivery, purchase_id, contact, amount_fen, currency, paid_at, "
            "kind, created_at) SELECT d.tenant, d.id, $3, $4, $5, $6, $7, 'last_touch', $7 FROM engagement_delivery d "
            "WHERE d.tenant = $1 AND d.id = $2 AND d.state IN ('sent', 'held_out') ON CONFLICT DO NOTHING RETURNING id",
            tenant_id, last_touch, p.purchase_id, p.contact_id, p.amount_fen, p.currency, p.paid_at)
        added += row is not None
    rows = await db.fetch(
        "INSERT INTO engagement_conversion (tenant, delivery, purchase_id, contact, amount_fen, currency, paid_at, kind, "
        "created_at) SELECT d.tenant, d.id, $3, $2, $4, $5, $6, 'window', $6 FROM engagement_delivery d "
        "WHERE d.tenant = $1 AND d.contact = $2 AND d.state IN ('sent', 'held_out') AND d.step <> 'test' "
        "AND d.settled_at <= $6 AND d.settled_at > $6::timestamptz - make_interval(days => $7) "
        "ON CONFLICT DO NOTHING RETURNING id",
        tenant_id, p.contact_id, p.purchase_id, p.amount_fen, p.currency, p.paid_at, window_days)
    return added + len(rows)


# --- figures -------------------------------------------------------------------------------------------------

@dataclass
class Figures:
    """One step of a journey, or a broadcast (step "message")."""

    step: str
    targeted: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    sent_by_channel: Counter[str] = field(default_factory=Counter)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    passed_over: Counter[str] = field(default_factory=Counter)  # "channel: reason" of every ladder skip
    conversions: int = 0  # of people sent the message
    revenue_fen: int = 0
    held_out_conversions: int = 0
    held_out_revenue_fen: int = 0
    last_touch: int = 0

    @property
    def sent(self) -> int:
        return self.by_state["sent"]

    @property
    def held_out(self) -> int:
        return self.by_state["held_out"]

    @property
    def rate(self) -> float | None:
        return self.conversions / self.sent if self.sent else None

    @property
    def held_out_rate(self) -> float | None:
        return self.held_out_conversions / self.held_out if self.held_out else None

    def lift(self) -> Lift | None:
        return lift(self.conversions, self.sent, self.held_out_conversions, self.held_out)

    def as_json(self) -> dict[str, Any]:
        lf = self.lift()
        return {"step": self.step, "targeted": self.targeted, "states": dict(self.by_state),
                "sent_by_channel": dict(self.sent_by_channel), "skipped_by_reason": dict(self.skipped_by_reason),
                "failed_by_reason": dict(self.failed_by_reason), "channels_passed_over": dict(self.passed_over),
                "conversions": self.conversions, "revenue_fen": self.revenue_fen,
                "held_out_conversions": self.held_out_conversions, "held_out_revenue_fen": self.held_out_revenue_fen,
                "last_touch_conversions": self.last_touch, "conversion_rate": self.rate,
                "held_out_conversion_rate": self.held_out_rate, "lift": lf.as_json() if lf else None}


@dataclass(frozen=True)
class Lift:
    difference: float  # treated rate − held-out rate
    low: float  # 95 % interval of the difference
    high: float
    relative: float | None  # difference / held-out rate

    def as_json(self) -> dict[str, float | None]:
        return {"difference": self.difference, "ci_low": self.low, "ci_high": self.high, "relative": self.relative}


def lift(conv_t: int, n_t: int, conv_c: int, n_c: int, z: float = 1.96) -> Lift | None:
    if n_t == 0 or n_c == 0:
        return None
    p_t, p_c = conv_t / n_t, conv_c / n_c
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    diff = p_t - p_c
    return Lift(diff, diff - z * se, diff + z * se, diff / p_c if p_c else None)


async def figures(tenant_id: int, source_kind: str, source_id: int) -> dict[str, Figures]:
    """Per step: targeted, states, sent by channel, skipped / failed by reason, conversions and revenue."""
    out: dict[str, Figures] = defaultdict(lambda: Figures(""))
    rows = await db.fetch(
        "SELECT step, state, channel, reason, count(*) AS n FROM engagement_delivery WHERE tenant = $1 "
        "AND source_kind = $2 AND source_id = $3 AND step <> 'test' GROUP BY step, state, channel, reason",
        tenant_id, source_kind, source_id)
    for r in rows:
        f = out[r["step"]]
        f.step = r["step"]
        n = int(r["n"])
        f.targeted += n
        f.by_state[r["state"]] += n
        if r["state"] == "sent":
            f.sent_by_channel[r["channel"]] += n
        elif r["state"] == "skipped":
            f.skipped_by_reason[r["reason"]] += n
        elif r["state"] in ("failed", "not_sent", "unknown"):
            f.failed_by_reason[f"{r['state']}:{r['reason']}" if r["state"] != "failed" else r["reason"]] += n
    passed = await db.fetch(
        "SELECT d.step, s->>'channel' AS channel, s->>'reason' AS reason, count(*) AS n FROM engagement_delivery d, "
        "jsonb_array_elements(d.skips) s WHERE d.tenant = $1 AND d.source_kind = $2 AND d.source_id = $3 "
        "AND d.step <> 'test' GROUP BY 1, 2, 3", tenant_id, source_kind, source_id)
    for r in passed:
        out[r["step"]].passed_over[f"{r['channel']}: {r['reason']}"] += int(r["n"])
    conv = await db.fetch(
        "SELECT d.step, d.state, c.kind, count(*) AS n, COALESCE(sum(c.amount_fen), 0) AS fen "
        "FROM engagement_conversion c JOIN engagement_delivery d ON d.tenant = c.tenant AND d.id = c.delivery "
        "WHERE c.tenant = $1 AND d.source_kind = $2 AND d.source_id = $3 AND d.step <> 'test' "
        "GROUP BY d.step, d.state, c.kind", tenant_id, source_kind, source_id)
    for r in conv:
        f = out[r["step"]]
        if r["state"] == "held_out":
            f.held_out_conversions += int(r["n"])
            f.held_out_revenue_fen += int(r["fen"])
        else:
            f.conversions += int(r["n"])
            f.revenue_fen += int(r["fen"])
        if r["kind"] == "last_touch":
            f.last_touch += int(r["n"])
    return dict(out)


@dataclass
class Summary:
    """A journey's or broadcast's figures at a glance (all steps together)."""

    targeted: int = 0
    states: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    sent_by_channel: Counter[str] = field(default_factory=Counter)
    conversions: int = 0
    revenue_fen: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"targeted": self.targeted, "states": dict(self.states), "reasons": dict(self.reasons),
                "sent_by_channel": dict(self.sent_by_channel), "conversions": self.conversions,
                "revenue_fen": self.revenue_fen}


async def summaries(tenant_id: int, source_kind: str, source_ids: list[int]) -> dict[int, Summary]:
    out: dict[int, Summary] = {i: Summary() for i in source_ids}
    if not source_ids:
        return out
    for r in await db.fetch(
            "SELECT source_id, state, channel, reason, count(*) AS n FROM engagement_delivery WHERE tenant = $1 "
            "AND source_kind = $2 AND source_id = ANY($3::bigint[]) AND step <> 'test' "
            "GROUP BY source_id, state, channel, reason", tenant_id, source_kind, source_ids):
        s, n = out[int(r["source_id"])], int(r["n"])
        s.targeted += n
        s.states[r["state"]] += n
        if r["reason"]:
            s.reasons[f"{r['state']}:{r['reason']}"] += n
        if r["state"] == "sent":
            s.sent_by_channel[r["channel"]] += n
    for r in await db.fetch(
            "SELECT d.source_id, count(*) AS n, COALESCE(sum(c.amount_fen), 0) AS fen FROM engagement_conversion c "
            "JOIN engagement_delivery d ON d.tenant = c.tenant AND d.id = c.delivery WHERE c.tenant = $1 "
            "AND d.source_kind = $2 AND d.source_id = ANY($3::bigint[]) AND d.state = 'sent' AND d.step <> 'test' "
            "GROUP BY d.source_id", tenant_id, source_kind, source_ids):
        s = out[int(r["source_id"])]
        s.conversions, s.revenue_fen = int(r["n"]), int(r["fen"])
    return out


async def entered(tenant_id: int, journey_ids: list[int]) -> dict[int, int]:
    rows = await db.fetch("SELECT journey, count(*) AS n FROM engagement_entry WHERE tenant = $1 "
                          "AND journey = ANY($2::int[]) GROUP BY journey", tenant_id, journey_ids)
    return {int(r["journey"]): int(r["n"]) for r in rows}

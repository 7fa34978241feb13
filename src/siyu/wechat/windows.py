"""WeChat's reply windows, in one place.

| channel | opened by | Siyu may send |
| --- | --- | --- |
| Official Account | a message from the person | 5 within 48 h |
| Official Account | follow, QR scan, menu click | 3 within 1 minute |
| Mini Program | a message from the person | 5 within 48 h |
| Mini Program | entering a customer-service session | 2 within 1 minute |
| WeCom 微信客服 | a message from the customer | 5 within 48 h |

A new message from the person opens a fresh 48 h window with a fresh quota. A send counts against every
window open at that moment (so a follow followed by a message allows 5 sends, not 3 + 5: the stricter
reading, which the simulator shares, so Siyu is never more optimistic than WeChat). Siyu counts what it sent,
so it knows before calling WeChat whether WeChat will accept (45015 window closed, 45047 quota used).
Reservations are single conditional UPDATEs, safe under concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from siyu.core import db, groupcommit
from siyu.core.clock import now as clock_now
from siyu.wechat.tables import ReplyWindow


@dataclass(frozen=True)
class Rule:
    user_quota: int
    user_window: timedelta
    event_quota: int
    event_window: timedelta
    event_kinds: frozenset[str]


RULES: dict[str, Rule] = {
    "oa": Rule(5, timedelta(hours=48), 3, timedelta(minutes=1), frozenset({"follow", "scan", "menu_click"})),
    "mp": Rule(5, timedelta(hours=48), 2, timedelta(minutes=1), frozenset({"session_enter"})),
    "wecom": Rule(5, timedelta(hours=48), 0, timedelta(0), frozenset()),
}


@dataclass(frozen=True)
class WindowState:
    can_send: bool
    slot: str  # "event" | "user" | "" — which window the next message would use
    remaining: int  # messages left in that window
    closes_at: datetime | None
    refusal: int | None  # the errcode WeChat would answer: 45015 closed, 45047 quota used

    def as_json(self) -> dict[str, Any]:
        return {"can_send": self.can_send, "slot": self.slot, "remaining": self.remaining,
                "closes_at": self.closes_at.isoformat() if self.closes_at else None, "refusal": self.refusal}


def _column_for(channel: str, kind: str) -> str | None:
    rule = RULES.get(channel)
    if rule is None:
        return None
    if kind == "message":
        return "user_msg_at"
    return "event_at" if kind in rule.event_kinds else None


async def note_inbound(tenant_id: int, channel: str, external_id: str, kind: str, at: datetime) -> None:
    """An inbound event may open a window. Older events (retries, late deliveries) never shrink one."""
    await note_inbound_many([(tenant_id, channel, external_id, kind, at)])


async def note_inbound_many(events: list[tuple[int, str, str, str, datetime]]) -> None:
    """The same for a batch of events: one statement per kind of window."""
    latest: dict[str, dict[tuple[int, str, str], datetime]] = {"user_msg_at": {}, "event_at": {}}
    for tenant_id, channel, external_id, kind, at in events:
        column = _column_for(channel, kind)
        if column is None or not external_id:
            continue
        key = (tenant_id, channel, external_id)
        if key not in latest[column] or latest[column][key] < at:
            latest[column][key] = at
    for column, rows in latest.items():
        if not rows:
            continue
        sent = "user_sent" if column == "user_msg_at" else "event_sent"
        keys = list(rows)
        await ReplyWindow.raw(
            f"INSERT INTO wechat_reply_window (tenant, channel, external_id, {column}, user_sent, event_sent, "
            "updated_at) SELECT t, c, x, a, 0, 0, now() "
            "FROM unnest({}::int[], {}::text[], {}::text[], {}::timestamptz[]) AS u(t, c, x, a) "
            f"ON CONFLICT (tenant, channel, external_id) DO UPDATE SET {column} = EXCLUDED.{column}, {sent} = 0, "
            "updated_at = now() "
            f"WHERE wechat_reply_window.{column} IS NULL OR wechat_reply_window.{column} < EXCLUDED.{column}",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [rows[k] for k in keys],
        )


def _evaluate(rule: Rule, row: dict[str, Any] | None, now: datetime) -> WindowState:
    """A send counts against every window open at the time, and is allowed while any open window has
    quota left (a follow followed by a message allows 5 sends, not 3 + 5)."""
    if row is None:
        return WindowState(False, "", 0, None, 45015)
    event_open = bool(rule.event_quota) and row["event_at"] is not None and now < row["event_at"] + rule.event_window
    user_open = row["user_msg_at"] is not None and now < row["user_msg_at"] + rule.user_window
    options = []
    if event_open and row["event_sent"] < rule.event_quota:
        options.append(("event", rule.event_quota - row["event_sent"], row["event_at"] + rule.event_window))
    if user_open and row["user_sent"] < rule.user_quota:
        options.append(("user", rule.user_quota - row["user_sent"], row["user_msg_at"] + rule.user_window))
    if options:
        slot, remaining, closes = max(options, key=lambda o: (o[1], o[2]))
        return WindowState(True, slot, remaining, closes, None)
    if user_open or event_open:
        closes = row["user_msg_at"] + rule.user_window if user_open else row["event_at"] + rule.event_window
        return WindowState(False, "", 0, closes, 45047)
    return WindowState(False, "", 0, None, 45015)


async def state(tenant_id: int, channel: str, external_id: str, now: datetime | None = None) -> WindowState:
    # Plain asyncpg on the send path: Piccolo's query building cost more CPU than the statement (profiled).
    row = await db.fetchrow(
        "SELECT event_at, event_sent, user_msg_at, user_sent FROM wechat_reply_window "
        "WHERE tenant = $1 AND channel = $2 AND external_id = $3", tenant_id, channel, external_id)
    return _evaluate(RULES[channel], row, now or clock_now())


async def states(tenant_id: int, channel: str, external_ids: list[str], now: datetime | None = None
                 ) -> dict[str, WindowState]:
    """`state` for many people of one channel in one read (a person without a window row reads closed)."""
    if not external_ids:
        return {}
    rows = await ReplyWindow.raw(
        "SELECT external_id, event_at, event_sent, user_msg_at, user_sent FROM wechat_reply_window "
        "WHERE tenant = {} AND channel = {} AND external_id = ANY({}::text[])", tenant_id, channel,
        sorted(set(external_ids)))
    by_id = {r["external_id"]: r for r in rows}
    at = now or clock_now()
    return {x: _evaluate(RULES[channel], by_id.get(x), at) for x in external_ids}


@dataclass(frozen=True)
class _Want:
    tenant_id: int
    channel: str
    external_id: str
    now: datetime
    outbound_id: int | None


async def reserve(tenant_id: int, channel: str, external_id: str, now: datetime | None = None,
                  outbound_id: int | None = None) -> str | int:
    """Take one message from the open windows, atomically. Returns which windows it counted against
    ("event", "user" or "event+user"), or the errcode WeChat would answer (45015 closed, 45047 quota used).
    With `outbound_id`, the same statement records the slot on that send of the ledger (so it can be given
    back), one round trip instead of two and no moment where the window is counted and the send not. The
    reservations of concurrent sends share one statement and one commit (`_reservations`), alone inside a
    caller's open transaction."""
    at = now or clock_now()
    want = _Want(tenant_id, channel, external_id, at, outbound_id)
    took = await _reservations.write(want)
    if took:
        return took
    refusal = (await state(tenant_id, channel, external_id, at)).refusal
    return refusal or 45047


async def _reserve_batch(wants: list[_Want]) -> list[str]:
    """The slot each reservation took ("" when none was left). One statement per round; a window wanted twice
    in a batch is taken in the next round, so each sees the other's count."""
    taken = [""] * len(wants)
    left = list(range(len(wants)))
    while left:
        seen: set[tuple[int, str, str]] = set()
        now_round, later = [], []
        for i in left:
            w = wants[i]
            (later if (w.tenant_id, w.channel, w.external_id) in seen else now_round).append(i)
            seen.add((w.tenant_id, w.channel, w.external_id))
        rules = [RULES[wants[i].channel] for i in now_round]
        rows = await db.fetch(
            "WITH u AS (SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::int[], "
            "$6::timestamptz[], $7::timestamptz[], $8::int[], $9::bigint[]) "
            "AS u(i, tenant, channel, ext, eq, ecut, ucut, uq, oid)), "
            "took AS (UPDATE wechat_reply_window w SET "
            "event_sent = w.event_sent + CASE WHEN u.eq > 0 AND w.event_at > u.ecut THEN 1 ELSE 0 END, "
            "user_sent = w.user_sent + CASE WHEN w.user_msg_at > u.ucut THEN 1 ELSE 0 END, updated_at = now() "
            "FROM u WHERE w.tenant = u.tenant AND w.channel = u.channel AND w.external_id = u.ext "
            "AND ((u.eq > 0 AND w.event_at > u.ecut AND w.event_sent < u.eq) OR (w.user_msg_at > u.ucut "
            "AND w.user_sent < u.uq)) "
            "RETURNING u.i, u.oid, (u.eq > 0 AND w.event_at > u.ecut) AS event_open, (w.user_msg_at > u.ucut) AS user_open), "
            "slot AS (SELECT i, oid, CASE WHEN event_open AND user_open THEN 'event+user' WHEN event_open THEN 'event' "
            "ELSE 'user' END AS name FROM took), "
            "recorded AS (UPDATE wechat_outbound o SET window_slot = slot.name FROM slot WHERE o.id = slot.oid) "
            "SELECT i, name FROM slot",
            now_round, [wants[i].tenant_id for i in now_round], [wants[i].channel for i in now_round],
            [wants[i].external_id for i in now_round], [r.event_quota for r in rules],
            [wants[i].now - r.event_window for i, r in zip(now_round, rules, strict=True)],
            [wants[i].now - r.user_window for i, r in zip(now_round, rules, strict=True)],
            [r.user_quota for r in rules], [wants[i].outbound_id for i in now_round])
        for r in rows:
            taken[int(r["i"])] = str(r["name"])
        left = later
    return taken


_reservations: groupcommit.GroupCommit[_Want, str] = groupcommit.GroupCommit(_reserve_batch, "window-reservations")


async def release(tenant_id: int, channel: str, external_id: str, slot: str) -> None:
    """Give a reserved message back when WeChat did not take it (busy, rate limited, refused)."""
    sets = ", ".join(f"{c} = greatest({c} - 1, 0)" for name, c in (("event", "event_sent"), ("user", "user_sent"))
                     if name in slot.split("+"))
    if not sets:
        return
    await db.execute(
        f"UPDATE wechat_reply_window SET {sets}, updated_at = now() "
        "WHERE tenant = $1 AND channel = $2 AND external_id = $3", tenant_id, channel, external_id)


async def set_bot_silenced(tenant_id: int, channel: str, external_id: str, silenced: bool) -> None:
    """While a person from the brand has the conversation, the Official Account's keyword rules do not
    answer this customer (the inbox calls this inside its own transaction, as the conversation changes)."""
    await ReplyWindow.raw(
        "INSERT INTO wechat_reply_window (tenant, channel, external_id, user_sent, event_sent, bot_silenced, "
        "updated_at) VALUES ({}, {}, {}, 0, 0, {}, now()) ON CONFLICT (tenant, channel, external_id) "
        "DO UPDATE SET bot_silenced = EXCLUDED.bot_silenced, updated_at = now() "
        "WHERE wechat_reply_window.bot_silenced IS DISTINCT FROM EXCLUDED.bot_silenced",
        tenant_id, channel, external_id, silenced)


async def bot_silenced(tenant_id: int, channel: str, external_id: str) -> bool:
    row = await ReplyWindow.select(ReplyWindow.bot_silenced).where(
        (ReplyWindow.tenant == tenant_id) & (ReplyWindow.channel == channel)
        & (ReplyWindow.external_id == external_id)).first()
    return bool(row and row["bot_silenced"])

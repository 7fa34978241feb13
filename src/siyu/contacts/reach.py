"""How a person can be reached, read in one round trip for many people: the re-engagement engine asks this
right before each send (its exits and its channel choice depend on it) and never reads the contacts' tables
itself.

A merged-away contact is read as its survivor (messages follow the person). An OA identity counts as
following unless it was erased on unfollow or its newest follow / unfollow on the timeline is an unfollow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from siyu.core import db

MAX_HOPS = 5  # merges of merges


@dataclass(frozen=True)
class Identity:
    id: int
    channel: str  # oa | mp | wecom
    external_id: str
    erased: bool
    unfollowed: bool  # OA: the newest follow / unfollow is an unfollow

    @property
    def usable(self) -> bool:
        return not self.erased and not self.unfollowed


@dataclass(frozen=True)
class Owner:
    userid: str  # the WeCom rep
    external_userid: str  # the customer as that rep's corp knows them
    added_at: datetime


@dataclass(frozen=True)
class Reach:
    contact_id: int  # the live contact (the survivor of a merge)
    erased: bool
    last_purchase_at: datetime | None
    last_interaction_at: datetime | None
    identities: tuple[Identity, ...]
    owners: tuple[Owner, ...]  # active, newest first
    tag_ids: frozenset[int]

    def identity(self, channel: str) -> Identity | None:
        """The usable identity on a channel, if any."""
        return next((i for i in self.identities if i.channel == channel and i.usable), None)

    @property
    def unfollowed(self) -> bool:
        """Followed the Official Account once and no longer does."""
        oa = [i for i in self.identities if i.channel == "oa"]
        return bool(oa) and not any(i.usable for i in oa)


_SQL = """
SELECT c.id, c.merged_into, c.erased_at, c.last_purchase_at, c.last_interaction_at,
  (SELECT COALESCE(json_agg(json_build_object('id', i.id, 'channel', i.channel, 'external_id', i.external_id,
      'erased', i.erased_at IS NOT NULL,
      'unfollowed', i.channel = 'oa' AND (SELECT e.kind FROM timeline_event e WHERE e.tenant = i.tenant
          AND e.identity = i.id AND e.kind IN ('followed', 'unfollowed') ORDER BY e.occurred_at DESC, e.id DESC
          LIMIT 1) = 'unfollowed') ORDER BY i.id), '[]'::json)
   FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id) AS identities,
  (SELECT COALESCE(json_agg(json_build_object('userid', o.staff_userid, 'external_userid', i.external_id,
      'added_at', o.added_at) ORDER BY o.added_at DESC), '[]'::json)
   FROM owner o JOIN identity i ON i.tenant = o.tenant AND i.id = o.identity
   WHERE o.tenant = c.tenant AND o.contact = c.id AND o.removed_at IS NULL AND i.erased_at IS NULL) AS owners,
  ARRAY(SELECT ct.tag FROM contact_tag ct WHERE ct.tenant = c.tenant AND ct.contact = c.id) AS tags
FROM contact c WHERE c.tenant = $1 AND c.id = ANY($2::int[])
"""


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def reach_of(tenant_id: int, contact_ids: Sequence[int]) -> dict[int, Reach]:
    """Each asked contact's reach, keyed by the id asked (absent: no such contact in this tenant)."""
    asked = {int(c): int(c) for c in contact_ids}  # asked id → the id to read now
    found: dict[int, Reach] = {}
    for _ in range(MAX_HOPS):
        wanted = sorted(set(asked.values()))
        if not wanted:
            break
        rows = {int(r["id"]): r for r in await db.fetch(_SQL, tenant_id, wanted)}
        follow: dict[int, int] = {}
        for original, current in asked.items():
            r = rows.get(current)
            if r is None:
                continue
            if r["merged_into"] is not None:
                follow[original] = int(r["merged_into"])
                continue
            found[original] = Reach(
                contact_id=current, erased=r["erased_at"] is not None, last_purchase_at=r["last_purchase_at"],
                last_interaction_at=r["last_interaction_at"],
                identities=tuple(Identity(int(i["id"]), i["channel"], i["external_id"], bool(i["erased"]),
                                          bool(i["unfollowed"])) for i in json.loads(r["identities"])),
                owners=tuple(Owner(o["userid"], o["external_userid"], _time(o["added_at"]))
                             for o in json.loads(r["owners"])),
                tag_ids=frozenset(int(t) for t in r["tags"] or []))
        asked = follow
    return found

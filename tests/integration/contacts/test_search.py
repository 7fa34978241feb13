"""The contact list's search answers exactly what its definition says, whatever path the database takes.

The search reads candidates from indexes (one- and two-character grams of name, remark and phone; id
prefixes) and checks them; these tests compare every page it returns, followed through its cursors, with
the definition written as one plain query: name or remark containing the text (ignoring case), phone
containing it, an openid, external_userid or unionid (of the contact or any of its identities) starting
with it; live contacts only; newest interaction first.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from siyu.contacts import search
from siyu.contacts.search import _like
from siyu.core import db
from tests.conftest import TenantFixture

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NAMES = ["王小明", "王明", "李雷", "Han Meimei", "HAN mei", "Lily🌸", "小太阳", "Mr.王", "陈静怡", "", "100%纯",
         "a_b", "back\\slash", "İstanbul", "Ǆemal", "王 小"]
REMARKS = ["VIP 客户", "上海门店", "北京朝阳店 王女士", "", "vip", "团购负责人", "老客户 复购", "需要回访"]
PHONES = ["13800001111", "13900002222", "+86 138 0000 3333", "", "021-6666 8888", "ABC"]


async def reference(tenant_id: int, q: str) -> list[int]:
    """The definition, as the search was written before it had indexes of its own."""
    rows = await db.fetch(
        "SELECT c.id FROM contact c WHERE c.tenant = $1 AND c.merged_into IS NULL "
        "AND (c.display_name ILIKE $2 OR c.remark ILIKE $2 OR c.phone LIKE $2 OR c.unionid LIKE $3 "
        "OR EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id "
        "AND (i.external_id LIKE $3 OR i.unionid LIKE $3))) "
        "ORDER BY COALESCE(c.last_interaction_at, c.first_seen_at) DESC, c.id DESC",
        tenant_id, f"%{_like(q)}%", f"{_like(q)}%")
    return [int(r["id"]) for r in rows]


async def everything(tenant_id: int, q: str, limit: int) -> list[int]:
    """All pages of the search, through its cursors."""
    found: list[int] = []
    cursor = None
    for _ in range(200):
        page = await search.search(tenant_id, q, cursor=cursor, limit=limit)
        found += [int(c["id"]) for c in page.contacts]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
    raise AssertionError("the cursor never ended")


@pytest.fixture
async def crowd(acme: TenantFixture, globex: TenantFixture) -> int:
    """120 contacts from the vocabulary above (ties in time included), some merged away, each with one to
    three identities; and a contact of another tenant that matches nearly everything."""
    rng = random.Random(4)
    for n in range(120):
        at = T0 + timedelta(minutes=rng.randrange(60)) if n % 7 else None
        merged = n > 10 and n % 13 == 0
        row = await db.fetchrow(
            "INSERT INTO contact (tenant, display_name, avatar_url, phone, remark, language, unionid, first_seen_at, "
            "last_interaction_at, created_at, updated_at) VALUES ($1, $2, '', $3, $4, '', $5, $6, $7, now(), now()) "
            "RETURNING id", acme.id, rng.choice(NAMES), rng.choice(PHONES), rng.choice(REMARKS),
            None if merged or n % 3 else f"oUnion{n:04d}x", T0 - timedelta(days=1), at)
        contact = int(row["id"])
        if merged:
            await db.execute("UPDATE contact SET merged_into = (SELECT min(id) FROM contact WHERE tenant = $1) "
                             "WHERE id = $2", acme.id, contact)
            continue
        for channel, prefix in [("oa", "o6_bm"), *rng.sample([("mp", "oXk2"), ("wecom", "wmqf")], rng.randint(0, 2))]:
            await db.execute(
                "INSERT INTO identity (tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, "
                "profile) VALUES ($1, $2, $3, $4, $5, now(), now(), '{}')", acme.id, contact, channel,
                f"{prefix}{n:04d}_{channel}", f"oIdUnion{n:04d}" if n % 5 == 0 else None)
    await db.execute("INSERT INTO contact (tenant, display_name, avatar_url, phone, remark, language, first_seen_at, "
                     "created_at, updated_at) VALUES ($1, $2, '', $3, $4, '', now(), now(), now())",
                     globex.id, " ".join(NAMES), "1380000111121", " ".join(REMARKS))
    return acme.id


QUERIES = [
    "王", "明", "王明", "王小明", "小明", "王 小", "李雷", "han", "HAN", "Mei", "meimei", "n M", "🌸", "Lily🌸",
    "ly🌸", "%", "_", "a_b", "\\", "slash", "100%", "ǅ", "ǆemal", "İ", "i", "istanbul", "vip", "VIP 客户",
    "门店", "店 王", "138", "0000", "1111", "+86", "6666 8888", "abc", "o", "o6", "o6_bm0", "o6_bm0012_oa",
    "wmqf", "oUnion", "oUnion0003x", "oIdUnion", "oIdUnion0005", "Union", "x", "查无此人", "13800001111",
]


@pytest.mark.parametrize("limit", [7, 100])
async def test_every_page_is_the_definition(crowd: int, limit: int) -> None:
    for q in QUERIES:
        expected = await reference(crowd, q)
        assert await everything(crowd, q, limit) == expected, q


async def test_one_by_one_through_ties(crowd: int) -> None:
    """Pages of one: the cursor carries on exactly after each contact, also between equal times."""
    for q in ("王", "138", "oUnion"):
        assert await everything(crowd, q, 1) == await reference(crowd, q), q


async def test_the_queries_above_are_not_all_empty(crowd: int) -> None:
    """Guards the test above from passing on nothing."""
    hits = {q: len(await reference(crowd, q)) for q in QUERIES}
    # Ids match by prefix, not inside; the phone is compared as written ("ABC").
    assert [q for q, n in hits.items() if not n] == ["abc", "Union", "x", "查无此人"]
    assert hits["王"] > 20 and hits["o"] > 20


async def test_the_grams_hold_what_ilike_needs(crowd: int) -> None:
    """The index's condition never drops a row the ILIKE keeps (checked on every row, not through a plan)."""
    for q in QUERIES:
        dropped = await db.fetch(
            "SELECT display_name, remark, phone FROM contact WHERE (display_name ILIKE $1 OR remark ILIKE $1 "
            "OR phone LIKE $1) AND NOT contact_search_grams(display_name, remark, phone) @> "
            "contact_search_query_grams($2)", f"%{_like(q)}%", q)
        assert dropped == [], q

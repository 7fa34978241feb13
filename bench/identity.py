"""`make bench-identity`: the identity graph at a million identities, beside the raw SQL of the same queries.

Starts an embedded PostgreSQL in a throwaway directory (Redis plays no part in these paths), applies the
migrations, creates 100 tenants through the tenants service and bulk-loads them with server-side
`INSERT … SELECT generate_series` (the loading session skips FK triggers and the secondary indexes are
dropped and recreated from their own definitions afterwards, the classic bulk-load path; the result is
checked: same index definitions, no dangling references, CHECK constraints applied all along):

- one big tenant: ~400,000 live contacts (and 1 % merged-away ones), 1,000,000 identities (every contact
  follows the Official Account, 75 % use the Mini Program, 75 % were added on WeCom; 60 % carry a unionid),
  Chinese / English / phrase nicknames, remarks, phones, WeCom rep owners, and 5,000,000 timeline events of
  which 50,000 belong to one contact;
- 99 small tenants with a little of the same.

After VACUUM ANALYZE it measures, each beside the same SQL sent straight through asyncpg in the same run:

- resolve(): an inbound event from a known identity, from a new one, and from a new one whose unionid
  is known (joins that contact); targets p99 <= 5 ms;
- unionid merges: pairs of contacts converging through resolve() (merges/s), against the bare UPDATEs that
  move identities and events;
- the timeline's first page (the contact page's 30 events) for the contact with 50,000 events, p95 <= 20 ms;
- the contact list search (the page's three queries) for several kinds of query, p95 <= 50 ms, and the
  JSON API's lookup by a WeChat id;
- the database size and its largest tables and indexes.

BENCH_SCALE (default 1) scales the data: `BENCH_SCALE=0.01 make bench-identity` runs in well under a
minute. BENCH_KEEP=1 leaves the server and its data running afterwards (for EXPLAIN) and says how to stop it.
Timings are noisy when something else shares the machine; the load average is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Row, interleaved, pct, sayer, timed  # noqa: E402

CONTACTS = 400_000
EVENTS = 5_000_000
WHALE_EVENTS = 50_000
SMALL_TENANTS = 99
SMALL_CONTACTS = 200
SMALL_EVENTS_PER_CONTACT = 10
MERGE_PAIRS = 500
PAIR_EVENTS = 12
RESOLVE_CALLS = 2_000
SEARCH_SAMPLES = 30
SEARCH_REPEATS = 3
TIMELINE_CALLS = 500
TIMELINE_PAGE = 30  # what the contact page shows (contacts/views.py)
LOADERS = 2  # loading connections (the machine has 2 cores)
WHALE_K = 7  # the contact (of the big tenant) with the long timeline: it has all three identities

# --- the data's vocabulary --------------------------------------------------------------------------------

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
            "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = ("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉俊飞鑫波斌宇浩凯健琳婷雪欣怡佳晨子涵轩"
         "梓博文思雨萱嘉一诺可馨晓海建国志新春梅金荣小慧颖倩瑶")
ENGLISH = ("Lily", "Kevin", "Amy", "Jason", "Coco", "Tony", "Grace", "Leo", "Mia", "Eric", "Vicky", "Jack", "Cherry",
           "Sunny", "Annie", "David", "Echo", "Linda", "Peter", "Nina", "Sam", "Cindy", "Alex", "Judy", "Bella",
           "Andy", "Ivy", "Ken", "Zoe", "Ryan")
ENGLISH_TAILS = ("", "", "", " Wang", "_Z", "🌸", " Li", "2024", "～", " Chen", "🍀", ".L")
PHRASES = ("快乐每一天", "岁月静好", "追梦人", "小太阳", "简单", "阳光男孩", "微笑", "平安喜乐", "一路向北", "静待花开",
           "心如止水", "随遇而安", "知足常乐", "向日葵", "风轻云淡", "浅笑安然", "奋斗的蜗牛", "小确幸", "晴天", "开心果",
           "A专业代购", "花开富贵", "海阔天空", "糖糖", "木子", "若水", "清风徐来", "小鱼儿", "甜甜圈", "Mr.王")
REMARKS = ("VIP 客户", "上海门店", "北京朝阳店", "老客户 复购", "团购负责人", "企业客户", "直播间下单", "会员 金卡",
           "杭州西湖店", "需要回访", "深圳南山店", "喜欢新品", "宝妈 母婴", "投诉已处理", "广州天河店", "成都春熙路店",
           "双十一活动", "试用装已寄", "推荐人", "大客户 年采购")
MESSAGES = ("你好", "在吗？", "请问这个还有货吗", "多少钱", "发货了吗", "谢谢", "好的", "我想退货", "有优惠券吗",
            "什么时候到", "👍", "怎么购买", "会员怎么办理", "地址改一下", "可以开发票吗", "收到了，很满意",
            "Hi, is the store open today?", "门店几点关门", "[图片]", "好的，谢谢！")
CITIES = ("上海", "北京", "广州", "深圳", "杭州", "成都", "南京", "武汉", "西安", "苏州")
# Surnames by frequency: the first ones are far more common (王, 李, 张 ≈ 7 % each).
SURNAME_WEIGHTS = [71, 70, 67, 54, 45, 31, 22, 20, 20, 17] + [max(2, 16 - i // 6) for i in range(len(SURNAMES) - 10)]

OA_PREFIX, MP_PREFIX, WECOM_PREFIX, UNION_PREFIX = "o6_bmj", "oXk2Lw", "wmqfAs", "oQ6oR5"  # ids of one app share one


say = sayer("bench-identity")


def sql_text_array(values: Sequence[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def weighted(values: str, weights: Sequence[int]) -> list[str]:
    return [v for v, w in zip(values, weights, strict=True) for _ in range(w)]


# Deterministic pseudo-random helpers for the loading sessions: u(seed, salt) in [0, 1), pick from an array,
# and WeChat-looking ids (a 6-character app prefix, then 22 url-safe base64 characters).
HELPERS = [
    "CREATE FUNCTION pg_temp.u(s bigint, salt bigint) RETURNS float8 LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT ((hashint8extended(s, salt) >> 11) & 9007199254740991)::float8 / 9007199254740992.0 $$",
    "CREATE FUNCTION pg_temp.pick(a text[], s bigint, salt bigint) RETURNS text LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT a[1 + floor(pg_temp.u(s, salt) * cardinality(a))::int] $$",
    "CREATE FUNCTION pg_temp.wxid(prefix text, s bigint, salt bigint) RETURNS text LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT prefix || translate(encode(decode(md5(salt::text || ':' || s::text), 'hex'), 'base64'), '+/=', '-_') $$",
    f"CREATE FUNCTION pg_temp.nickname(s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT CASE "
    f"WHEN pg_temp.u(s, 11) < 0.10 THEN '' "
    f"WHEN pg_temp.u(s, 11) < 0.70 THEN pg_temp.pick({sql_text_array(weighted(SURNAMES, SURNAME_WEIGHTS))}, s, 12) "
    f"|| pg_temp.pick({sql_text_array(list(GIVEN))}, s, 13) "
    f"|| CASE WHEN pg_temp.u(s, 14) < 0.6 THEN pg_temp.pick({sql_text_array(list(GIVEN))}, s, 15) ELSE '' END "
    f"WHEN pg_temp.u(s, 11) < 0.85 THEN pg_temp.pick({sql_text_array(ENGLISH)}, s, 16) "
    f"|| pg_temp.pick({sql_text_array(ENGLISH_TAILS)}, s, 17) "
    f"ELSE pg_temp.pick({sql_text_array(PHRASES)}, s, 18) END $$",
    f"CREATE FUNCTION pg_temp.remark(s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT CASE "
    f"WHEN pg_temp.u(s, 21) >= 0.25 THEN '' "
    f"WHEN pg_temp.u(s, 22) < 0.3 THEN pg_temp.pick({sql_text_array(REMARKS)}, s, 23) || ' ' "
    f"|| pg_temp.pick({sql_text_array(list(SURNAMES[:30]))}, s, 24) "
    f"|| pg_temp.pick(ARRAY['女士', '先生', '经理', '老师'], s, 25) "
    f"ELSE pg_temp.pick({sql_text_array(REMARKS)}, s, 23) END $$",
    "CREATE FUNCTION pg_temp.phone(s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT CASE "
    "WHEN pg_temp.u(s, 31) >= 0.45 THEN '' "
    "ELSE '1' || pg_temp.pick(ARRAY['3', '3', '3', '5', '5', '8', '8', '7', '9'], s, 32) "
    "|| floor(pg_temp.u(s, 33) * 10)::int::text || lpad(floor(pg_temp.u(s, 34) * 100000000)::bigint::text, 8, '0') "
    "END $$",
    "CREATE FUNCTION pg_temp.unionid(s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS "
    f"$$ SELECT CASE WHEN pg_temp.u(s, 1) < 0.6 THEN pg_temp.wxid('{UNION_PREFIX}', s, 2) END $$",
    "CREATE FUNCTION pg_temp.first_seen(s bigint) RETURNS timestamptz LANGUAGE sql STABLE AS "
    "$$ SELECT now() - interval '1100 days' * pg_temp.u(s, 7) $$",
    f"CREATE FUNCTION pg_temp.event_kind(chn int, s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT CASE chn "
    f"WHEN 1 THEN pg_temp.pick({sql_text_array(['message_in'] * 11 + ['message_out'] * 5 + ['menu_click'] * 2 + ['scan', 'followed'])}, s, 42) "  # noqa: E501
    f"WHEN 2 THEN pg_temp.pick({sql_text_array(['mp_login'] * 8 + ['message_in'] * 6 + ['purchase'] * 4 + ['message_out'] * 2)}, s, 42) "  # noqa: E501
    f"ELSE pg_temp.pick({sql_text_array(['message_in'] * 9 + ['message_out'] * 9 + ['wecom_added'] * 2)}, s, 42) END $$",
    f"CREATE FUNCTION pg_temp.payload(kind text, s bigint) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT CASE kind "
    f"WHEN 'message_in' THEN jsonb_build_object('msg_type', 'text', 'Content', "
    f"pg_temp.pick({sql_text_array(MESSAGES)}, s, 43), 'MsgId', 7000000000000 + s) "
    f"WHEN 'message_out' THEN jsonb_build_object('msg_type', 'text', 'Content', "
    f"pg_temp.pick({sql_text_array(MESSAGES)}, s, 44), 'origin', 'agent') "
    f"WHEN 'menu_click' THEN jsonb_build_object('key', pg_temp.pick(ARRAY['MENU_SHOP', 'MENU_VIP', 'MENU_CS'], s, 45)) "
    f"WHEN 'scan' THEN jsonb_build_object('scene', 'store_' || floor(pg_temp.u(s, 46) * 50)::int) "
    f"WHEN 'followed' THEN jsonb_build_object('scene', 'ADD_SCENE_QR_CODE') "
    f"WHEN 'mp_login' THEN jsonb_build_object('source', 'mp_login') "
    f"WHEN 'purchase' THEN jsonb_build_object('order_id', 'SO' || s, 'amount_fen', "
    f"100 * (1 + floor(pg_temp.u(s, 47) * 2000)::int), 'items', jsonb_build_array(jsonb_build_object("
    f"'sku', 'SKU' || floor(pg_temp.u(s, 48) * 500)::int, 'qty', 1))) "
    f"ELSE jsonb_build_object('user_id', 'rep' || floor(pg_temp.u(s, 49) * 40)::int, 'state', 'spring_fair') END $$",
]


@dataclass
class Shape:
    """How much data one tenant gets, and where its rows' ids start (ids are given, not drawn, so every
    generated row can name the rows it points at)."""

    tenant: int
    contacts: int
    events: int
    whale_events: int
    pairs: int  # contacts made to be merged by unionid (twice: through resolve() and through raw SQL)
    contact_base: int = 0
    identity_base: int = 0
    event_base: int = 0

    @property
    def merged_away(self) -> int:
        return self.contacts // 100

    @property
    def contact_span(self) -> int:
        return self.contacts + self.merged_away + 2 * self.pairs

    @property
    def identity_span(self) -> int:
        return 3 * self.contacts + 2 * self.pairs

    @property
    def event_span(self) -> int:
        return self.events + self.whale_events + 2 * self.pairs * PAIR_EVENTS

    def seed(self, column: str) -> str:
        """A seed unique to (tenant, k): the same person gets the same name in every statement."""
        return f"({column}::bigint * 1000 + {self.tenant})"


def contact_sql(t: Shape, lo: int, hi: int) -> str:
    s = t.seed("k")
    return (
        "INSERT INTO contact (id, tenant, display_name, avatar_url, phone, remark, language, unionid, first_seen_at, "
        "last_interaction_at, last_purchase_at, merged_into, erased_at, created_at, updated_at) "
        f"SELECT {t.contact_base} + k, {t.tenant}, pg_temp.nickname({s}), "
        f"CASE WHEN pg_temp.u({s}, 8) < 0.8 THEN 'https://thirdwx.qlogo.cn/mmopen/vi_32/' "
        f"|| pg_temp.wxid('Q3auHgzw', {s}, 9) || '/132' ELSE '' END, pg_temp.phone({s}), pg_temp.remark({s}), "
        f"'zh_CN', pg_temp.unionid({s}), fs, "
        f"CASE WHEN pg_temp.u({s}, 3) < 0.85 THEN fs + (now() - fs) * pg_temp.u({s}, 4) END, "
        f"CASE WHEN pg_temp.u({s}, 5) < 0.3 THEN fs + (now() - fs) * pg_temp.u({s}, 6) END, NULL, NULL, fs, now() "
        f"FROM generate_series({lo}, {hi}) AS k, LATERAL (SELECT pg_temp.first_seen({s}) AS fs) AS f")


def merged_away_sql(t: Shape) -> str:
    """Contacts merged into another one earlier: still rows, never listed."""
    s = t.seed(f"(k + {10 * t.contacts})")
    return (
        "INSERT INTO contact (id, tenant, display_name, avatar_url, phone, remark, language, unionid, first_seen_at, "
        "last_interaction_at, merged_into, created_at, updated_at) "
        f"SELECT {t.contact_base + t.contacts} + k, {t.tenant}, pg_temp.nickname({s}), '', pg_temp.phone({s}), '', "
        f"'zh_CN', NULL, pg_temp.first_seen({s}), NULL, {t.contact_base} + 1 + (k * 7919) % {t.contacts}, now(), now() "
        f"FROM generate_series(1, {t.merged_away}) AS k")


def identity_sql(t: Shape, lo: int, hi: int) -> str:
    s = t.seed("k")
    avatar = f"'https://thirdwx.qlogo.cn/mmopen/vi_32/' || pg_temp.wxid('Q3auHgzw', {s}, 9) || '/132'"
    profile = (
        f"CASE ch.n WHEN 1 THEN jsonb_build_object('nickname', pg_temp.nickname({s}), 'sex', "
        f"floor(pg_temp.u({s}, 51) * 3)::int, 'city', pg_temp.pick({sql_text_array(CITIES)}, {s}, 52), "
        f"'province', '', 'country', '中国', 'language', 'zh_CN', 'subscribe_scene', 'ADD_SCENE_QR_CODE', "
        f"'headimgurl', {avatar}) "
        f"WHEN 2 THEN jsonb_build_object('nickName', pg_temp.nickname({s}), 'avatarUrl', {avatar}) "
        f"ELSE jsonb_build_object('name', pg_temp.nickname({s}), 'type', 1, 'gender', "
        f"floor(pg_temp.u({s}, 51) * 3)::int, 'corp_name', '') END")
    return (
        "INSERT INTO identity (id, tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, "
        "profile, enriched_at, erased_at) "
        f"SELECT {t.identity_base} + (ch.n - 1) * {t.contacts} + k, {t.tenant}, {t.contact_base} + k, ch.name, "
        f"pg_temp.wxid(ch.prefix, {s}, ch.salt), pg_temp.unionid({s}), fs, "
        f"fs + (now() - fs) * pg_temp.u({s}, 60 + ch.n), {profile}, "
        f"CASE WHEN ch.n <> 2 THEN fs + (now() - fs) * pg_temp.u({s}, 64) END, NULL "
        f"FROM generate_series({lo}, {hi}) AS k, LATERAL (SELECT pg_temp.first_seen({s}) AS fs) AS f, "
        f"(VALUES (1, 'oa', '{OA_PREFIX}', 31), (2, 'mp', '{MP_PREFIX}', 32), (3, 'wecom', '{WECOM_PREFIX}', 33)) "
        "AS ch(n, name, prefix, salt) "
        "WHERE ch.n = 1 OR (ch.n = 2 AND k % 4 <> 0) OR (ch.n = 3 AND k % 4 <> 1)")


def _event_select(t: Shape, g_lo: int, g_hi: int, k_expr: str) -> str:
    """Events g_lo..g_hi for contact number k_expr (an expression of g); the channel is drawn, then taken
    back to the Official Account when the contact has no identity on it."""
    s = t.seed("g")
    return (
        f"SELECT {t.event_base} + g, {t.tenant}, {t.contact_base} + k, {t.identity_base} + (chn - 1) * {t.contacts} + k, "
        f"at, kind, (ARRAY['oa', 'mp', 'wecom'])[chn], pg_temp.payload(kind, {s}), "
        f"'wechat:' || ({t.event_base} + g), at "
        f"FROM generate_series({g_lo}, {g_hi}) AS g, LATERAL (SELECT {k_expr} AS k) AS a, "
        f"LATERAL (SELECT CASE WHEN pg_temp.u({s}, 41) < 0.5 THEN 1 WHEN pg_temp.u({s}, 41) < 0.75 THEN 2 ELSE 3 END "
        f"AS want) AS b, "
        f"LATERAL (SELECT CASE WHEN (want = 2 AND k % 4 = 0) OR (want = 3 AND k % 4 = 1) THEN 1 ELSE want END AS chn) "
        f"AS c, LATERAL (SELECT pg_temp.event_kind(chn, {s}) AS kind, "
        f"now() - interval '700 days' * pg_temp.u({s}, 40) AS at) AS d")


EVENT_COLUMNS = ("INSERT INTO timeline_event (id, tenant, contact, identity, occurred_at, kind, channel, payload, "
                 "source_key, created_at) ")


def event_sql(t: Shape, lo: int, hi: int) -> str:
    """Most events go to the first contacts (a long tail): contact k's share falls off as k grows, and
    each contact's events are one run of g, so the rows arrive in page-index order."""
    k_expr = f"1 + LEAST({t.contacts - 1}, floor({t.contacts} * power((g - 0.5) / {t.events}, 1.35))::int)"
    return EVENT_COLUMNS + _event_select(t, lo, hi, k_expr)


def whale_sql(t: Shape, lo: int, hi: int) -> str:
    return EVENT_COLUMNS + _event_select(t, t.events + lo, t.events + hi, str(WHALE_K))


def pairs_sql(t: Shape) -> list[str]:
    """2 × pairs contacts known only through a Mini Program openid without a unionid, with a few events
    each. The bench later tells Siyu their unionid, which a contact of the tenant already holds."""
    n = 2 * t.pairs
    first_contact = t.contact_base + t.contacts + t.merged_away
    first_identity = t.identity_base + 3 * t.contacts
    first_event = t.event_base + t.events + t.whale_events
    s = t.seed(f"(j + {20 * t.contacts})")
    return [
        "INSERT INTO contact (id, tenant, display_name, avatar_url, phone, remark, language, unionid, first_seen_at, "
        "last_interaction_at, created_at, updated_at) "
        f"SELECT {first_contact} + j, {t.tenant}, pg_temp.nickname({s}), '', '', '', 'zh_CN', NULL, "
        f"pg_temp.first_seen({s}), now() - interval '1 day', now(), now() FROM generate_series(1, {n}) AS j",
        "INSERT INTO identity (id, tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, profile) "
        f"SELECT {first_identity} + j, {t.tenant}, {first_contact} + j, 'mp', pg_temp.wxid('{MP_PREFIX}', {s}, 77), "
        f"NULL, pg_temp.first_seen({s}), now() - interval '1 day', jsonb_build_object('nickName', pg_temp.nickname({s})) "
        f"FROM generate_series(1, {n}) AS j",
        EVENT_COLUMNS +
        f"SELECT {first_event} + (j - 1) * {PAIR_EVENTS} + m, {t.tenant}, {first_contact} + j, {first_identity} + j, "
        "now() - interval '1 hour' * m, CASE WHEN m % 3 = 0 THEN 'purchase' ELSE 'mp_login' END, 'mp', "
        "jsonb_build_object('source', 'mp_login'), "
        f"'wechat:' || ({first_event} + (j - 1) * {PAIR_EVENTS} + m), now() "
        f"FROM generate_series(1, {n}) AS j, generate_series(1, {PAIR_EVENTS}) AS m",
    ]


# The WeCom rep who added each WeCom identity, in every tenant.
OWNER_SQL = (
    "INSERT INTO owner (tenant, contact, identity, staff_userid, state, remark, description, tags, added_at) "
    "SELECT i.tenant, i.contact, i.id, 'rep' || lpad((i.id % 40)::text, 2, '0'), "
    "(ARRAY['', 'spring_fair', 'store_qr', 'live'])[1 + (i.id % 4)::int], '', '', '[]'::jsonb, i.first_seen_at "
    "FROM identity i WHERE i.channel = 'wecom'")


# --- loading ---------------------------------------------------------------------------------------------------

LOADED_TABLES = ("contact", "identity", "timeline_event", "owner")


@dataclass
class Step:
    table: str
    rows: int  # expected rows (for the rate)
    sql: str


async def run_steps(dsn: str, steps: list[Step], label: str) -> None:
    """Run the statements on LOADERS connections at once, printing rows/s per table as they finish."""
    import asyncpg

    queue: asyncio.Queue[Step] = asyncio.Queue()
    for step in steps:
        queue.put_nowait(step)
    total = sum(s.rows for s in steps)
    done = 0
    start = time.perf_counter()
    by_table: dict[str, list[float]] = {}

    async def worker() -> None:
        nonlocal done
        conn = await asyncpg.connect(dsn)
        try:
            # The generated rows point only at rows generated before them (checked after the load), so the
            # loading sessions skip the FK triggers; CHECK constraints still apply.
            await conn.execute("SET session_replication_role = replica; SET synchronous_commit = off; "
                               "SET maintenance_work_mem = '512MB'; SET work_mem = '64MB'")
            for helper in HELPERS:
                await conn.execute(helper)
            while not queue.empty():
                step = queue.get_nowait()
                t0 = time.perf_counter()
                await conn.execute(step.sql)
                spent = time.perf_counter() - t0
                stats = by_table.setdefault(step.table, [0.0, 0.0])
                stats[0] += step.rows
                stats[1] += spent
                done += step.rows
                elapsed = time.perf_counter() - start
                if step.rows <= 1:  # DDL
                    say(f"  {label}: {step.table:<36} {spent:6.1f} s")
                else:
                    say(f"  {label}: {step.table:<15} {done:>10,}/{total:,} rows  ({step.rows / spent:>9,.0f} "
                        f"rows/s this step, {done / elapsed:>9,.0f} rows/s overall)")
        finally:
            await conn.close()

    await asyncio.gather(*[worker() for _ in range(LOADERS)])


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size - 1)) for lo in range(1, n + 1, size)]


@dataclass
class Dataset:
    big: Shape
    small: list[Shape]
    tenants: list[int]
    counts: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0


async def load(dsn: str, scale: float) -> Dataset:
    import asyncpg

    from siyu.tenants import services as tenants

    say("creating 100 tenants through the tenants service…")
    ids = []
    for n in range(1 + SMALL_TENANTS):
        t = await tenants.do_create_tenant(tenants.Actor.cli(), {"slug": f"brand{n:03d}", "name": f"品牌 {n:03d}"})
        ids.append(int(t.id))
    big = Shape(ids[0], max(400, int(CONTACTS * scale)), max(4_000, int(EVENTS * scale)),
                max(500, int(WHALE_EVENTS * scale)), max(20, int(MERGE_PAIRS * scale)))
    small = [Shape(tid, max(20, int(SMALL_CONTACTS * scale)), max(200, int(SMALL_CONTACTS * SMALL_EVENTS_PER_CONTACT
                                                                           * scale)), 0, 0) for tid in ids[1:]]
    c = i = e = 0
    for shape in [big, *small]:
        shape.contact_base, shape.identity_base, shape.event_base = c, i, e
        c, i, e = c + shape.contact_span, i + shape.identity_span, e + shape.event_span
    data = Dataset(big, small, ids)

    conn = await asyncpg.connect(dsn)
    try:
        indexes = await conn.fetch(
            "SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
            "AND i.tablename = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname) ORDER BY i.tablename, i.indexname", list(LOADED_TABLES))
        say(f"dropping {len(indexes)} secondary indexes for the load (recreated from their definitions after)…")
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
    finally:
        await conn.close()

    t0 = time.perf_counter()
    say(f"loading the big tenant: {big.contacts:,} contacts, ~{int(big.contacts * 2.5):,} identities, "
        f"{big.events + big.whale_events:,} events ({big.whale_events:,} on one contact)…")
    steps = [Step("contact", hi - lo + 1, contact_sql(big, lo, hi)) for lo, hi in chunks(big.contacts, 50_000)]
    steps.append(Step("contact", big.merged_away, merged_away_sql(big)))
    steps += [Step("identity", int((hi - lo + 1) * 2.5), identity_sql(big, lo, hi))
              for lo, hi in chunks(big.contacts, 40_000)]
    await run_steps(dsn, steps, "contacts")
    steps = [Step("timeline_event", hi - lo + 1, event_sql(big, lo, hi)) for lo, hi in chunks(big.events, 250_000)]
    steps += [Step("timeline_event", hi - lo + 1, whale_sql(big, lo, hi))
              for lo, hi in chunks(big.whale_events, 25_000)]
    await run_steps(dsn, steps, "events")
    pair_sql = pairs_sql(big)
    steps = [Step("contact", 2 * big.pairs, pair_sql[0])]
    await run_steps(dsn, steps, "merge pairs")
    steps = [Step("identity", 2 * big.pairs, pair_sql[1]), Step("timeline_event", 2 * big.pairs * PAIR_EVENTS,
                                                                   pair_sql[2])]
    await run_steps(dsn, steps, "merge pairs")
    say(f"loading {len(small)} small tenants ({small[0].contacts} contacts, {small[0].events} events each)…")
    await run_steps(dsn, [Step("contact", t.contacts, contact_sql(t, 1, t.contacts)) for t in small]
                    + [Step("contact", t.merged_away, merged_away_sql(t)) for t in small if t.merged_away], "small")
    await run_steps(dsn, [Step("identity", int(t.contacts * 2.5), identity_sql(t, 1, t.contacts)) for t in small],
                    "small")
    await run_steps(dsn, [Step("timeline_event", t.events, event_sql(t, 1, t.events)) for t in small], "small")
    await run_steps(dsn, [Step("owner", sum(int(t.contacts * 0.75) for t in [big, *small]), OWNER_SQL)], "owners")

    say("recreating the secondary indexes…")
    await run_steps(dsn, [Step(ix["indexname"], 1, ix["indexdef"]) for ix in indexes], "indexes")
    conn = await asyncpg.connect(dsn)
    try:
        again = await conn.fetch(
            "SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
            "AND i.tablename = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname) ORDER BY i.tablename, i.indexname", list(LOADED_TABLES))
        if [tuple(r) for r in again] != [tuple(r) for r in indexes]:
            raise SystemExit("the recreated indexes differ from the migrations' ones")
        say("checking references (the load skipped FK triggers)…")
        dangling = await conn.fetchval(
            "SELECT (SELECT count(*) FROM identity i LEFT JOIN contact c ON c.id = i.contact AND c.tenant = i.tenant "
            "WHERE c.id IS NULL) + (SELECT count(*) FROM timeline_event e LEFT JOIN contact c ON c.id = e.contact "
            "AND c.tenant = e.tenant WHERE c.id IS NULL) + (SELECT count(*) FROM timeline_event e LEFT JOIN identity i "
            "ON i.id = e.identity AND i.tenant = e.tenant AND i.contact = e.contact AND i.channel = e.channel "
            "WHERE e.identity IS NOT NULL AND i.id IS NULL) + (SELECT count(*) FROM contact m LEFT JOIN contact s "
            "ON s.id = m.merged_into AND s.tenant = m.tenant AND s.merged_into IS NULL "
            "WHERE m.merged_into IS NOT NULL AND s.id IS NULL) + (SELECT count(*) FROM identity i JOIN contact c "
            "ON c.id = i.contact WHERE c.merged_into IS NOT NULL)")
        if dangling:
            raise SystemExit(f"{dangling} generated rows point at nothing (or at a merged-away contact)")
        for table in LOADED_TABLES:
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT max(id) FROM {table}))")
        data.load_seconds = time.perf_counter() - t0
        say("VACUUM ANALYZE…")
        t1 = time.perf_counter()
        for table in LOADED_TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        await conn.execute("CHECKPOINT")
        say(f"  {time.perf_counter() - t1:.1f} s")
        for table in (*LOADED_TABLES, "tenant"):
            data.counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        data.counts["big tenant contacts (live)"] = int(await conn.fetchval(
            "SELECT count(*) FROM contact WHERE tenant = $1 AND merged_into IS NULL", big.tenant))
        data.counts["big tenant identities"] = int(await conn.fetchval(
            "SELECT count(*) FROM identity WHERE tenant = $1", big.tenant))
        data.counts["big tenant identities with a unionid"] = int(await conn.fetchval(
            "SELECT count(*) FROM identity WHERE tenant = $1 AND unionid IS NOT NULL", big.tenant))
        data.counts["big tenant events"] = int(await conn.fetchval(
            "SELECT count(*) FROM timeline_event WHERE tenant = $1", big.tenant))
        data.counts["events of the longest timeline"] = int(await conn.fetchval(
            "SELECT count(*) FROM timeline_event WHERE tenant = $1 AND contact = $2", big.tenant,
            big.contact_base + WHALE_K))
    finally:
        await conn.close()
    return data


# --- measuring ---------------------------------------------------------------------------------------------------









# The statements resolve() sends (contacts/resolve.py `_upsert`), sent bare for the baseline.
UPSERT_SQL = (
    "UPDATE identity AS i SET last_seen_at = GREATEST(i.last_seen_at, COALESCE($4::timestamptz, i.last_seen_at)), "
    "unionid = COALESCE($5, i.unionid), "
    "erased_at = CASE WHEN $4::timestamptz > i.last_seen_at THEN NULL ELSE i.erased_at END, "
    "profile = CASE WHEN $6::jsonb IS NULL THEN i.profile ELSE i.profile || $6::jsonb END "
    "FROM contact AS c WHERE i.tenant = $1 AND i.channel = $2 AND i.external_id = $3 AND c.id = i.contact "
    "RETURNING i.id, i.contact, i.unionid, c.unionid AS contact_unionid")
NEW_CONTACT_SQL = ("INSERT INTO contact (tenant, unionid, first_seen_at, created_at, updated_at) "
                   "VALUES ($1, $2, COALESCE($3::timestamptz, now()), now(), now()) RETURNING id")
NEW_IDENTITY_SQL = (
    "INSERT INTO identity (tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, profile) "
    "VALUES ($1, $2, $3, $4, $5, COALESCE($6::timestamptz, now()), COALESCE($6::timestamptz, now()), "
    "COALESCE($7::jsonb, '{}'::jsonb)) ON CONFLICT (tenant, channel, external_id) DO NOTHING RETURNING id")
UNION_HOLDER_SQL = "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL FOR SHARE"
TIMELINE_SQL = ("SELECT id, contact, identity, occurred_at, kind, channel, payload::text AS payload, source_key "
                "FROM timeline_event WHERE tenant = $1 AND contact = $2 ORDER BY occurred_at DESC, id DESC LIMIT $3")


async def bench_resolve(raw: Any, data: Dataset, scale: float) -> list[Row]:
    from siyu.contacts.resolve import resolve

    tid = data.big.tenant
    n = max(100, int(RESOLVE_CALLS * min(1.0, scale * 10)))
    known = await raw.fetch(
        "SELECT channel, external_id, unionid FROM identity TABLESAMPLE SYSTEM (5) WHERE tenant = $1 LIMIT $2",
        tid, 2 * n)
    known = [dict(r) for r in known]
    random.Random(1).shuffle(known)
    # Contacts with a unionid and no Mini Program identity yet: their first MP login joins them.
    joiners = [dict(r) for r in await raw.fetch(
        "SELECT c.unionid FROM contact c WHERE c.tenant = $1 AND c.id % 4 = 0 AND c.unionid IS NOT NULL "
        "AND c.merged_into IS NULL AND c.id > $2 AND NOT EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant "
        "AND i.contact = c.id AND i.channel = 'mp') ORDER BY c.id DESC LIMIT $3", tid,
        data.big.contact_base + data.big.contacts // 2, 2 * n)]  # the merge bench takes the lowest ones
    now = datetime.now(UTC)
    profile = {"nickname": "新朋友", "subscribe_scene": "ADD_SCENE_QR_CODE"}
    profile_json = json.dumps(profile, ensure_ascii=False)

    def existing(i: int) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
        a, b = known[2 * i], known[2 * i + 1]
        return (lambda: resolve(tid, a["channel"], a["external_id"], a["unionid"], now, None),
                lambda: raw.fetchrow(UPSERT_SQL, tid, b["channel"], b["external_id"], now, b["unionid"], None))

    async def raw_new(external_id: str, unionid: str | None, channel: str) -> None:
        async with raw.transaction():
            await raw.fetchrow(UPSERT_SQL, tid, channel, external_id, now, unionid, profile_json)
            holder = await raw.fetchrow(UNION_HOLDER_SQL, tid, unionid) if unionid else None
            contact = holder["id"] if holder else (await raw.fetchrow(NEW_CONTACT_SQL, tid, unionid, now))["id"]
            await raw.fetchrow(NEW_IDENTITY_SQL, tid, contact, channel, external_id, unionid, now, profile_json)

    def new(i: int) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
        return (lambda: resolve(tid, "oa", f"{OA_PREFIX}NewSiyu{i:016d}", None, now, profile),
                lambda: raw_new(f"{OA_PREFIX}NewRawS{i:016d}", None, "oa"))

    def joining(i: int) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
        a, b = joiners[2 * i]["unionid"], joiners[2 * i + 1]["unionid"]
        return (lambda: resolve(tid, "mp", f"{MP_PREFIX}JoinSiyu{i:014d}", a, now, profile),
                lambda: raw_new(f"{MP_PREFIX}JoinRawS{i:014d}", b, "mp"))

    # What any write costs on this machine: one row, one commit (the WAL flush). No code goes below it.
    await raw.execute("CREATE TABLE bench_commit_floor (id bigserial PRIMARY KEY, at timestamptz)")
    floor = [await timed(lambda: raw.execute("INSERT INTO bench_commit_floor (at) VALUES (now())"))
             for _ in range(n)]
    await raw.execute("DROP TABLE bench_commit_floor")
    rows = [Row("a bare one-row INSERT + COMMIT p50 (the disk's floor)", "", None, pct(floor, 50), "ms", None),
            Row("a bare one-row INSERT + COMMIT p99 (the disk's floor)", "", None, pct(floor, 99), "ms", None)]
    for label, make, count in (("known identity", existing, len(known) // 2), ("new identity", new, n),
                               ("new identity, known unionid", joining, len(joiners) // 2)):
        count = min(n, count)
        warm = max(10, count // 20)  # prepared statements and pool connections first
        await interleaved([make(i) for i in range(warm)])
        say(f"  resolve(), {label}: {count - warm} calls each…")
        service, bare = await interleaved([make(i) for i in range(warm, count)])
        rows.append(Row(f"resolve p50, {label}", "", pct(service, 50), pct(bare, 50), "ms", None))
        rows.append(Row(f"resolve p99, {label}", "<= 5 ms", pct(service, 99), pct(bare, 99), "ms",
                        pct(service, 99) <= 5))
    return rows


async def bench_merges(raw: Any, data: Dataset) -> list[Row]:
    from siyu.contacts.resolve import resolve

    t = data.big
    tid = t.tenant
    first_contact = t.contact_base + t.contacts + t.merged_away
    first_identity = t.identity_base + 3 * t.contacts
    holders = [dict(r) for r in await raw.fetch(
        "SELECT c.id, c.unionid FROM contact c WHERE c.tenant = $1 AND c.id % 4 = 0 AND c.unionid IS NOT NULL "
        "AND c.merged_into IS NULL AND c.id <= $2 ORDER BY c.id LIMIT $3", tid, t.contact_base + t.contacts,
        2 * t.pairs)]
    strays = [dict(r) for r in await raw.fetch(
        "SELECT i.id, i.contact, i.external_id FROM identity i WHERE i.tenant = $1 AND i.id > $2 AND i.id <= $3 "
        "ORDER BY i.id", tid, first_identity, first_identity + 2 * t.pairs)]
    assert len(holders) == len(strays) == 2 * t.pairs and all(s["contact"] > first_contact for s in strays)
    before = int(await raw.fetchval("SELECT count(*) FROM contact_merge WHERE tenant = $1", tid))

    say(f"  unionid merges through resolve(): {t.pairs} pairs…")
    t0 = time.perf_counter()
    for holder, stray in zip(holders[: t.pairs], strays[: t.pairs], strict=True):
        merged_into = await resolve(tid, "mp", stray["external_id"], holder["unionid"], datetime.now(UTC))
        assert merged_into.contact_id == holder["id"]
    service_rate = t.pairs / (time.perf_counter() - t0)
    merges = int(await raw.fetchval("SELECT count(*) FROM contact_merge WHERE tenant = $1", tid)) - before
    moved = int(await raw.fetchval(
        "SELECT count(*) FROM timeline_event WHERE tenant = $1 AND contact = ANY($2::int[]) AND identity = ANY($3::int[])",
        tid, [h["id"] for h in holders[: t.pairs]], [s["id"] for s in strays[: t.pairs]]))
    if merges != t.pairs or moved != t.pairs * PAIR_EVENTS:
        raise SystemExit(f"expected {t.pairs} merges moving {t.pairs * PAIR_EVENTS} events, got {merges} / {moved}")

    say(f"  the same merges as bare UPDATEs: {t.pairs} pairs…")
    t0 = time.perf_counter()
    for holder, stray in zip(holders[t.pairs:], strays[t.pairs:], strict=True):
        async with raw.transaction():
            await raw.execute("SELECT 1 FROM contact WHERE tenant = $1 AND id = ANY($2::int[]) ORDER BY id "
                              "FOR NO KEY UPDATE", tid, sorted([holder["id"], stray["contact"]]))
            await raw.execute("UPDATE identity SET contact = $3, unionid = $4 WHERE tenant = $1 AND contact = $2",
                              tid, stray["contact"], holder["id"], holder["unionid"])
            await raw.execute("UPDATE timeline_event SET contact = $3 WHERE tenant = $1 AND contact = $2",
                              tid, stray["contact"], holder["id"])
            await raw.execute("UPDATE contact SET merged_into = $3 WHERE tenant = $1 AND id = $2",
                              tid, stray["contact"], holder["id"])
    raw_rate = t.pairs / (time.perf_counter() - t0)
    return [Row(f"unionid merges/s (sequential, {PAIR_EVENTS} events move)", "", service_rate, raw_rate, "/s",
                None)]


async def bench_timeline(raw: Any, data: Dataset, scale: float) -> list[Row]:
    from siyu.timeline import services as timeline

    tid, whale = data.big.tenant, data.big.contact_base + WHALE_K
    n = max(100, int(TIMELINE_CALLS * min(1.0, scale * 10)))
    say(f"  timeline first page of the longest timeline: {n} calls each…")
    make = (lambda: timeline.page(tid, whale, limit=TIMELINE_PAGE),
            lambda: raw.fetch(TIMELINE_SQL, tid, whale, TIMELINE_PAGE + 1))
    await interleaved([make] * 20)
    service, bare = await interleaved([make] * n)
    kinds = (lambda: timeline.page(tid, whale, limit=TIMELINE_PAGE, kinds=["purchase"]),
             lambda: raw.fetch(TIMELINE_SQL.replace("ORDER BY", "AND kind = ANY($4::text[]) ORDER BY"), tid, whale,
                               TIMELINE_PAGE + 1, ["purchase"]))
    await interleaved([kinds] * 20)
    k_service, k_bare = await interleaved([kinds] * n)
    events = data.counts["events of the longest timeline"]
    return [Row(f"timeline first page p95 ({events:,} events)", "<= 20 ms", pct(service, 95), pct(bare, 95), "ms",
                pct(service, 95) <= 20),
            Row("timeline first page p95, purchases only", "<= 20 ms", pct(k_service, 95), pct(k_bare, 95), "ms",
                pct(k_service, 95) <= 20)]


async def search_queries(raw: Any, data: Dataset) -> dict[str, list[str]]:
    """Real values from the big tenant, SEARCH_SAMPLES of each kind."""
    tid = data.big.tenant
    n = SEARCH_SAMPLES

    async def values(sql: str, *args: Any) -> list[str]:
        return [r[0] for r in await raw.fetch(sql, tid, *args)]

    live = "tenant = $1 AND merged_into IS NULL"
    names = await values(f"SELECT display_name FROM contact TABLESAMPLE SYSTEM (10) WHERE {live} "
                         "AND display_name ~ '^[一-龥]{3}$' LIMIT $2", n)
    remarks = await values(f"SELECT DISTINCT split_part(remark, ' ', 1) FROM contact WHERE {live} AND remark <> '' "
                           "LIMIT $2", n)
    phones = await values(f"SELECT phone FROM contact TABLESAMPLE SYSTEM (10) WHERE {live} AND phone <> '' LIMIT $2", n)
    ids = {ch: await values("SELECT external_id FROM identity TABLESAMPLE SYSTEM (10) WHERE tenant = $1 "
                            "AND channel = $2 LIMIT $3", ch, n) for ch in ("oa", "mp", "wecom")}
    unionids = await values("SELECT unionid FROM identity TABLESAMPLE SYSTEM (10) WHERE tenant = $1 "
                            "AND unionid IS NOT NULL LIMIT $2", n)
    return {
        "list, no query": [""] * n,
        "name fragment, 2 Chinese chars": [name[1:] for name in names],
        "full Chinese name": names,
        "surname, 1 Chinese char": [name[0] for name in names],
        "remark word": [r[:2] if len(r) > 3 and not r.isascii() else r for r in remarks],
        "phone prefix, 7 digits": [p[:7] for p in phones],
        "full phone": phones,
        "full openid (OA / MP)": ids["oa"][: n // 2] + ids["mp"][: n - n // 2],
        "openid prefix, 12 chars": [i[:12] for i in ids["oa"]],
        "full unionid": unionids,
        "full external_userid": ids["wecom"],
        "no match": [f"查无此人{i}" if i % 2 else f"zz{i:04d}qq" for i in range(n)],
        # What active search sends after the first keystroke: most rows match, or every id does ("o", "w").
        "first keystroke, 1 letter or digit": [c for _ in range(n) for c in "aeno18wi"][:n],
    }


async def bench_search(raw: Any, data: Dataset) -> list[Row]:
    from siyu.contacts import search

    tid = data.big.tenant
    queries = await search_queries(raw, data)
    # As contacts.search plans its statement: for the values each time, not one generic plan.
    await raw.execute("SET plan_cache_mode = force_custom_plan")
    rows = []
    all_service: list[float] = []
    all_raw: list[float] = []
    for kind, values in queries.items():
        def make(q: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
            sql, args = search.list_query(tid, q, None, None, None, search.PAGE_SIZE)
            return lambda: search.search(tid, q), lambda: raw.fetch(sql, *args)

        await interleaved([make(q) for q in values[:5]])
        service, bare = await interleaved([make(q) for q in values * SEARCH_REPEATS])
        found = await search.search(tid, values[0])
        all_service += service
        all_raw += bare
        rows.append(Row(f"search p95: {kind} ({len(found.contacts)}{'+' if found.next_cursor else ''} hits)",
                        "<= 50 ms", pct(service, 95), pct(bare, 95), "ms", pct(service, 95) <= 50))
    rows.append(Row("search p95, all kinds together", "<= 50 ms", pct(all_service, 95), pct(all_raw, 95), "ms",
                    pct(all_service, 95) <= 50))

    # The JSON API's lookup by any WeChat id (GET /api/v1/contacts?identity=…).
    from siyu.contacts import lookup

    ids = queries["full openid (OA / MP)"] + queries["full unionid"] + queries["full external_userid"]
    lookup_sql = ("SELECT DISTINCT coalesce(c.merged_into, c.id) AS id FROM contact c WHERE c.tenant = $1 AND c.id IN ("
                  "SELECT contact FROM identity WHERE tenant = $1 AND external_id = $2 UNION ALL "
                  "SELECT contact FROM identity WHERE tenant = $1 AND unionid = $2 UNION ALL "
                  "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2) ORDER BY 1")

    def by_id(value: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
        return lambda: lookup.find_by_identity(tid, value), lambda: raw.fetch(lookup_sql, tid, value)

    await raw.execute("RESET plan_cache_mode")
    await interleaved([by_id(v) for v in ids[:5]])
    service, bare = await interleaved([by_id(v) for v in ids * SEARCH_REPEATS])
    rows.append(Row("API lookup by openid / unionid / external_userid p95", "", pct(service, 95), pct(bare, 95), "ms",
                    None))
    return rows


async def sizes(raw: Any) -> list[str]:
    total = await raw.fetchval("SELECT pg_database_size(current_database())")
    lines = [f"database size: {total / 2**20:,.0f} MiB"]
    tables = await raw.fetch(
        "SELECT c.relname, pg_table_size(c.oid) AS heap, pg_indexes_size(c.oid) AS idx FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
        "ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 6")
    lines.append("largest tables (table incl. TOAST + its indexes):")
    lines += [f"  {r['relname']:<22} {r['heap'] / 2**20:>8,.0f} MiB + {r['idx'] / 2**20:>7,.0f} MiB indexes"
              for r in tables]
    indexes = await raw.fetch(
        "SELECT c.relname, t.relname AS tab, pg_relation_size(c.oid) AS size FROM pg_class c "
        "JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "ORDER BY pg_relation_size(c.oid) DESC LIMIT 12")
    lines.append("largest indexes:")
    lines += [f"  {r['relname']:<34} on {r['tab']:<15} {r['size'] / 2**20:>7,.0f} MiB" for r in indexes]
    return lines


async def main_async(scale: float) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="siyu-bench-identity-"))
    os.environ.update({"SIYU_DATA_DIR": str(tmp / "data"), "SIYU_ENV": "development", "SIYU_LOG_LEVEL": "WARNING",
                       "PICCOLO_CONF": "siyu.piccolo_conf"})
    for var in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    from siyu.core.embedded import start_postgres, stop_postgres

    started = time.perf_counter()
    say(f"scale {scale:g}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPUs {os.cpu_count()}")
    keep = os.environ.get("BENCH_KEEP") == "1"  # leave the server and its data for a look afterwards
    say("starting embedded PostgreSQL…")
    os.environ["DATABASE_URL"] = dsn = start_postgres(tmp / "pg", cleanup_mode=None if keep else "delete")
    try:
        import asyncpg

        from siyu.core import db

        with contextlib.redirect_stdout(io.StringIO()):  # Piccolo narrates every migration
            await db.migrate()
        await db.start_pool(max_size=4)
        data = await load(dsn, scale)
        raw = await asyncpg.connect(dsn)
        try:
            say("measuring (Siyu's call and the bare SQL alternate, on the same data)…")
            rows = await bench_resolve(raw, data, scale)
            rows += await bench_merges(raw, data)
            rows += await bench_timeline(raw, data, scale)
            rows += await bench_search(raw, data)
            size_lines = await sizes(raw)
            version = await raw.fetchval("SHOW server_version")
        finally:
            await raw.close()
        await db.close_pool()

        print()
        print(f"PostgreSQL {version} (embedded, as `make run` starts it), scale {scale:g}, CPUs {os.cpu_count()}, "
              f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("data: " + ", ".join(f"{k} {v:,}" for k, v in data.counts.items()))
        print(f"loaded in {data.load_seconds:.0f} s (rows, indexes, checks)")
        print()
        print(f"{'figure':<58} {'target':<9} {'Siyu':>16} {'raw SQL':>14} {'ratio':>6}  result")
        for row in rows:
            print(row.line())
        print()
        print("ratio = Siyu / raw SQL (for merges/s: Siyu's rate / the bare UPDATEs' rate)")
        for line in size_lines:
            print(line)
        print(f"total run {time.perf_counter() - started:.0f} s")
        missed = [r.figure for r in rows if r.met is False]
        print(f"targets: {'all met' if not missed else 'NOT met: ' + '; '.join(missed)}")
        return 0  # the data and the merges were checked on the way (SystemExit otherwise); figures are figures
    finally:
        if keep:
            pid = (tmp / "pg" / "postmaster.pid").read_text().split()[0]
            say(f"kept: psql '{dsn}'; stop it with `kill -INT {pid}`, then rm -r {tmp}")
        else:
            stop_postgres()
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    if not 0 < scale <= 1:
        raise SystemExit("BENCH_SCALE must be in (0, 1]")
    sys.exit(asyncio.run(main_async(scale)))


if __name__ == "__main__":
    main()

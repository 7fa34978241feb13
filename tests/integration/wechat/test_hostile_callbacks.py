"""What an outsider (or a holder of a plain-mode Token) can post to the callback URLs: nothing is built
from an unsigned body, every parse is bounded (depth, element count) and refuses with 400, never 500; and
one customer's message that PostgreSQL cannot store as it is never fails another tenant's callback."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.tenants import services as tenants
from siyu.wechat import ingest, protocol
from siyu.wechat.ingest import Ingestor
from siyu.wechat.protocol import Account, Normalized
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, Client, TenantFixture
from tests.wechat_payloads import Sender, sign, text

REPEATED = b"<xml>" + b"<a/>" * 262_000 + b"</xml>"  # the 1 MiB body that froze the web process


async def link(tenant: TenantFixture, kind: str, data: dict[str, str]) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), tenant.id, kind, data)


@pytest.fixture
async def safe_oa(acme: TenantFixture) -> Sender:
    await link(acme, "oa", OA)
    return Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")


@pytest.fixture
async def plain_oa(acme: TenantFixture) -> Sender:
    await link(acme, "oa", {**OA, "mode": "plain"})
    return Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")


@pytest.fixture
async def mp(acme: TenantFixture) -> Sender:
    await link(acme, "mp", MP)
    return Sender("acme", "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")


@pytest.fixture
def nothing_parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails the request (a 500) if the gateway builds anything from a body: the XML and JSON parsers and
    wechatpy's decryption are replaced by tripwires."""
    calls: list[str] = []

    def tripwire(name: str) -> Any:
        def trip(*_: Any, **__: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} ran on an unverified body")
        return trip

    for name in ("parse_xml", "parse_json", "_parse_json", "_decrypt"):
        monkeypatch.setattr(protocol, name, tripwire(name), raising=False)  # _parse_json is new
    return calls


async def stored() -> list[dict[str, Any]]:
    return await InboundEvent.select().order_by(InboundEvent.id).output(load_json=True)


def now_query() -> dict[str, str]:
    return {"timestamp": str(int(time.time())), "nonce": "7"}


# --- verify before parse --------------------------------------------------------------------------------

async def test_unsigned_bodies_are_refused_before_anything_is_built_from_them(
        client: Client, safe_oa: Sender, mp: Sender, nothing_parsed: list[str]) -> None:
    """Plain mode signs only Token/timestamp/nonce, so a bad signature is refused before the body is read;
    safe mode needs only `Encrypt`, found by a scan, then the signature over it, then decryption."""
    bodies: list[tuple[str, dict[str, str], bytes]] = [
        ("/wechat/acme/oa", {**now_query(), "encrypt_type": "aes", "msg_signature": "0" * 40}, REPEATED),
        ("/wechat/acme/oa", {**now_query(), "encrypt_type": "aes", "msg_signature": "0" * 40},
         b"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[" + b"QUFB" * 200_000 + b"]]></Encrypt></xml>"),
        ("/wechat/acme/mp", {**now_query(), "encrypt_type": "aes", "msg_signature": "0" * 40},
         b'{"ToUserName": "gh", "Encrypt": "QUFB", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        ("/wechat/acme/mp", {**now_query(), "encrypt_type": "aes"}, b'{"Encrypt": "QUFB"}'),
    ]
    for path, query, body in bodies:
        r = await client.post(path, params=query, content=body)
        assert r.status_code in (400, 403), (path, r.status_code, r.text[:200])
    assert nothing_parsed == []
    assert await stored() == []


async def test_an_unsigned_plain_mode_body_is_refused_unread(client: Client, plain_oa: Sender,
                                                            nothing_parsed: list[str]) -> None:
    r = await client.post("/wechat/acme/oa", params={**now_query(), "signature": "0" * 40}, content=REPEATED)
    assert r.status_code == 403 and r.text == "bad signature"
    assert nothing_parsed == [] and await stored() == []


async def test_compatible_mode_finds_the_real_encrypt_when_the_customer_writes_one(client: Client,
                                                                                 acme: TenantFixture) -> None:
    """The plaintext fields come first in compatible mode; a customer's text that looks like an `Encrypt`
    element is not taken for the signed one."""
    await link(acme, "oa", {**OA, "mode": "compatible"})
    compat = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "compatible")
    cb = compat.callback(text("oC", "<Encrypt>QUFBQQ==</Encrypt> 你好", 31))
    r = await client.post(cb.url, content=cb.body)
    assert r.status_code == 200 and r.text == "success"
    [row] = await stored()
    assert row["payload"]["fields"]["Content"] == "<Encrypt>QUFBQQ==</Encrypt> 你好"


# --- bounded parses: 400, never 500 -----------------------------------------------------------------------

def signed_plain(sender: Sender, body: bytes) -> tuple[str, bytes]:
    ts, nonce = str(int(time.time())), "11"
    query = f"signature={sign(sender.token, ts, nonce)}&timestamp={ts}&nonce={nonce}"
    return f"/wechat/acme/oa?{query}", body


@pytest.mark.parametrize(("body", "says"), [
    (b"<xml>" + b"<a/>" * 5_000 + b"<FromUserName>o</FromUserName><MsgType>text</MsgType></xml>", "elements"),
    (REPEATED, "elements"),
    (b"<xml>" + b"<a>" * 5_000 + b"</a>" * 5_000 + b"</xml>", "nested"),
    (b"<xml><FromUserName>o</FromUserName><a " + b" ".join(b'x%d=""' % i for i in range(5_000)) + b"/></xml>",
     "attributes"),
    (b'{"FromUserName": "o", "a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "elements"),
    (b'{"FromUserName": "o", "a": ' + b"[" * 100 + b"]" * 100 + b"}", "nested"),
    (b'{"FromUserName": "o", "a": [' + b"0," * 100_000 + b"0]}", "elements"),
])
async def test_signed_but_hostile_bodies_are_refused_with_400(client: Client, plain_oa: Sender, body: bytes,
                                                             says: str) -> None:
    """Someone holding a plain-mode Token can sign anything: still bounded, still a 400 naming why."""
    url, content = signed_plain(plain_oa, body)
    r = await client.post(url, content=content)
    assert r.status_code == 400 and says in r.text, r.text[:200]
    assert await stored() == []


async def test_deeply_nested_json_inside_a_signed_encrypted_push_is_a_400(client: Client, mp: Sender) -> None:
    raw = '{"ToUserName": "gh", "FromUserName": "oMp", "MsgType": "text", "x": ' + "[" * 1500 + "]" * 1500 + "}"
    cb = mp.callback({}, raw=raw)
    r = await client.post(cb.url, content=cb.body)
    assert r.status_code == 400 and "nested" in r.text
    assert await stored() == []


@pytest.mark.parametrize("create_time", ["99999999999999999999", "253402300800", "-5", "1e9", "12abc"])
async def test_create_time_out_of_range_is_a_400(client: Client, safe_oa: Sender, create_time: str) -> None:
    fields = {**text("oUser", "hi", 41), "CreateTime": create_time}
    cb = safe_oa.callback(fields)
    r = await client.post(cb.url, content=cb.body)
    assert r.status_code == 400 and "CreateTime" in r.text
    assert await stored() == []


async def test_the_last_second_a_datetime_holds_is_accepted(client: Client, safe_oa: Sender) -> None:
    cb = safe_oa.callback({**text("oUser", "hi", 42), "CreateTime": 253402300799})
    assert (await client.post(cb.url, content=cb.body)).status_code == 200
    [row] = await stored()
    assert row["occurred_at"] == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


async def test_an_overlong_sender_id_is_a_400_naming_it(client: Client, safe_oa: Sender) -> None:
    cb = safe_oa.callback(text("o" * 300, "hi", 43))
    r = await client.post(cb.url, content=cb.body)
    assert r.status_code == 400 and "FromUserName" in r.text
    assert await stored() == []


# --- one bad event never fails another tenant's callback ------------------------------------------------

@pytest.fixture
def one_batch(monkeypatch: pytest.MonkeyPatch, app: Any) -> list[int]:
    """Callbacks posted together share one group commit (a longer wait for company), and the sizes of the
    batches written are recorded."""
    sizes: list[int] = []
    ingestor: Ingestor = app.state.ingestor
    monkeypatch.setattr(ingestor.writer, "max_wait", 0.3)
    real = ingestor._write

    async def recording(batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(ingestor, "_write", recording)
    return sizes


async def test_nul_and_lone_surrogates_are_stored_replaced_and_never_fail_the_batch(
        client: Client, acme: TenantFixture, globex: TenantFixture, one_batch: list[int]) -> None:
    """A validly signed Mini Program JSON message with \\u0000 or a lone surrogate shares a batch with other
    tenants' callbacks: every one answers `success`, and the odd message is stored with U+FFFD, the
    original text kept in base64."""
    await link(acme, "mp", MP)
    await link(globex, "oa", {**OA, "app_id": "wx00000000000a10be", "token": "GlobexToken1"})
    mp = Sender("acme", "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")
    oa = Sender("globex", "oa", "wx00000000000a10be", "GlobexToken1", OA["aes_key"], "safe")
    at = int(time.time())
    head = '{"ToUserName": "gh_mp", "CreateTime": ' + str(at) + ', "MsgType": "text", '
    nul = head + '"FromUserName": "oMpNul", "Content": "a\\u0000b", "MsgId": 901}'
    lone = head + '"FromUserName": "oMpLone", "Content": "x\\ud800y \\ud83d\\ude00", "MsgId": 902}'
    callbacks = [mp.callback({}, raw=nul), mp.callback({}, raw=lone),
                 *[oa.callback(text(f"oGlobex{i}", "你好", 910 + i)) for i in range(5)],
                 mp.callback(text("oMpFine", "fine", 903))]
    answers = await asyncio.gather(*[client.post(cb.url, content=cb.body) for cb in callbacks])
    assert [(a.status_code, a.text) for a in answers] == [(200, "success")] * len(callbacks)
    assert one_batch == [len(callbacks)]  # truly one shared insert
    rows = {r["external_id"]: r for r in await stored()}
    assert len(rows) == len(callbacks)
    assert rows["oMpNul"]["payload"]["fields"]["Content"] == "a\ufffdb"
    assert rows["oMpLone"]["payload"]["fields"]["Content"] == "x\ufffdy 😀"
    assert base64.b64decode(rows["oMpNul"]["payload"]["original_b64"]).decode() == nul
    assert json.loads(base64.b64decode(rows["oMpLone"]["payload"]["original_b64"]))["MsgId"] == 902
    assert "original_b64" not in rows["oMpFine"]["payload"]
    assert {r["tenant"] for r in rows.values()} == {acme.id, globex.id}


async def test_a_failing_batch_is_written_row_by_row_so_only_the_unstorable_row_fails(
        acme: TenantFixture, globex: TenantFixture) -> None:
    """Whatever slips past the gateway's cleaning: the batch fails, its rows are written one by one, and
    only the row PostgreSQL cannot take answers an error."""
    await link(acme, "mp", MP)
    await link(globex, "oa", {**OA, "app_id": "wx00000000000a10be", "token": "GlobexToken1"})
    enqueued: list[list[int]] = []

    async def enqueue(ids: list[int]) -> None:
        enqueued.append(ids)

    ingestor = Ingestor(enqueue)
    try:
        def account(t: TenantFixture, channel: str) -> Account:
            return Account(t.id, 0, channel, "", "", "", "safe", "xml", slug=t.slug)

        def event(external_id: str, key: str) -> Normalized:
            return Normalized("message", "text", "", external_id, datetime.now(UTC), key, {"Content": "hi"})

        results = await asyncio.gather(
            ingestor.store(account(globex, "oa"), event("oGood1", "msg:1"), {"Content": "hi"}),
            ingestor.store(account(acme, "mp"), event("o\x00bad", "msg:2"), {"Content": "hi"}),
            ingestor.store(account(acme, "mp"), event("oGood2", "msg:3"), {"Content": "x\ud800"}),
            ingestor.store(account(acme, "mp"), event("oGood3", "msg:4"), {"Content": "hi"}),
            return_exceptions=True)
        await ingestor.settle()
    finally:
        await ingestor.stop()
    good = [r for r in results if isinstance(r, ingest.Stored)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(good) == 2 and len(failed) == 2  # a NUL in a key column, a lone surrogate in the payload
    assert isinstance(results[0], ingest.Stored) and isinstance(results[3], ingest.Stored)
    assert sorted(r["external_id"] for r in await stored()) == ["oGood1", "oGood3"]
    assert sorted(i for ids in enqueued for i in ids) == sorted(r.event_id for r in good)

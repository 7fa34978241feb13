"""`POST /wechat/{tenant}/pay`: WeChat Pay notifications verified, stored once before the answer, processed by
the job; every refusal answers FAIL and stores nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from siyu.commerce import merchants
from siyu.core import db
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR, OTHER_KEY, PUB_KEY_ID, deliver, pay_form, run_jobs
from tests.pay_payloads import PaySender, sign, transaction_id_for

OPENID = "oBuyer0000000000000000000001"
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's, not ours


async def count(table: str) -> int:
    return int((await db.fetchrow(f"SELECT count(*) AS n FROM {table}"))["n"])


async def nothing_stored() -> None:
    for table in ("commerce_pay_notification", "commerce_purchase", "commerce_refund", "timeline_event", "identity"):
        assert await count(table) == 0, table


async def test_a_payment_is_stored_answered_204_and_becomes_a_purchase_of_a_new_mp_customer(
        client: Client, paying: PaySender, acme: TenantFixture) -> None:
    n = paying.transaction("ORDER-1", 12800, OPENID, attach="spring", success_time="2026-11-20T10:34:56+08:00")
    r = await deliver(client, n)
    assert r.status_code == 204, r.text
    assert r.content == b""
    stored = await db.fetch("SELECT tenant, mchid, resource_key, event_type, deliveries, processed_at "
                            "FROM commerce_pay_notification")
    assert [(s["tenant"], s["resource_key"], s["event_type"], s["deliveries"]) for s in stored] == [
        (acme.id, transaction_id_for("ORDER-1"), "TRANSACTION.SUCCESS", 1)]
    assert stored[0]["processed_at"] is None  # stored before the answer; the job does the rest

    assert await run_jobs() >= 1
    p = await db.fetchrow("SELECT * FROM commerce_purchase")
    assert (p["order_id"], p["amount_fen"], p["pay_amount_fen"], p["currency"], p["sources"], p["attach"]) == (
        "ORDER-1", 12800, 12800, "CNY", ["pay"], "spring")
    assert p["transaction_id"] == transaction_id_for("ORDER-1")
    assert p["paid_at"].isoformat() == "2026-11-20T02:34:56+00:00"
    # An openid never seen: the Mini Program identity and a contact are created for it.
    identity = await db.fetchrow("SELECT id, contact, channel, external_id FROM identity")
    assert (identity["channel"], identity["external_id"]) == ("mp", OPENID)
    assert (p["contact"], p["identity"]) == (identity["contact"], identity["id"])
    event = await db.fetchrow("SELECT kind, channel, payload::text AS payload, source_key FROM timeline_event")
    assert (event["kind"], event["channel"], event["source_key"]) == ("purchase", "mp", f"purchase:{p['id']}")
    assert json.loads(event["payload"])["amount_fen"] == 12800
    contact = await db.fetchrow("SELECT last_purchase_at FROM contact WHERE id = $1", p["contact"])
    assert contact["last_purchase_at"] == p["paid_at"]
    assert (await db.fetchrow("SELECT processed_at FROM commerce_pay_notification"))["processed_at"] is not None
    status = await merchants.status(acme.id)
    assert status is not None and status.last_success_at is not None and not status.failing


async def test_three_deliveries_of_one_notification_make_one_purchase(client: Client, paying: PaySender) -> None:
    n = paying.transaction("ORDER-2", 500, OPENID)
    for _ in range(3):
        assert (await deliver(client, n)).status_code == 204
        await run_jobs()
    # WeChat re-signs each retry (a new timestamp and nonce): still the same notification.
    again = paying.transaction("ORDER-2", 500, OPENID)
    assert (await deliver(client, again)).status_code == 204
    await run_jobs()
    assert [r["deliveries"] for r in await db.fetch("SELECT deliveries FROM commerce_pay_notification")] == [4]
    assert await count("commerce_purchase") == 1
    assert await count("timeline_event") == 1


async def test_the_job_runs_twice_with_the_same_effect(client: Client, paying: PaySender) -> None:
    from siyu.commerce.jobs import process_pay_notification

    await deliver(client, paying.transaction("ORDER-3", 700, OPENID))
    nid = int((await db.fetchrow("SELECT id FROM commerce_pay_notification"))["id"])
    await run_jobs()
    await db.execute("UPDATE commerce_pay_notification SET processed_at = NULL")  # as if the mark were lost
    assert (await process_pay_notification({}, nid)).startswith("purchase")
    assert await count("commerce_purchase") == 1 and await count("timeline_event") == 1
    assert await process_pay_notification({}, nid) == "already processed"


async def test_the_sweeper_enqueues_what_was_stored_but_never_processed(client: Client, paying: PaySender,
                                                                        redis: Any) -> None:
    await deliver(client, paying.transaction("ORDER-4", 700, OPENID))
    await redis.flushdb()  # the enqueue was lost
    await db.execute("UPDATE commerce_pay_notification SET received_at = now() - interval '5 minutes'")
    from siyu.commerce.jobs import sweep
    from siyu.core.redis import arq_pool

    arq = await arq_pool()
    try:
        assert await sweep({"redis": arq}) == 1
    finally:
        await arq.aclose()
    await run_jobs()
    assert await count("commerce_purchase") == 1


# --- refusals: FAIL, and nothing stored --------------------------------------------------------------------------

def _resigned(paying: PaySender, body: bytes, **headers: str) -> tuple[bytes, dict[str, str]]:
    ts, nonce = str(int(time.time())), "n0nce"
    return body, {"Wechatpay-Serial": PUB_KEY_ID, "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                  "Wechatpay-Signature": sign(paying.key, ts, nonce, body),
                  "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048", "Content-Type": "application/json", **headers}


REFUSALS = {
    "forged signature": lambda s: PaySender(OTHER_KEY, key_id=PUB_KEY_ID).transaction("O-1", 1, OPENID),
    "stale timestamp": lambda s: s.transaction("O-1", 1, OPENID, timestamp=int(time.time()) - 301),
    "future timestamp": lambda s: s.transaction("O-1", 1, OPENID, timestamp=int(time.time()) + 400),
    "signature probe": lambda s: s.transaction("O-1", 1, OPENID, signature="WECHATPAY/SIGNTEST/" + "A" * 40),
    "unknown key id": lambda s: PaySender(s.key, key_id="PUB_KEY_ID_0119000001092099999999999999").transaction(
        "O-1", 1, OPENID),
    "unknown certificate serial": lambda s: PaySender(s.key, key_id="5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
        .transaction("O-1", 1, OPENID),
    "another merchant's notification": lambda s: s.transaction("O-1", 1, OPENID, mchid="1900000999"),
    "a payment in another app": lambda s: s.transaction("O-1", 1, OPENID, appid="wx1111111111111111"),
    "wrong APIv3 key": lambda s: s.transaction("O-1", 1, OPENID, apiv3_key="Z" * 32),
}
STATUS = {"forged signature": 401, "stale timestamp": 401, "future timestamp": 401, "signature probe": 401,
          "unknown key id": 401, "unknown certificate serial": 401, "another merchant's notification": 400,
          "a payment in another app": 400, "wrong APIv3 key": 500}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_every_refusal_answers_fail_and_stores_nothing(client: Client, paying: PaySender, case: str) -> None:
    n = REFUSALS[case](paying)
    r = await deliver(client, n)
    assert r.status_code == STATUS[case], r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == "FAIL" and r.json()["message"]
    await run_jobs()
    await nothing_stored()


@pytest.mark.parametrize("body", [b"not json", b"[1]", b"[" * 60000, b'{"event_type": "TRANSACTION.SUCCESS"}',
                                  b'{"event_type": "TRANSACTION.SUCCESS", "resource": {"algorithm": "AEAD_AES_256_GCM", '
                                  b'"nonce": "x", "ciphertext": "@@"}}', b"\x00\xff" * 100])
async def test_malformed_bodies_correctly_signed_are_400_and_store_nothing(client: Client, paying: PaySender,
                                                                           body: bytes) -> None:
    content, headers = _resigned(paying, body)
    r = await client.post("/wechat/acme/pay", content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "FAIL"
    await nothing_stored()


async def test_a_body_over_64_kib_is_refused(client: Client, paying: PaySender) -> None:
    content, headers = _resigned(paying, b'{"x": "' + b"a" * (64 * 1024) + b'"}')
    r = await client.post("/wechat/acme/pay", content=content, headers=headers)
    assert r.status_code == 413
    assert r.json()["code"] == "FAIL"
    await nothing_stored()


async def test_a_body_over_64_kib_without_a_length_is_refused_as_it_is_read(client: Client,
                                                                              paying: PaySender) -> None:
    """Sent in chunks (no Content-Length): the endpoint stops reading once the body passes 64 KiB."""
    content, headers = _resigned(paying, b'{"x": "' + b"a" * (256 * 1024) + b'"}')
    sent: list[int] = []

    async def chunks() -> Any:
        for i in range(0, len(content), 8192):
            sent.append(i)
            yield content[i:i + 8192]

    r = await client.post("/wechat/acme/pay", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["code"] == "FAIL"
    assert len(sent) == 9  # 8 chunks make 64 KiB, the 9th passes it; the other 24 were never asked for
    await nothing_stored()


@pytest.mark.parametrize("length", ["65537", "99999999999999999999", "-1", "12a"])
async def test_a_content_length_over_the_limit_or_unreadable_is_refused(client: Client, paying: PaySender,
                                                                        length: str) -> None:
    n = paying.transaction("O-1", 1, OPENID)
    r = await client.post("/wechat/acme/pay", content=n.body, headers={**n.headers, "Content-Length": length})
    assert r.status_code == 413 and r.json()["code"] == "FAIL"
    await nothing_stored()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_answer_405_naming_post(client: Client, paying: PaySender, method: str) -> None:
    r = await client.request(method, "/wechat/acme/pay")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["code"] == "FAIL"


async def test_answers_carry_the_security_headers(client: Client, paying: PaySender) -> None:
    from siyu.web.headers import SECURITY_HEADERS

    ok = await deliver(client, paying.transaction("O-1", 1, OPENID))
    refused = await deliver(client, paying.transaction("O-2", 1, OPENID), slug="nobody")
    assert (ok.status_code, refused.status_code) == (204, 404)
    for r in (ok, refused):
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == value


async def test_missing_headers_are_refused(client: Client, paying: PaySender) -> None:
    n = paying.transaction("O-1", 1, OPENID)
    headers = {k: v for k, v in n.headers.items() if k != "Wechatpay-Signature"}
    r = await client.post("/wechat/acme/pay", content=n.body, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "FAIL"
    await nothing_stored()


async def test_unknown_tenants_and_tenants_without_a_merchant_are_404(client: Client, paying: PaySender,
                                                                      globex: TenantFixture) -> None:
    n = paying.transaction("O-1", 1, OPENID)
    for slug in ("nobody", "globex"):
        r = await deliver(client, n, slug=slug)
        assert r.status_code == 404 and r.json()["code"] == "FAIL"
    await nothing_stored()


async def test_a_notification_for_one_tenant_sent_to_anothers_url_is_refused(client: Client, paying: PaySender,
                                                                             globex: TenantFixture) -> None:
    """Globex links its own merchant with its own key: acme's notification does not verify at globex's URL."""
    from tests.pay_payloads import public_pem

    await tenants.do_link_channel(ACTOR, globex.id, "mp", {**MP, "app_id": "wx8888888888888888"})
    await merchants.do_link_pay(ACTOR, globex.id, pay_form(app_id="wx8888888888888888", mch_id="1900000222",
                                                           public_key=public_pem(OTHER_KEY)))
    r = await deliver(client, paying.transaction("O-1", 1, OPENID), slug="globex")
    assert r.status_code == 401
    await nothing_stored()


async def test_unused_event_types_are_acknowledged_and_not_stored(client: Client, paying: PaySender) -> None:
    n = paying.notification("TRANSACTION.CLOSED", {"mchid": paying.mchid, "out_trade_no": "O-9"})
    r = await deliver(client, n)
    assert r.status_code == 204
    await nothing_stored()


async def test_a_wrong_apiv3_key_is_noted_for_the_admin_and_cleared_by_the_next_success(
        client: Client, paying: PaySender, acme: TenantFixture) -> None:
    r = await deliver(client, paying.transaction("O-1", 1, OPENID, apiv3_key="Z" * 32))
    assert r.status_code == 500
    status = await merchants.status(acme.id)
    assert status is not None and status.failing and status.last_failure == "decrypt"
    # A forged request (bad signature) is not the admin's problem: it is not noted.
    await db.execute("UPDATE commerce_pay_merchant SET failing_since = NULL, last_failure = '', last_failure_at = NULL")
    await deliver(client, PaySender(OTHER_KEY, key_id=PUB_KEY_ID).transaction("O-1", 1, OPENID))
    status = await merchants.status(acme.id)
    assert status is not None and not status.failing
    await deliver(client, paying.transaction("O-1", 1, OPENID, apiv3_key="Z" * 32))
    assert (await merchants.status(acme.id)).failing  # type: ignore[union-attr]
    assert (await deliver(client, paying.transaction("O-2", 1, OPENID))).status_code == 204
    status = await merchants.status(acme.id)
    assert status is not None and not status.failing and status.last_failure == "decrypt"  # the history stays


async def test_both_a_public_key_and_a_platform_certificate_are_live(client: Client, paying: PaySender,
                                                                     acme: TenantFixture) -> None:
    from tests.pay_payloads import certificate_pem

    serial = 0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1
    await merchants.do_link_pay(ACTOR, acme.id, pay_form(api_v3_key="", public_key="", public_key_id="",
                                                         platform_cert=certificate_pem(OTHER_KEY, serial)))
    by_cert = PaySender(OTHER_KEY, key_id=format(serial, "X"))
    assert (await deliver(client, by_cert.transaction("O-1", 100, OPENID))).status_code == 204
    assert (await deliver(client, paying.transaction("O-2", 200, OPENID))).status_code == 204
    await run_jobs()
    assert await count("commerce_purchase") == 2


async def test_a_notification_that_cannot_be_stored_answers_fail_so_wechat_retries(
        client: Client, paying: PaySender, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.commerce import notify

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database away")

    monkeypatch.setattr(notify, "store", down)
    r = await deliver(client, paying.transaction("O-1", 1, OPENID))
    assert r.status_code == 503 and r.json()["code"] == "FAIL"
    monkeypatch.undo()
    assert (await deliver(client, paying.transaction("O-1", 1, OPENID))).status_code == 204  # the retry lands


async def test_a_lost_enqueue_still_answers_204_and_the_row_is_kept(client: Client, paying: PaySender,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis refusing the job must not turn a stored notification into a refusal: the sweeper enqueues it."""
    from siyu.core import effects

    class Down:
        async def enqueue_job(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("redis away")

    monkeypatch.setattr(effects, "_pool", Down())
    r = await deliver(client, paying.transaction("O-5", 1, OPENID))
    assert r.status_code == 204
    assert await count("commerce_pay_notification") == 1


# --- under load: group commit, the kept merchant config, one job per batch --------------------------------------

async def test_concurrent_notifications_share_one_statement_and_each_answers_after_its_row_is_committed(
        client: Client, paying: PaySender, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty notifications at once (three of them deliveries of one payment) are written by fewer statements
    than notifications; every one answers 204 only once its row is there, the repeated one counts its
    deliveries, and the batch becomes one job that makes every purchase."""
    import asyncio

    from siyu.commerce import notify

    batches: list[int] = []
    rows_at_answer: list[int] = []
    real = notify._store_batch

    async def counted(items: list[Any]) -> list[Any]:
        batches.append(len(items))
        return await real(items)

    monkeypatch.setattr(notify._writer, "_write", counted)
    same = paying.transaction("O-SAME", 100, OPENID)
    notices = [paying.transaction(f"O-{i}", 100 + i, f"oBuyer{i:022d}") for i in range(17)] + [same, same, same]

    async def one(n: Any) -> int:
        r = await deliver(client, n)
        rows_at_answer.append(await count("commerce_pay_notification"))
        return r.status_code

    assert await asyncio.gather(*(one(n) for n in notices)) == [204] * 20
    assert sum(batches) == 20 and len(batches) < 20
    assert min(rows_at_answer) >= 1
    rows = await db.fetch("SELECT resource_key, deliveries FROM commerce_pay_notification ORDER BY id")
    assert len(rows) == 18
    assert {r["resource_key"]: r["deliveries"] for r in rows}[transaction_id_for("O-SAME")] == 3
    await run_jobs()
    assert await count("commerce_purchase") == 18
    assert await count("commerce_pay_notification WHERE processed_at IS NULL") == 0


async def test_a_merchant_unlinked_after_its_config_was_kept_stores_nothing(client: Client, paying: PaySender,
                                                                            acme: TenantFixture) -> None:
    """The kept config still verifies the notification, but the store looks the merchant up again: 404."""
    assert (await deliver(client, paying.transaction("O-1", 1, OPENID))).status_code == 204
    await db.execute("DELETE FROM commerce_pay_merchant WHERE tenant = $1", acme.id)  # another process unlinked it
    r = await deliver(client, paying.transaction("O-2", 1, OPENID))
    assert r.status_code == 404 and r.json()["code"] == "FAIL"
    assert [r["resource_key"] for r in await db.fetch("SELECT resource_key FROM commerce_pay_notification")] == [
        transaction_id_for("O-1")]  # only the first


async def test_a_key_linked_by_another_process_is_found_by_a_fresh_look_at_the_merchant(
        client: Client, paying: PaySender, acme: TenantFixture) -> None:
    """No notice reached this process (its listener was away): the kept config does not know the new key, so
    the refusal is checked once more against a fresh config, which does."""
    from tests.pay_payloads import public_pem

    assert (await deliver(client, paying.transaction("O-1", 1, OPENID))).status_code == 204  # config kept
    merchant = await db.fetchrow("SELECT id FROM commerce_pay_merchant WHERE tenant = $1", acme.id)
    await db.execute("INSERT INTO commerce_pay_key (tenant, merchant, key_id, kind, pem, created_at) "
                     "VALUES ($1, $2, 'PUB_KEY_ID_0119000001092000000000000000NEW', 'public_key', $3, now())",
                     acme.id, merchant["id"], public_pem(OTHER_KEY))
    new_key = PaySender(OTHER_KEY, key_id="PUB_KEY_ID_0119000001092000000000000000NEW")
    assert (await deliver(client, new_key.transaction("O-2", 1, OPENID))).status_code == 204


async def test_relinking_in_any_process_drops_the_kept_config_everywhere(client: Client, paying: PaySender,
                                                                         acme: TenantFixture) -> None:
    """Linking notifies every process (ACCOUNTS_CHANGED); each drops what it kept of the tenant."""
    from siyu.commerce.merchants import _configs, config_for, on_change
    from siyu.core.db import ACCOUNTS_CHANGED

    kept = await config_for("acme")
    assert kept is not None and "acme" in _configs
    on_change(ACCOUNTS_CHANGED, str(acme.id + 1))  # another tenant's change
    assert "acme" in _configs
    on_change(ACCOUNTS_CHANGED, str(acme.id))
    assert "acme" not in _configs
    await config_for("acme")
    await merchants.do_link_pay(ACTOR, acme.id, pay_form(api_v3_key="N" * 32))
    fresh = await config_for("acme")
    assert fresh is not None and fresh.apiv3_key == "N" * 32


async def test_the_batch_job_processes_each_notification_and_one_failure_holds_up_no_other(
        client: Client, paying: PaySender, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.commerce import jobs

    for i in range(3):
        await deliver(client, paying.transaction(f"O-{i}", 10, OPENID))
    from siyu.core import groupcommit

    await groupcommit.settle()
    ids = [int(r["id"]) for r in await db.fetch("SELECT id FROM commerce_pay_notification ORDER BY id")]
    real = jobs.apply_notification

    async def second_fails(tenant_id: int, event_type: str, resource: dict[str, Any], received_at: Any) -> str:
        if resource["out_trade_no"] == "O-1":
            raise RuntimeError("database hiccup")
        return await real(tenant_id, event_type, resource, received_at)

    monkeypatch.setattr(jobs, "apply_notification", second_fails)
    with pytest.raises(RuntimeError):
        await jobs.process_pay_notifications({}, ids)
    assert await count("commerce_purchase") == 2
    monkeypatch.undo()
    assert await jobs.process_pay_notifications({}, ids) == 1  # arq's retry: only the one left
    assert await count("commerce_purchase") == 3

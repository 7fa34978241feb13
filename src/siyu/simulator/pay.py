"""WeChat Pay, as the simulator plays it for a Mini Program shop: its own RSA key pair (the WeChat Pay public
key `PUB_KEY_ID_…` a merchant downloads, and a platform certificate on the same key for the older mode),
merchants (mchid, the Mini Program, the APIv3 key the merchant set in its console, the orders' notify_url),
orders paid by simulated customers, refunds, and the notifications WeChat Pay sends about them.

A notification is built exactly as WeChat Pay builds one (the shared WeChat Pay facts, §2): the resource
encrypted with AEAD_AES_256_GCM under the APIv3 key (a 12-character nonce, associated data `transaction` or
`refund`), the envelope's raw bytes signed SHA256withRSA over `timestamp\\nnonce\\nbody\\n`, headers
`Wechatpay-Serial/-Signature/-Timestamp/-Nonce/-Signature-Type`. An answer other than 2xx within 5 s is a
failure, retried on WeChat's schedule (15 s, 15 s, 30 s, 3 min, 10 min, 20 min, 30 min ×3, 60 min, 3 h ×3,
6 h ×2; shortened by the merchant's `retry_time_factor` for tests), each retry re-signed with a fresh
timestamp and nonce over the same body. Now and then (`probe_rate`) a notification is preceded by a
probe carrying a deliberately wrong `WECHATPAY/SIGNTEST/…` signature, which the merchant must refuse.

The brand's Mini Program backend, which the simulator also plays, reports each order (and each successful
refund) to the app's `backend.purchases_url` with the app's API key. Which of the two reaches the merchant
first varies, as it does in reality.

Everything here is kept with the rest of the simulator's memory (persist part `pay`), the private key
included; notifications still being retried when the simulator stops are retried after it restarts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from siyu.simulator import persist, rules
from siyu.simulator.state import RESET_HOOKS, SimApp, State

# WeChat Pay's retry schedule after a failed notification, in seconds (24 h 4 min in all).
RETRY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
ANSWER_TIMEOUT = 5.0  # WeChat Pay waits this long for the merchant's answer
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
DEFAULT_PROBE_RATE = 0.05
SEQUENCES = ("backend_first", "pay_first", "together")
REFUND_EVENTS = {"SUCCESS": "REFUND.SUCCESS", "ABNORMAL": "REFUND.ABNORMAL", "CLOSED": "REFUND.CLOSED"}
CHINA = timezone(timedelta(hours=8))
MAX_ANSWER = 64 * 1024
APIV3_KEY_CHARS = set(string.printable[:94])  # printable ASCII without space
# What a shop sells when the merchant was registered without a catalog.
DEFAULT_CATALOG = [
    {"sku": "SIM-TEA-250", "name": "龙井茶 250g", "unit_price_fen": 26800},
    {"sku": "SIM-CUP-01", "name": "白瓷茶杯", "unit_price_fen": 8800},
    {"sku": "SIM-GIFT-01", "name": "节日礼盒", "unit_price_fen": 39900},
]


class PayRefused(Exception):
    """The request to the simulator cannot be carried out (an unknown app, nothing to refund…)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --- memory -------------------------------------------------------------------------------------------------

@dataclass
class Merchant:
    mchid: str
    app_id: str  # the Mini Program the payments are made in
    apiv3_key: str
    notify_url: str
    sign_with: str = "public_key"  # public_key | platform_cert: which id Wechatpay-Serial names
    retry_time_factor: float = 1.0
    probe_rate: float = DEFAULT_PROBE_RATE
    catalog: list[dict[str, Any]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {"mchid": self.mchid, "app_id": self.app_id, "apiv3_key_set": bool(self.apiv3_key),
                "notify_url": self.notify_url, "sign_with": self.sign_with,
                "retry_time_factor": self.retry_time_factor, "probe_rate": self.probe_rate,
                "catalog": list(self.catalog)}


@dataclass
class Notice:
    """One notification WeChat Pay owes the merchant, and how delivering it went."""

    id: str  # the envelope's id (EV-…)
    mchid: str
    event_type: str
    out_trade_no: str
    body: str  # the envelope, fixed once built: every retry sends the same bytes
    created_at: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False
    gave_up: bool = False
    next_at: float | None = None  # wall-clock time of the next retry

    def failures(self) -> int:
        return sum(1 for a in self.attempts if not a["ok"])

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "mchid": self.mchid, "event_type": self.event_type, "out_trade_no": self.out_trade_no,
                "delivered": self.delivered, "gave_up": self.gave_up, "attempts": list(self.attempts),
                "probes": list(self.probes), "next_attempt_in": None if self.next_at is None
                else max(0.0, round(self.next_at - time.time(), 3)), "created_at": self.created_at}


@dataclass
class Order:
    out_trade_no: str
    transaction_id: str
    mchid: str
    app_id: str
    person: str
    openid: str
    unionid: str | None
    total: int
    currency: str
    items: list[dict[str, Any]]
    paid_at: float
    attach: str = ""
    refunds: list[dict[str, Any]] = field(default_factory=list)  # out_refund_no, refund_id, amount, status
    notices: list[str] = field(default_factory=list)
    backend_reports: list[dict[str, Any]] = field(default_factory=list)

    def refunded(self) -> int:
        return sum(r["amount"] for r in self.refunds if r["status"] in ("SUCCESS", "ABNORMAL"))

    def view(self, desk: Desk) -> dict[str, Any]:
        return {"out_trade_no": self.out_trade_no, "transaction_id": self.transaction_id, "mchid": self.mchid,
                "app_id": self.app_id, "person": self.person, "openid": self.openid, "unionid": self.unionid,
                "total": self.total, "currency": self.currency, "items": list(self.items),
                "success_time": china_time(self.paid_at), "attach": self.attach, "refunds": list(self.refunds),
                "backend_reports": list(self.backend_reports),
                "notifications": [desk.notices[n].view() for n in self.notices if n in desk.notices]}


def china_time(ts: float) -> str:
    """WeChat Pay's RFC 3339 times, in China time: 2018-06-08T10:34:56+08:00."""
    return datetime.fromtimestamp(int(ts), CHINA).isoformat()


class Desk:
    """WeChat Pay's memory for one simulator: its key, merchants, orders and owed notifications."""

    def __init__(self, sim: State) -> None:
        self.sim = sim
        self.key: rsa.RSAPrivateKey | None = None
        self.key_id = ""
        self.cert_pem = ""
        self.cert_serial = ""
        self.on_change: Callable[[], None] | None = None  # the saver, when the simulator keeps a state dir
        self.tasks: set[asyncio.Task[None]] = set()
        self.forget()

    def forget(self) -> None:
        """WeChat afresh (`/_sim/reset`): merchants, orders and pending retries go; the key stays (WeChat
        Pay's key outlives any one merchant)."""
        for task in list(getattr(self, "tasks", ())):
            task.cancel()
        self.tasks = set()
        self.merchants: dict[str, Merchant] = {}
        self.orders: dict[str, Order] = {}
        self.notices: dict[str, Notice] = {}
        self.counter = 0

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- the key pair -----------------------------------------------------------------------------------

    def ensure_key(self) -> None:
        if self.key is None:
            self.install_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
            self.changed()

    def install_key(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashlib.sha256(der).hexdigest()
        # WeChat's ids look like PUB_KEY_ID_0114232134912410000000000000: digits after the prefix.
        self.key_id = "PUB_KEY_ID_01" + str(int(digest, 16))[:30]
        # 40 hex digits like WeChat's serials: at most 159 bits (X.509), never a leading zero.
        serial = (int(digest[:40], 16) & ((1 << 159) - 1)) | (1 << 156)
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com (simulated)"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
        now = datetime(2025, 1, 1, tzinfo=UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(serial).not_valid_before(now).not_valid_after(now + timedelta(days=1825 * 2))
                .sign(key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.cert_serial = format(serial, "X")

    def public_key_pem(self) -> str:
        self.ensure_key()
        assert self.key is not None
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def key_view(self) -> dict[str, Any]:
        self.ensure_key()
        return {"public_key_id": self.key_id, "public_key": self.public_key_pem(),
                "platform_certificate": self.cert_pem, "platform_serial": self.cert_serial,
                "signature_type": SIGNATURE_TYPE}

    # --- ids ----------------------------------------------------------------------------------------------

    def next_number(self) -> int:
        self.counter += 1
        return self.counter

    def new_out_trade_no(self) -> str:
        return f"SIM{time.strftime('%Y%m%d', time.gmtime(self.sim.now() + 8 * 3600))}{self.next_number():08d}"

    def new_transaction_id(self) -> str:
        day = time.strftime("%Y%m%d", time.gmtime(self.sim.now() + 8 * 3600))
        return f"4200{day}{secrets.randbelow(10**16):016d}"  # 28 digits, as WeChat's

    # --- building notifications -----------------------------------------------------------------------

    def build(self, merchant: Merchant, event_type: str, resource: dict[str, Any], out_trade_no: str) -> Notice:
        original = "refund" if event_type.startswith("REFUND.") else "transaction"
        envelope = {
            "id": f"EV-{secrets.token_hex(13)}"[:36], "create_time": china_time(self.sim.now()),
            "resource_type": "encrypt-resource", "event_type": event_type,
            "summary": "支付成功" if original == "transaction" else "退款状态变更",
            "resource": {"original_type": original, **encrypt(merchant.apiv3_key, resource, original)},
        }
        notice = Notice(id=envelope["id"], mchid=merchant.mchid, event_type=event_type, out_trade_no=out_trade_no,
                        body=json.dumps(envelope, ensure_ascii=False, separators=(",", ":")),
                        created_at=self.sim.now())
        self.notices[notice.id] = notice
        return notice

    def headers(self, merchant: Merchant, body: bytes, probe: bool = False) -> dict[str, str]:
        self.ensure_key()
        assert self.key is not None
        timestamp = str(int(self.sim.now()))
        nonce = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(32))
        if probe:
            signature = PROBE_PREFIX + base64.b64encode(secrets.token_bytes(192)).decode()
        else:
            signature = sign(self.key, timestamp, nonce, body)
        return {"Wechatpay-Serial": self.key_id if merchant.sign_with == "public_key" else self.cert_serial,
                "Wechatpay-Signature": signature, "Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature-Type": SIGNATURE_TYPE, "Content-Type": "application/json",
                "Accept": "*/*", "User-Agent": "Mozilla/4.0"}

    # --- delivery ---------------------------------------------------------------------------------------

    async def _post(self, merchant: Merchant, notice: Notice, probe: bool) -> dict[str, Any]:
        body = notice.body.encode()
        entry: dict[str, Any] = {"at": self.sim.now(), "status": None, "error": None, "ok": False}
        t0 = time.monotonic()
        try:
            async with _client() as http:
                resp = await asyncio.wait_for(
                    http.post(merchant.notify_url, content=body, headers=self.headers(merchant, body, probe),
                              timeout=ANSWER_TIMEOUT + 1), ANSWER_TIMEOUT)
        except TimeoutError:
            entry["error"] = "timeout"
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            entry["status"] = resp.status_code
            entry["ok"] = 200 <= resp.status_code < 300
            if not entry["ok"]:
                entry["error"] = f"HTTP {resp.status_code}"
                entry["answer"] = resp.content[:2000].decode(errors="replace")
        entry["elapsed_ms"] = round((time.monotonic() - t0) * 1000)
        return entry

    async def send(self, notice: Notice, probe: bool | None = None) -> None:
        """The first delivery of a notification (after a probe, sometimes); on failure the retries are
        scheduled and run in the background."""
        merchant = self.merchants.get(notice.mchid)
        if merchant is None:
            notice.gave_up = True
            return
        if probe is None:
            probe = random.random() < merchant.probe_rate
        if probe:
            entry = await self._post(merchant, notice, probe=True)
            entry["refused"] = not entry["ok"]  # what a merchant must do with a probe
            notice.probes.append(entry)
        await self.attempt(notice)

    async def attempt(self, notice: Notice) -> None:
        merchant = self.merchants.get(notice.mchid)
        if merchant is None or notice.delivered or notice.gave_up:
            notice.next_at = None
            return
        entry = await self._post(merchant, notice, probe=False)
        notice.attempts.append(entry)
        if entry["ok"]:
            notice.delivered, notice.next_at = True, None
        else:
            self.schedule(notice, merchant)
        self.changed()

    def schedule(self, notice: Notice, merchant: Merchant | None = None, delay: float | None = None) -> None:
        merchant = merchant or self.merchants.get(notice.mchid)
        failures = notice.failures()
        if merchant is None or failures > len(RETRY_SCHEDULE):
            notice.gave_up, notice.next_at = True, None
            return
        if delay is None:
            delay = RETRY_SCHEDULE[failures - 1] * merchant.retry_time_factor
        notice.next_at = time.time() + delay
        task = asyncio.get_running_loop().create_task(self._retry_later(notice.id, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _retry_later(self, notice_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        notice = self.notices.get(notice_id)
        if notice is not None:
            await self.attempt(notice)

    def resume(self) -> int:
        """After a restart: retry what was still owed, at the time it was due (now, if that has passed)."""
        n = 0
        for notice in self.notices.values():
            if not notice.delivered and not notice.gave_up and notice.next_at is not None:
                self.schedule(notice, delay=max(0.0, notice.next_at - time.time()))
                n += 1
        return n


def _client() -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never carry loopback calls elsewhere.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


def encrypt(apiv3_key: str, resource: dict[str, Any], associated_data: str) -> dict[str, str]:
    """AEAD_AES_256_GCM under the 32-byte APIv3 key; the tag is appended to the ciphertext."""
    nonce = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
    sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(),
                                                associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": associated_data, "nonce": nonce}


def sign(key: rsa.RSAPrivateKey, timestamp: str, nonce: str, body: bytes) -> str:
    message = b"%s\n%s\n%s\n" % (timestamp.encode(), nonce.encode(), body)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


_desks: dict[int, Desk] = {}


def desk(sim: State) -> Desk:
    """The WeChat Pay part of this simulator (made on first use)."""
    d = _desks.get(id(sim))
    if d is None or d.sim is not sim:
        d = _desks[id(sim)] = Desk(sim)
    return d


RESET_HOOKS.append(lambda sim: desk(sim).forget())


# --- the merchant's side: registering -------------------------------------------------------------------------

def build_merchant(data: dict[str, Any], sim: State) -> Merchant | str:
    """A merchant from the registration body, or what is wrong with it."""
    mchid, app_id = str(data.get("mchid") or ""), str(data.get("app_id") or "")
    apiv3_key, notify_url = str(data.get("apiv3_key") or ""), str(data.get("notify_url") or "")
    if not (mchid.isascii() and mchid.isdigit() and 6 <= len(mchid) <= 32):
        return "mchid must be 6 to 32 digits"
    app = sim.apps.get(app_id)
    if app is None or app.kind != "mp":
        return "app_id must be a registered Mini Program"
    if len(apiv3_key) != 32 or not set(apiv3_key) <= APIV3_KEY_CHARS:
        return "apiv3_key must be 32 printable ASCII characters"
    if not rules.is_loopback_url(notify_url):
        return "notify_url must be an http(s) URL on a loopback address (127.0.0.1, ::1, localhost)"
    sign_with = str(data.get("sign_with") or "public_key")
    if sign_with not in ("public_key", "platform_cert"):
        return "sign_with must be public_key or platform_cert"
    factor, probe_rate = data.get("retry_time_factor", 1.0), data.get("probe_rate", DEFAULT_PROBE_RATE)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor <= 1:
        return "retry_time_factor must be a number in (0, 1]"
    if isinstance(probe_rate, bool) or not isinstance(probe_rate, int | float) or not 0 <= probe_rate <= 1:
        return "probe_rate must be a number in [0, 1]"
    catalog = data.get("catalog")
    if catalog is not None:
        problem = items_problem(catalog, "catalog")
        if problem:
            return problem
    return Merchant(mchid, app_id, apiv3_key, notify_url, sign_with, float(factor), float(probe_rate),
                    [dict(i) for i in catalog] if catalog else [])


def items_problem(items: Any, name: str = "items") -> str | None:
    if not isinstance(items, list) or not 1 <= len(items) <= 50:
        return f"{name} must be a list of 1 to 50 items"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("sku"), str) or not item["sku"]:
            return f"each of {name} needs a sku"
        price, qty = item.get("unit_price_fen"), item.get("quantity", 1)
        if isinstance(price, bool) or not isinstance(price, int) or not 0 <= price <= 10**9:
            return f"each of {name} needs unit_price_fen, whole fen"
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 1000:
            return f"quantity in {name} must be a whole number from 1 to 1000"
        if not isinstance(item.get("name", ""), str):
            return f"name in {name} must be text"
    return None


# --- the customer's side: paying and refunds ----------------------------------------------------------------

def _merchant_of(d: Desk, app_id: str) -> Merchant | None:
    return next((m for m in d.merchants.values() if m.app_id == app_id), None)


def _pick_items(merchant: Merchant | None, sku: str = "") -> list[dict[str, Any]]:
    catalog = (merchant.catalog if merchant and merchant.catalog else DEFAULT_CATALOG)
    if sku:
        chosen = [i for i in catalog if i["sku"] == sku] or [{"sku": sku, "name": sku, "unit_price_fen": 10000}]
    else:
        chosen = random.sample(catalog, k=random.randint(1, min(3, len(catalog))))
    return [{"sku": i["sku"], "name": i.get("name", ""), "quantity": int(i.get("quantity") or random.choice((1, 1, 1, 2))),
             "unit_price_fen": int(i["unit_price_fen"])} for i in chosen]


async def report(url: str, api_key: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The brand's Mini Program backend tells its CRM (`POST url`, Bearer API key), once."""
    started = time.monotonic()
    outcome: dict[str, Any] = {"url": url, "status": None, "answer": None, "error": None}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with _client() as http:
            resp = await asyncio.wait_for(http.post(url, json=body, headers=headers, timeout=timeout + 1), timeout)
    except TimeoutError:
        outcome["error"] = "timeout"
    except httpx.HTTPError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        outcome["status"] = resp.status_code
        try:
            outcome["answer"] = json.loads(resp.content) if len(resp.content) <= MAX_ANSWER else None
        except ValueError:
            outcome["answer"] = resp.content[:2000].decode(errors="replace")
        if not 200 <= resp.status_code < 300:
            outcome["error"] = f"HTTP {resp.status_code}"
    outcome["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return outcome


def _sequence(data: dict[str, Any]) -> str:
    chosen = str(data.get("sequence") or "random")
    if chosen == "random":
        return random.choice(SEQUENCES)
    if chosen not in SEQUENCES:
        raise PayRefused(400, "bad_sequence", f"sequence must be random or one of {', '.join(SEQUENCES)}")
    return chosen


async def _both(sequence: str, backend: Callable[[], Any] | None, pay: Callable[[], Any] | None) -> None:
    steps = [s for s in ((backend, pay) if sequence != "pay_first" else (pay, backend)) if s is not None]
    if sequence == "together":
        await asyncio.gather(*(s() for s in steps))
    else:
        for s in steps:
            await s()


def _timeout(data: dict[str, Any]) -> float:
    try:
        timeout = float(data.get("timeout_seconds", ANSWER_TIMEOUT))
    except (TypeError, ValueError):
        timeout = -1
    if not 0 < timeout <= 60:
        raise PayRefused(400, "bad_timeout", "timeout_seconds must be in (0, 60]")
    return timeout


def _probe(data: dict[str, Any]) -> bool | None:
    probe = data.get("probe")
    return None if probe is None else bool(probe)


def _backend(app: SimApp) -> tuple[str, str] | None:
    return (app.backend_purchases_url, app.backend_api_key) if app.backend_purchases_url else None


async def buy(sim: State, data: dict[str, Any]) -> dict[str, Any]:
    """A simulated customer pays for an order in the Mini Program. Raises PayRefused."""
    d = desk(sim)
    app = sim.apps.get(str(data.get("app_id", "")))
    if app is None or app.kind != "mp":
        raise PayRefused(404, "unknown_app", "app_id must be a registered Mini Program")
    person = str(data.get("person", "")).strip()
    if not person:
        raise PayRefused(400, "person_required", "person is required")
    merchant = _merchant_of(d, app.app_id)
    backend = _backend(app) if data.get("report_backend", True) is not False else None
    merchant_notifies = merchant is not None and data.get("notify_pay", True) is not False
    if backend is None and not merchant_notifies:
        raise PayRefused(409, "nobody_to_tell", "the app has neither a WeChat Pay merchant nor a backend "
                                                "purchases_url: register one")
    timeout, sequence, probe = _timeout(data), _sequence(data), _probe(data)
    if "items" in data:
        problem = items_problem(data["items"])
        if problem:
            raise PayRefused(400, "bad_items", problem)
        items = [{"sku": i["sku"], "name": i.get("name", ""), "quantity": int(i.get("quantity", 1)),
                  "unit_price_fen": int(i["unit_price_fen"])} for i in data["items"]]
    else:
        items = _pick_items(merchant, str(data.get("sku") or ""))
    out_trade_no = str(data.get("out_trade_no") or d.new_out_trade_no())
    if not 6 <= len(out_trade_no) <= 32 or not out_trade_no.isascii() or not out_trade_no.replace("_", "").replace(
            "-", "").isalnum():
        raise PayRefused(400, "bad_out_trade_no", "out_trade_no must be 6 to 32 letters, digits, _ or -")
    if out_trade_no in d.orders:
        raise PayRefused(409, "order_exists", f"order {out_trade_no} was paid already")
    attach = str(data.get("attach") or "")[:128]
    member = sim.member(app, person)
    sim.person(person)
    total = sum(i["unit_price_fen"] * i["quantity"] for i in items)
    order = Order(out_trade_no=out_trade_no, transaction_id=d.new_transaction_id(),
                  mchid=merchant.mchid if merchant else "", app_id=app.app_id, person=person, openid=member.openid,
                  unionid=app.unionid(person), total=total, currency="CNY", items=items, paid_at=sim.now(),
                  attach=attach)
    d.orders[out_trade_no] = order
    answer: dict[str, Any] = {"sequence": sequence, "backend": None, "pay": None}

    async def tell_backend() -> None:
        assert backend is not None
        amount = data.get("backend_amount_fen", total)
        buyer: dict[str, Any] = {"openid": order.openid, "app_id": app.app_id}
        if order.unionid:
            buyer["unionid"] = order.unionid
        body = {"order_id": out_trade_no, "paid_at": china_time(order.paid_at), "amount_fen": amount,
                "currency": order.currency, "items": items, "buyer": buyer, "transaction_id": order.transaction_id}
        if attach:
            body["attach"] = attach
        outcome = await report(backend[0], backend[1], body, timeout)
        order.backend_reports.append({"kind": "purchase", "status": outcome["status"], "error": outcome["error"]})
        answer["backend"] = outcome

    async def tell_pay() -> None:
        assert merchant is not None
        resource = {
            "appid": app.app_id, "mchid": merchant.mchid, "out_trade_no": out_trade_no,
            "transaction_id": order.transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": random.choice(("OTHERS", "CMB_DEBIT", "ICBC_CREDIT")),
            "attach": attach, "success_time": china_time(order.paid_at), "payer": {"openid": order.openid},
            "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
        }
        notice = d.build(merchant, "TRANSACTION.SUCCESS", resource, out_trade_no)
        order.notices.append(notice.id)
        await d.send(notice, probe)
        answer["pay"] = notice.view()

    await _both(sequence, tell_backend if backend else None, tell_pay if merchant_notifies else None)
    d.changed()
    return {"order": order.view(d), **answer, "delivered": _delivered(answer)}


def _delivered(answer: dict[str, Any]) -> bool:
    """Everyone who was told took it: the backend's report got a 2xx, the notification was accepted."""
    told = [answer["backend"] is None or answer["backend"]["error"] is None,
            answer["pay"] is None or answer["pay"]["delivered"]]
    return all(told) and (answer["backend"] is not None or answer["pay"] is not None)


async def refund(sim: State, data: dict[str, Any]) -> dict[str, Any]:
    """The merchant refunds (part of) an order; WeChat Pay notifies the result (REFUND.SUCCESS, ABNORMAL or
    CLOSED) and the backend reports a successful refund. `out_refund_no` of an earlier refund changes its
    status (an ABNORMAL one ending SUCCESS or CLOSED)."""
    d = desk(sim)
    order = d.orders.get(str(data.get("out_trade_no") or ""))
    if order is None and data.get("app_id") and data.get("person"):
        mine = [o for o in d.orders.values() if o.app_id == data["app_id"] and o.person == str(data["person"])]
        order = mine[-1] if mine else None
    if order is None:
        raise PayRefused(404, "no_order", "no such order (give out_trade_no, or app_id and a person who paid)")
    status = str(data.get("status") or "SUCCESS").upper()
    if status not in REFUND_EVENTS:
        raise PayRefused(400, "bad_status", "status must be SUCCESS, ABNORMAL or CLOSED")
    timeout, sequence, probe = _timeout(data), _sequence(data), _probe(data)
    existing = next((r for r in order.refunds if r["out_refund_no"] == data.get("out_refund_no")), None)
    if existing is not None:
        if existing["status"] in ("SUCCESS", "CLOSED"):
            raise PayRefused(409, "refund_final", f"refund {existing['out_refund_no']} is {existing['status']} already")
        refund_row = existing
        refund_row["status"] = status
    else:
        left = order.total - order.refunded()
        amount = data.get("amount_fen", left)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= left:
            raise PayRefused(409 if left == 0 else 400, "bad_amount",
                             f"amount_fen must be a whole number from 1 to what is left to refund ({left})")
        n = d.next_number()
        refund_row = {"out_refund_no": str(data.get("out_refund_no") or f"RF{order.out_trade_no[-20:]}{n:04d}")[:64],
                      "refund_id": f"50300{time.strftime('%Y%m%d', time.gmtime(sim.now()))}{secrets.randbelow(10**15):015d}",
                      "amount": amount, "status": status, "at": sim.now()}
        order.refunds.append(refund_row)
    merchant = d.merchants.get(order.mchid) if order.mchid else None
    app = sim.apps.get(order.app_id)
    backend = _backend(app) if app is not None and data.get("report_backend", True) is not False else None
    answer: dict[str, Any] = {"sequence": sequence, "backend": None, "pay": None, "refund": dict(refund_row)}

    async def tell_backend() -> None:
        assert backend is not None
        body = {"refund_id": refund_row["out_refund_no"], "amount_fen": refund_row["amount"],
                "refunded_at": china_time(sim.now())}
        outcome = await report(f"{backend[0].rstrip('/')}/{quote(order.out_trade_no, safe='')}/refunds", backend[1],
                               body, timeout)
        order.backend_reports.append({"kind": "refund", "status": outcome["status"], "error": outcome["error"]})
        answer["backend"] = outcome

    async def tell_pay() -> None:
        assert merchant is not None
        resource: dict[str, Any] = {
            "mchid": merchant.mchid, "out_trade_no": order.out_trade_no, "transaction_id": order.transaction_id,
            "out_refund_no": refund_row["out_refund_no"], "refund_id": refund_row["refund_id"],
            "refund_status": status, "user_received_account": "支付用户零钱",
            "amount": {"total": order.total, "refund": refund_row["amount"], "payer_total": order.total,
                       "payer_refund": refund_row["amount"]},
        }
        if status == "SUCCESS":
            resource["success_time"] = china_time(sim.now())
        notice = d.build(merchant, REFUND_EVENTS[status], resource, order.out_trade_no)
        order.notices.append(notice.id)
        await d.send(notice, probe)
        answer["pay"] = notice.view()

    # The backend reports refunds that went through; WeChat Pay notifies every outcome.
    await _both(sequence, tell_backend if backend and status == "SUCCESS" else None,
                tell_pay if merchant and data.get("notify_pay", True) is not False else None)
    d.changed()
    return {"order": order.view(d), **answer, "delivered": _delivered(answer)}


# --- kept on disk with the rest -------------------------------------------------------------------------------

def _dump(sim: State) -> dict[str, Any]:
    d = desk(sim)
    key_pem = "" if d.key is None else d.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"private_key": key_pem, "counter": d.counter,
            "merchants": [persist.plain(m) for m in d.merchants.values()],
            "orders": [persist.plain(o) for o in d.orders.values()],
            "notices": [persist.plain(n) for n in d.notices.values()]}


def _load(sim: State, data: dict[str, Any]) -> None:
    d = desk(sim)
    if data.get("private_key"):
        key = serialization.load_pem_private_key(str(data["private_key"]).encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the saved WeChat Pay key is not an RSA key")
        d.install_key(key)
    d.counter = int(data.get("counter") or 0)
    d.merchants = {m.mchid: m for m in (persist.build(Merchant, x) for x in data.get("merchants") or [])}
    d.orders = {o.out_trade_no: o for o in (persist.build(Order, x) for x in data.get("orders") or [])}
    d.notices = {n.id: n for n in (persist.build(Notice, x) for x in data.get("notices") or [])}


persist.register_part("pay", _dump, _load)

"""Builds WeChat Pay APIv3 notifications the way WeChat Pay sends them: the resource encrypted with
AEAD_AES_256_GCM under the merchant's APIv3 key, the body signed with SHA256withRSA over
`timestamp\\nnonce\\nbody\\n` by the key the `Wechatpay-Serial` header names.

Written on `cryptography` alone, independent of Siyu's verifier (a simulator can carry the same few lines).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

APIV3_KEY = "0123456789abcdefghijABCDEFGHIJkl"  # 32 characters, as the merchant console takes it
MCHID = "1900000109"
PAY_APP_ID = "wxfedcba9876543210"  # the Mini Program of tests.conftest.MP


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def certificate_pem(key: rsa.RSAPrivateKey, serial: int, days: int = 1825) -> str:
    """A self-signed stand-in for a WeChat Pay platform certificate with the given serial."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def encrypt(apiv3_key: str, plaintext: dict[str, Any], associated_data: str) -> dict[str, str]:
    nonce = secrets.token_hex(6)  # 12 characters
    ct = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), json.dumps(plaintext, ensure_ascii=False).encode(),
                                             associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(ct).decode(),
            "associated_data": associated_data, "nonce": nonce}


def sign(key: rsa.RSAPrivateKey, timestamp: str, nonce: str, body: bytes) -> str:
    message = b"%s\n%s\n%s\n" % (timestamp.encode(), nonce.encode(), body)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def transaction_id_for(out_trade_no: str) -> str:
    """A stable 28-digit WeChat Pay transaction id for an order."""
    return "4200" + str(int(hashlib.sha256(out_trade_no.encode()).hexdigest(), 16))[:24]


@dataclass
class Notification:
    headers: dict[str, str]
    body: bytes


@dataclass
class PaySender:
    """One merchant, seen from WeChat Pay's side: the key that signs and the key id it names."""

    key: rsa.RSAPrivateKey
    key_id: str = "PUB_KEY_ID_0119000001092024090100000001"
    apiv3_key: str = APIV3_KEY
    mchid: str = MCHID
    app_id: str = PAY_APP_ID
    sent: list[Notification] = field(default_factory=list)

    def notification(self, event_type: str, resource: dict[str, Any], *, timestamp: int | None = None,
                     nonce: str | None = None, notification_id: str | None = None, apiv3_key: str | None = None,
                     signature: str | None = None) -> Notification:
        original = "refund" if event_type.startswith("REFUND.") else "transaction"
        envelope = {
            "id": notification_id or f"EV-{secrets.token_hex(8)}",
            "create_time": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource", "event_type": event_type,
            "summary": "支付成功" if original == "transaction" else "退款状态变更",
            "resource": {"original_type": original,
                         **encrypt(apiv3_key or self.apiv3_key, resource, original)},
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = nonce or secrets.token_hex(16)
        headers = {"Wechatpay-Serial": self.key_id, "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                   "Wechatpay-Signature": signature or sign(self.key, ts, nonce, body),
                   "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048", "Content-Type": "application/json"}
        n = Notification(headers, body)
        self.sent.append(n)
        return n

    def transaction(self, out_trade_no: str, total: int, openid: str, *, transaction_id: str | None = None,
                    success_time: str = "2026-11-20T10:34:56+08:00", attach: str = "", currency: str = "CNY",
                    payer_total: int | None = None, **kw: Any) -> Notification:
        resource = {
            "appid": kw.pop("appid", self.app_id), "mchid": kw.pop("mchid", self.mchid),
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id or transaction_id_for(out_trade_no),
            "trade_type": "JSAPI", "trade_state": kw.pop("trade_state", "SUCCESS"), "trade_state_desc": "支付成功",
            "bank_type": "OTHERS", "attach": attach, "success_time": success_time, "payer": {"openid": openid},
            "amount": {"total": total, "payer_total": total if payer_total is None else payer_total,
                       "currency": currency, "payer_currency": currency},
        }
        return self.notification("TRANSACTION.SUCCESS", resource, **kw)

    def refund(self, out_trade_no: str, transaction_id: str, out_refund_no: str, refund: int, total: int, *,
               event_type: str = "REFUND.SUCCESS", refund_id: str | None = None,
               success_time: str = "2026-11-21T09:00:00+08:00", **kw: Any) -> Notification:
        status = {"REFUND.SUCCESS": "SUCCESS", "REFUND.ABNORMAL": "ABNORMAL", "REFUND.CLOSED": "CLOSED"}[event_type]
        resource = {
            "mchid": kw.pop("mchid", self.mchid), "out_trade_no": out_trade_no, "transaction_id": transaction_id,
            "out_refund_no": out_refund_no, "refund_id": refund_id or "50300" + out_refund_no.rjust(20, "0")[-20:],
            "refund_status": status, "success_time": success_time, "user_received_account": "支付用户零钱",
            "amount": {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund},
        }
        return self.notification(event_type, resource, **kw)

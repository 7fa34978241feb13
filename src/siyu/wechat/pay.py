"""WeChat Pay APIv3 notifications: verify the signature, then open the envelope and decrypt its resource.

Pure functions on `cryptography` (no I/O): the caller supplies the merchant's keys and APIv3 key and stores
what comes out. The order is WeChat's own: the headers and the signature over the raw bytes first, JSON only
once the bytes are proven to come from WeChat Pay.

- Signed string: `<Wechatpay-Timestamp>\\n<Wechatpay-Nonce>\\n<raw body>\\n`, RSA PKCS#1 v1.5 with SHA-256,
  by the key `Wechatpay-Serial` names: a WeChat Pay public key (`PUB_KEY_ID_…`) or a platform certificate
  (its serial in hex). Both kinds can be live at once while WeChat moves a merchant from one to the other.
- A timestamp more than five minutes away from now is refused (WeChat's Go SDK does the same); so is a
  probe whose signature starts `WECHATPAY/SIGNTEST/`, like any bad signature.
- `resource` is AEAD_AES_256_GCM under the merchant's 32-byte APIv3 key, with the resource's nonce and
  associated data; a wrong key fails the GCM tag.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
MAX_SKEW_SECONDS = 300
MAX_BODY = 64 * 1024
ALGORITHM = "AEAD_AES_256_GCM"
PUBLIC_KEY_ID_RE = re.compile(r"^PUB_KEY_ID_[0-9A-Za-z_]{1,52}$")
SERIAL_RE = re.compile(r"^[0-9A-Fa-f]{1,64}$")
APIV3_KEY_RE = re.compile(r"^[\x21-\x7e]{32}$")  # 32 printable ASCII characters, as the merchant console sets it
MIN_RSA_BITS = 2048


class PayRejected(Exception):
    """A notification Siyu will not take. `status` is the HTTP answer (WeChat retries on any 4xx/5xx);
    `code` says which check refused it, for logs and the merchant's status; `reason` is for people."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """The notification's JSON, once verified: WeChat's id, the event type and the still encrypted resource."""

    id: str
    event_type: str
    create_time: str
    resource: dict[str, Any]


# --- keys ---------------------------------------------------------------------------------------------------

def normalize_key_id(raw: str) -> str | None:
    """The id a `Wechatpay-Serial` header names, in the one form keys are stored under: a public-key id
    as it is, a certificate serial as upper-case hex without leading zeros. None when it is neither."""
    raw = raw.strip()
    if PUBLIC_KEY_ID_RE.match(raw):
        return raw
    if SERIAL_RE.match(raw):
        return format(int(raw, 16), "X")
    return None


def _rsa(key: Any) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"an RSA key of {key.key_size} bits; WeChat Pay signs with {MIN_RSA_BITS} bits")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """A WeChat Pay public key (`pub_key.pem` from the merchant console). ValueError says what is wrong."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    return _rsa(key)


@dataclass(frozen=True)
class Certificate:
    serial: str  # normalized (upper-case hex)
    public_key: rsa.RSAPublicKey
    not_after: datetime


def load_platform_certificate(pem: str | bytes) -> Certificate:
    """A WeChat Pay platform certificate; its serial is what notifications name it by."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM certificate (-----BEGIN CERTIFICATE-----)") from exc
    return Certificate(format(cert.serial_number, "X"), _rsa(cert.public_key()), cert.not_valid_after_utc)


# --- verification -------------------------------------------------------------------------------------------

def _header(headers: Mapping[str, str], name: str, limit: int) -> str:
    value = headers.get(name) or ""
    if not value or len(value) > limit:
        raise PayRejected(400, "headers", f"missing or oversized {name} header")
    return value


def verify(headers: Mapping[str, str], body: bytes, keys: Mapping[str, rsa.RSAPublicKey], now: float,
           max_skew: int = MAX_SKEW_SECONDS) -> str:
    """Check that `body` was signed by WeChat Pay for this merchant within `max_skew` seconds of `now`
    (Unix seconds); returns the id of the key that signed it. `headers` must look names up case-insensitively
    (Litestar's and httpx's do). Raises PayRejected."""
    if len(body) > MAX_BODY:
        raise PayRejected(413, "too_large", f"body over {MAX_BODY} bytes")
    signature_b64 = _header(headers, "Wechatpay-Signature", 1024)
    timestamp = _header(headers, "Wechatpay-Timestamp", 16)
    nonce = _header(headers, "Wechatpay-Nonce", 64)
    serial = _header(headers, "Wechatpay-Serial", 80)
    kind = headers.get("Wechatpay-Signature-Type") or SIGNATURE_TYPE  # WeChat documents no other value
    if kind != SIGNATURE_TYPE:
        raise PayRejected(400, "headers", "unsupported Wechatpay-Signature-Type")
    if signature_b64.startswith(PROBE_PREFIX):
        raise PayRejected(401, "probe", "a signature probe (WECHATPAY/SIGNTEST/)")
    key_id = normalize_key_id(serial)
    key = keys.get(key_id) if key_id is not None else None
    if key is None:
        raise PayRejected(401, "unknown_key", f"no key with id {serial[:80]!r} is linked for this merchant")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise PayRejected(400, "headers", "Wechatpay-Timestamp is not Unix seconds")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise PayRejected(401, "signature", "Wechatpay-Signature is not base64") from None
    message = b"%s\n%s\n%s\n" % (timestamp.encode(), nonce.encode(), body)
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise PayRejected(401, "signature", "the signature does not match") from None
    # Checked once the signature holds, so "stale" always means WeChat Pay's own (delayed or replayed) bytes.
    if abs(now - int(timestamp)) > max_skew:
        raise PayRejected(401, "stale", f"timestamp more than {max_skew} s from now (check the server clock)")
    assert key_id is not None
    return key_id


def open_envelope(body: bytes) -> Envelope:
    """The verified body as an envelope; anything malformed is a 400 (call after `verify`)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise PayRejected(400, "body", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayRejected(400, "body", "the body is not a JSON object")
    resource = data.get("resource")
    event_type = data.get("event_type")
    notification_id = data.get("id", "")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= 32:
        raise PayRejected(400, "body", "event_type missing")
    if not isinstance(notification_id, str) or len(notification_id) > 64:
        raise PayRejected(400, "body", "id is not a string of at most 64 characters")
    if data.get("resource_type", "encrypt-resource") != "encrypt-resource" or not isinstance(resource, dict):
        raise PayRejected(400, "body", "resource missing")
    create_time = data.get("create_time", "")
    return Envelope(notification_id, event_type, create_time if isinstance(create_time, str) else "", resource)


def check_apiv3_key(value: str) -> bool:
    return bool(APIV3_KEY_RE.match(value))


def decrypt_resource(apiv3_key: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource's plaintext JSON object. A wrong APIv3 key (or a tampered resource) fails GCM: code
    `decrypt`, status 500, so WeChat keeps retrying while the admin fixes the key."""
    if resource.get("algorithm") != ALGORITHM:
        raise PayRejected(400, "body", f"resource algorithm is not {ALGORITHM}")
    nonce, associated, ciphertext = (resource.get(k) for k in ("nonce", "associated_data", "ciphertext"))
    associated = "" if associated is None else associated
    if not (isinstance(nonce, str) and isinstance(associated, str) and isinstance(ciphertext, str)) \
            or not nonce or len(nonce) > 64 or len(associated) > 64:
        raise PayRejected(400, "body", "resource nonce, associated_data or ciphertext malformed")
    try:
        raw = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise PayRejected(400, "body", "resource ciphertext is not base64") from None
    if not check_apiv3_key(apiv3_key):
        raise PayRejected(500, "decrypt", "the stored APIv3 key is not 32 characters")
    try:
        plain = AESGCM(apiv3_key.encode()).decrypt(nonce.encode(), raw, associated.encode())
    except (InvalidTag, ValueError):
        raise PayRejected(500, "decrypt", "the resource does not decrypt with the APIv3 key (wrong key?)") from None
    if b"\x00" in plain or b"\\u0000" in plain:  # PostgreSQL text cannot hold NUL
        raise PayRejected(400, "body", "the decrypted resource contains NUL")
    try:
        data = json.loads(plain)
    except (ValueError, RecursionError):
        raise PayRejected(400, "body", "the decrypted resource is not JSON") from None
    if not isinstance(data, dict):
        raise PayRejected(400, "body", "the decrypted resource is not a JSON object")
    return data

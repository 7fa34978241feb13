"""WeChat Pay APIv3 notifications: signature, freshness, probes, key ids, AES-256-GCM decryption.

Keys are made here (a local RSA key pair and a known APIv3 key); one test cross-checks Siyu's verifier and
decryptor against an independent implementation, the `wechatpayv3` SDK, in both directions."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from siyu.wechat import pay
from tests.pay_payloads import (
    APIV3_KEY,
    PaySender,
    certificate_pem,
    encrypt,
    new_rsa_key,
    private_pem,
    public_pem,
)

KEY = new_rsa_key()
OTHER = new_rsa_key()
PUB_ID = "PUB_KEY_ID_0119000001092024090100000001"
CERT_SERIAL = 0x05157F09EFDC096DE15EBE81A47057A7232F1B8E1


def now() -> float:
    return time.time()


class Headers(dict[str, str]):
    """Case-insensitive look-ups, like the web framework's headers."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


def keys(**extra: Any) -> dict[str, Any]:
    return {PUB_ID: pay.load_public_key(public_pem(KEY)), **extra}


def sender(**kw: Any) -> PaySender:
    return PaySender(KEY, key_id=kw.pop("key_id", PUB_ID), **kw)


def tx(s: PaySender | None = None, **kw: Any) -> tuple[Headers, bytes]:
    n = (s or sender()).transaction("ORDER-1001", 8800, "oBuyer000000000000000000001", **kw)
    return Headers(n.headers), n.body


def rejected(code: str, status: int, headers: Any, body: bytes, k: Any = None, at: float | None = None) -> None:
    with pytest.raises(pay.PayRejected) as err:
        pay.verify(headers, body, keys() if k is None else k, now() if at is None else at)
    assert (err.value.code, err.value.status) == (code, status)


# --- signature ----------------------------------------------------------------------------------------------

def test_a_signed_notification_verifies_and_decrypts() -> None:
    headers, body = tx(attach="campaign-7")
    assert pay.verify(headers, body, keys(), now()) == PUB_ID
    envelope = pay.open_envelope(body)
    assert envelope.event_type == "TRANSACTION.SUCCESS"
    resource = pay.decrypt_resource(APIV3_KEY, envelope.resource)
    assert resource["out_trade_no"] == "ORDER-1001"
    assert resource["amount"]["total"] == 8800
    assert resource["payer"]["openid"] == "oBuyer000000000000000000001"
    assert resource["attach"] == "campaign-7"


def test_the_signed_string_is_timestamp_nonce_body_each_ending_in_a_newline() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    body = b'{"id":"EV-1"}'
    signed = KEY.sign(b"1700000000\nabc\n" + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
    headers = Headers({"Wechatpay-Serial": PUB_ID, "Wechatpay-Timestamp": "1700000000", "Wechatpay-Nonce": "abc",
                       "Wechatpay-Signature": base64.b64encode(signed).decode()})
    assert pay.verify(headers, body, keys(), 1700000000) == PUB_ID
    # Without the last newline (a common mistake) it would not have verified.
    wrong = KEY.sign(b"1700000000\nabc\n" + body, padding.PKCS1v15(), hashes.SHA256())
    headers["Wechatpay-Signature"] = base64.b64encode(wrong).decode()
    rejected("signature", 401, headers, body, at=1700000000)


def test_an_empty_body_signs_as_an_empty_last_line() -> None:
    from tests.pay_payloads import sign

    headers = Headers({"Wechatpay-Serial": PUB_ID, "Wechatpay-Timestamp": str(int(now())), "Wechatpay-Nonce": "n1",
                       "Wechatpay-Signature": sign(KEY, str(int(now())), "n1", b"")})
    assert pay.verify(headers, b"", keys(), now()) == PUB_ID


def test_a_changed_byte_or_another_signer_fails() -> None:
    headers, body = tx()
    rejected("signature", 401, headers, body.replace(b"encrypt-resource", b"encrypt-resourcf"))
    forged, body2 = tx(PaySender(OTHER, key_id=PUB_ID))
    rejected("signature", 401, forged, body2)
    # Re-serialised JSON is not the bytes WeChat signed.
    rejected("signature", 401, headers, json.dumps(json.loads(body)).encode())


def test_signature_probes_are_refused_like_a_bad_signature() -> None:
    headers, body = tx()
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    rejected("probe", 401, headers, body)


def test_unknown_or_malformed_key_ids_are_refused() -> None:
    headers, body = tx(sender(key_id="PUB_KEY_ID_0119000001092099999999999999"))
    rejected("unknown_key", 401, headers, body)
    headers["Wechatpay-Serial"] = "not a serial!"
    rejected("unknown_key", 401, headers, body)


@pytest.mark.parametrize("skew", [301, -301, 86400])
def test_a_timestamp_more_than_five_minutes_away_is_stale(skew: int) -> None:
    headers, body = tx(timestamp=int(now()) - skew)
    rejected("stale", 401, headers, body)


@pytest.mark.parametrize("skew", [0, 299, -299])
def test_a_timestamp_within_five_minutes_passes(skew: int) -> None:
    headers, body = tx(timestamp=int(now()) - skew)
    assert pay.verify(headers, body, keys(), now()) == PUB_ID


@pytest.mark.parametrize("header", ["Wechatpay-Serial", "Wechatpay-Signature", "Wechatpay-Timestamp",
                                    "Wechatpay-Nonce"])
def test_a_missing_header_is_refused(header: str) -> None:
    headers, body = tx()
    del headers[header]
    rejected("headers", 400, headers, body)


@pytest.mark.parametrize(("header", "value"), [
    ("Wechatpay-Timestamp", "17e8"), ("Wechatpay-Timestamp", "9" * 40), ("Wechatpay-Signature", "@@@not base64"),
    ("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3"), ("Wechatpay-Nonce", "n" * 65),
])
def test_malformed_headers_are_refused(header: str, value: str) -> None:
    headers, body = tx()
    headers[header] = value
    with pytest.raises(pay.PayRejected) as err:
        pay.verify(headers, body, keys(), now())
    assert err.value.status in (400, 401)


def test_a_body_over_64_kib_is_refused_before_any_work() -> None:
    headers, _ = tx()
    rejected("too_large", 413, headers, b"{" + b" " * (64 * 1024))


def test_platform_certificates_and_public_keys_are_both_live() -> None:
    cert = pay.load_platform_certificate(certificate_pem(OTHER, CERT_SERIAL))
    assert cert.serial == format(CERT_SERIAL, "X")
    both = keys(**{cert.serial: cert.public_key})
    headers, body = tx()
    assert pay.verify(headers, body, both, now()) == PUB_ID
    # WeChat names the certificate by its hex serial; case and leading zeros do not matter.
    for spelled in (format(CERT_SERIAL, "X"), format(CERT_SERIAL, "x"), "00" + format(CERT_SERIAL, "X")):
        h, b = tx(PaySender(OTHER, key_id=spelled))
        assert pay.verify(h, b, both, now()) == cert.serial


def test_keys_that_are_not_wechat_pay_keys_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="PEM public key"):
        pay.load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="PEM certificate"):
        pay.load_platform_certificate(public_pem(KEY))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="not an RSA"):
        pay.load_public_key(ec_pem)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits"):
        pay.load_public_key(public_pem(small))


# --- the envelope and the resource ----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"[" * 100000, b'{"event_type": "X"}',
                                  b'{"resource": {}, "event_type": 7}', b"\xff\xfe"])
def test_malformed_envelopes_are_400(body: bytes) -> None:
    with pytest.raises(pay.PayRejected) as err:
        pay.open_envelope(body)
    assert err.value.status == 400


def test_a_wrong_apiv3_key_fails_gcm_with_500_so_wechat_retries() -> None:
    _, body = tx()
    resource = pay.open_envelope(body).resource
    with pytest.raises(pay.PayRejected) as err:
        pay.decrypt_resource("X" * 32, resource)
    assert (err.value.code, err.value.status) == ("decrypt", 500)


@pytest.mark.parametrize("change", ["associated_data", "nonce", "ciphertext"])
def test_a_tampered_resource_fails_gcm(change: str) -> None:
    resource = encrypt(APIV3_KEY, {"out_trade_no": "A1"}, "transaction")
    if change == "ciphertext":
        raw = bytearray(base64.b64decode(resource["ciphertext"]))
        raw[0] ^= 1
        resource["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    else:
        resource[change] = resource[change][:-1] + ("x" if resource[change][-1] != "x" else "y")
    with pytest.raises(pay.PayRejected) as err:
        pay.decrypt_resource(APIV3_KEY, resource)
    assert err.value.code == "decrypt"


def test_a_known_vector_decrypts() -> None:
    """AES-256-GCM with a fixed key, nonce and associated data: the ciphertext is fixed too."""
    key, nonce, aad = APIV3_KEY, "0123456789ab", "transaction"
    ct = AESGCM(key.encode()).encrypt(nonce.encode(), b'{"out_trade_no":"T1"}', aad.encode())
    assert base64.b64encode(ct).decode() == "M8+Du7iNXxN5ErREMFZEq/Cb6L303Dxg+imDxn8WKsneW6mPfw=="
    resource = {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": aad,
                "ciphertext": "M8+Du7iNXxN5ErREMFZEq/Cb6L303Dxg+imDxn8WKsneW6mPfw=="}
    assert pay.decrypt_resource(key, resource) == {"out_trade_no": "T1"}


@pytest.mark.parametrize(("resource", "status"), [
    ({"algorithm": "AEAD_AES_128_GCM", "nonce": "n", "ciphertext": "AA=="}, 400),
    ({"algorithm": "AEAD_AES_256_GCM", "nonce": "n", "ciphertext": "!!!"}, 400),
    ({"algorithm": "AEAD_AES_256_GCM", "nonce": 5, "ciphertext": "AA=="}, 400),
    ({"algorithm": "AEAD_AES_256_GCM", "ciphertext": "AA=="}, 400),
])
def test_malformed_resources_are_400(resource: dict[str, Any], status: int) -> None:
    with pytest.raises(pay.PayRejected) as err:
        pay.decrypt_resource(APIV3_KEY, resource)
    assert err.value.status == status


def test_nul_in_a_decrypted_resource_is_refused() -> None:
    resource = encrypt(APIV3_KEY, {"attach": "a\u0000b"}, "transaction")
    with pytest.raises(pay.PayRejected) as err:
        pay.decrypt_resource(APIV3_KEY, resource)
    assert err.value.status == 400


# --- cross-check against an independent implementation ----------------------------------------------------------

def test_siyu_and_the_wechatpayv3_sdk_agree_in_both_directions() -> None:
    """wechatpayv3 (minibear2021) in public-key mode: it accepts what the test builder signs and decrypts
    it to what Siyu decrypts; Siyu accepts what the SDK's own signing routine signs; both refuse a changed
    byte and a wrong APIv3 key."""
    from wechatpayv3 import utils as sdk_utils
    from wechatpayv3.core import Core

    merchant_key = new_rsa_key()  # the merchant's own API key pair; the SDK wants one, verification does not
    core = Core(mchid="1900000109", cert_serial_no="0123456789ABCDEF", private_key=private_pem(merchant_key),
                apiv3_key=APIV3_KEY, public_key=public_pem(KEY), public_key_id=PUB_ID)
    headers, body = tx(attach="x")
    ours = pay.decrypt_resource(APIV3_KEY, pay.open_envelope(body).resource)
    theirs = core.callback(dict(headers), body)
    assert theirs is not None and theirs["resource"] == ours
    assert pay.verify(headers, body, keys(), now()) == PUB_ID

    # The SDK's signing routine (its own signed-string format) produces what Siyu verifies.
    ts, nonce = str(int(now())), "sdknonce"
    text = body.decode()
    signature = sdk_utils.rsa_sign(KEY, f"{ts}\n{nonce}\n{text}\n")
    sdk_headers = Headers({**headers, "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                           "Wechatpay-Signature": signature})
    assert pay.verify(sdk_headers, body, keys(), now()) == PUB_ID
    resource = pay.open_envelope(body).resource
    assert json.loads(sdk_utils.aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"],
                                            APIV3_KEY)) == ours

    changed = body.replace(b'"id"', b'"Id"')
    assert core.callback(dict(headers), changed) is None
    rejected("signature", 401, headers, changed)
    assert sdk_utils.aes_decrypt(resource["nonce"], resource["ciphertext"], resource["associated_data"],
                                 "Y" * 32) is None
    with pytest.raises(pay.PayRejected):
        pay.decrypt_resource("Y" * 32, resource)

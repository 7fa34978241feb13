"""Secrets at rest: AES-256-GCM sealing, context binding, tamper detection and key rotation."""

from __future__ import annotations

import base64

import pytest

from siyu.core.crypto import SecretBox, constant_time_equals, derive_key, mask, sha256_hex
from siyu.core.errors import ConfigurationError

KEY = "k" * 48
OLD_KEY = "o" * 48
CTX = "channel_account:1:oa:secret"


def test_seal_and_open_round_trip() -> None:
    box = SecretBox(KEY)
    for plaintext in ["oaSecret0123456789abcdef01234567", "", "微信 secret ✓", "x" * 5000]:
        sealed = box.seal(plaintext, CTX)
        assert plaintext == "" or plaintext not in sealed
        assert sealed.startswith(f"v1:{box.current_key_id}:")
        assert box.open(sealed, CTX) == plaintext


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox(KEY)
    assert box.seal("same", CTX) != box.seal("same", CTX)


def test_another_instance_with_the_same_key_opens_it() -> None:
    assert SecretBox(KEY).open(SecretBox(KEY).seal("s3cret", CTX), CTX) == "s3cret"


@pytest.mark.parametrize("other_context", [
    "channel_account:2:oa:secret",  # another tenant
    "channel_account:1:mp:secret",  # another account kind
    "channel_account:1:oa:aes_key",  # another column
    "",
])
def test_a_ciphertext_moved_to_another_context_does_not_open(other_context: str) -> None:
    box = SecretBox(KEY)
    sealed = box.seal("s3cret", CTX)
    with pytest.raises(ConfigurationError, match="integrity"):
        box.open(sealed, other_context)


def _flip(sealed: str, index: int) -> str:
    prefix, key_id, payload = sealed.split(":", 2)
    raw = bytearray(base64.b64decode(payload))
    raw[index] ^= 0x01
    return f"{prefix}:{key_id}:{base64.b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize("index", [0, 11, 12, -1], ids=["nonce-start", "nonce-end", "ciphertext", "tag"])
def test_tampering_is_detected(index: int) -> None:
    box = SecretBox(KEY)
    sealed = box.seal("s3cret value", CTX)
    with pytest.raises(ConfigurationError, match="integrity"):
        box.open(_flip(sealed, index), CTX)


@pytest.mark.parametrize("garbage", ["", "plain text", "v2:abcdef12:AAAA", "v1"])
def test_malformed_values_are_refused_with_a_clear_error(garbage: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretBox(KEY).open(garbage, CTX)


def test_a_value_sealed_under_an_unknown_key_names_the_fix() -> None:
    sealed = SecretBox(OLD_KEY).seal("s3cret", CTX)
    with pytest.raises(ConfigurationError, match="SIYU_PREVIOUS_SECRET_KEYS"):
        SecretBox(KEY).open(sealed, CTX)


def test_previous_keys_still_open_and_new_values_use_the_current_key() -> None:
    old_sealed = SecretBox(OLD_KEY).seal("s3cret", CTX)
    box = SecretBox(KEY, previous_keys=(OLD_KEY,))
    assert box.open(old_sealed, CTX) == "s3cret"
    assert box.key_id_of(old_sealed) == SecretBox(OLD_KEY).current_key_id
    new_sealed = box.seal("s3cret", CTX)
    assert box.key_id_of(new_sealed) == box.current_key_id != SecretBox(OLD_KEY).current_key_id
    with pytest.raises(ConfigurationError):
        SecretBox(OLD_KEY).open(new_sealed, CTX)  # sealed under the new key only


def test_needs_rotation() -> None:
    box = SecretBox(KEY, previous_keys=(OLD_KEY,))
    assert box.needs_rotation(SecretBox(OLD_KEY).seal("s", CTX))
    assert not box.needs_rotation(box.seal("s", CTX))
    # The old key listed again as "previous" does not change which key is current.
    assert SecretBox(KEY, previous_keys=(KEY, OLD_KEY)).current_key_id == SecretBox(KEY).current_key_id


def test_derived_keys_differ_per_purpose_and_secret() -> None:
    assert len(derive_key(KEY, "secrets")) == 32
    assert derive_key(KEY, "secrets") == derive_key(KEY, "secrets")
    assert derive_key(KEY, "secrets") != derive_key(KEY, "csrf")
    assert derive_key(KEY, "secrets") != derive_key(OLD_KEY, "secrets")
    assert SecretBox(KEY).current_key_id != SecretBox(OLD_KEY).current_key_id


def test_mask_never_shows_more_than_the_last_characters() -> None:
    assert mask("") == ""
    assert mask("short") == "•" * 8
    assert mask("12345678") == "•" * 8
    assert mask("oaSecret0123456789abcdef01234567") == "•" * 8 + "4567"
    assert "oaSecret" not in mask("oaSecret0123456789abcdef01234567")


def test_hash_helpers() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")

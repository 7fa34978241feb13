"""Secrets at rest: AES-256-GCM under a key derived from SIYU_SECRET_KEY.

A stored value looks like `v1:<key id>:<base64(nonce || ciphertext+tag)>`. The key id (8 hex chars of a
hash of the derived key) tells which key sealed a value, so `siyu secrets rotate` can find values that
are not yet under the current key and reading keeps working with SIYU_PREVIOUS_SECRET_KEYS meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from siyu.core.errors import ConfigurationError

_PREFIX = "v1"


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose; different purposes never share key material."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"siyu", info=f"siyu:{purpose}".encode()
    ).derive(secret_key.encode())


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"siyu-key-id" + key).hexdigest()[:8]


class SecretBox:
    def __init__(self, secret_key: str, previous_keys: tuple[str, ...] = ()) -> None:
        current = derive_key(secret_key, "secrets")
        self._current_id = _key_id(current)
        self._keys: dict[str, bytes] = {self._current_id: current}
        for old in previous_keys:
            k = derive_key(old, "secrets")
            self._keys.setdefault(_key_id(k), k)

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def seal(self, plaintext: str, context: str = "") -> str:
        """Encrypt; `context` (e.g. "channel_account:12:secret") is bound as associated data,
        so a ciphertext copied into another row or column does not decrypt."""
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[self._current_id]).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}:{self._current_id}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, context: str = "") -> str:
        try:
            prefix, key_id, payload = sealed.split(":", 2)
        except ValueError as exc:
            raise ConfigurationError("a stored secret is not in the expected format") from exc
        if prefix != _PREFIX:
            raise ConfigurationError(f"unknown secret format {prefix!r}")
        key = self._keys.get(key_id)
        if key is None:
            raise ConfigurationError(
                "a stored secret was sealed with a key Siyu does not have; set SIYU_PREVIOUS_SECRET_KEYS "
                "to the old SIYU_SECRET_KEY and run `siyu secrets rotate`"
            )
        raw = base64.b64decode(payload)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode()).decode()
        except Exception as exc:  # InvalidTag: tampered, or bound to another row
            raise ConfigurationError("a stored secret failed its integrity check") from exc

    def key_id_of(self, sealed: str) -> str:
        return sealed.split(":", 2)[1]

    def needs_rotation(self, sealed: str) -> bool:
        return self.key_id_of(sealed) != self._current_id


def mask(value: str, keep: int = 4) -> str:
    """What a page may show of a secret: its length class and last characters, never more."""
    if not value:
        return ""
    if len(value) <= keep * 2:
        return "•" * 8
    return "•" * 8 + value[-keep:]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def box() -> SecretBox:
    """The process's secret box, built from the current settings."""
    from siyu.core.settings import get_settings

    s = get_settings()
    return _box_for(s.secret_key, s.previous_secret_keys)


@lru_cache(maxsize=4)
def _box_for(secret_key: str, previous: tuple[str, ...]) -> SecretBox:
    return SecretBox(secret_key, previous)

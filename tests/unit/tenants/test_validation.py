"""Field rules shared by the pages, the live checks, the CLI and the API."""

from __future__ import annotations

import pytest

from siyu.core.errors import InvalidInput
from siyu.tenants import validation as v


def ok(checker: v.Checker, value: str) -> bool:
    return checker(value) is None


@pytest.mark.parametrize("value", ["wx0123456789abcdef", "wxffffffffffffffff", "wx0000000000000000"])
def test_app_id_accepts(value: str) -> None:
    assert ok(v.check_app_id, value)


@pytest.mark.parametrize("value", [
    "", "wx0123456789abcde", "wx0123456789abcdef0", "wx0123456789ABCDEF", "WX0123456789abcdef",
    "ww0123456789abcdef", "wx0123456789abcdeg", " wx0123456789abcdef", "wx0123456789abcdef\n",
    "wx０123456789abcdef",  # a full-width digit pasted from a Chinese document
])
def test_app_id_refuses(value: str) -> None:
    assert not ok(v.check_app_id, value)


def test_app_id_messages() -> None:
    assert v.check_app_id("") == "This field is required."
    assert "16 hexadecimal" in (v.check_app_id("wx123") or "")


@pytest.mark.parametrize(("value", "valid"), [
    ("ww00112233445566aa", True), ("wwffffffffffffffff", True), ("", False), ("wx00112233445566aa", True),
    ("wy00112233445566aa", False),
    ("ww00112233445566a", False), ("ww00112233445566aaa", False), ("ww00112233445566AA", False),
])
def test_corp_id(value: str, valid: bool) -> None:
    assert ok(v.check_corp_id, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", True),
    ("0" * 43, True),
    ("a" * 42, False),
    ("a" * 44, False),
    ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=", False),  # base64 padding is not part of it
    ("abcdefghijklmnopqrstuvwxyz0123456789ABCDE+/", False),
    ("", False),
])
def test_encoding_aes_key(value: str, valid: bool) -> None:
    assert ok(v.check_aes_key, value) is valid


def test_encoding_aes_key_error_tells_the_length() -> None:
    err = v.check_field(v.OA_FIELDS, "aes_key", "a" * 42)
    assert err is not None
    assert err.params == {"n": 42}
    assert err.message.format(**err.params).endswith("this one has 42.")


@pytest.mark.parametrize(("value", "valid"), [
    ("abc", True), ("A" * 32, True), ("Token123", True),
    ("ab", False), ("A" * 33, False), ("tok en", False), ("tok-en", False), ("tok_en", False), ("", False),
    ("令牌abc", False),
])
def test_token(value: str, valid: bool) -> None:
    assert ok(v.check_token, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("a", True), ("acme", True), ("acme-shanghai-2", True), ("0", True), ("a" * 40, True),
    ("", False), ("a" * 41, False), ("Acme", False), ("-acme", False), ("acme-", False), ("ac me", False),
    ("ac_me", False), ("acmé", False), ("acme\n", False),
])
def test_slug(value: str, valid: bool) -> None:
    assert ok(v.check_slug, value) is valid


@pytest.mark.parametrize("reserved", ["admin", "api", "static", "wechat", "platform", "settings", "login", "logout"])
def test_reserved_slugs(reserved: str) -> None:
    assert v.check_slug(reserved) == "This name is reserved."


@pytest.mark.parametrize(("value", "valid"), [
    ("a@b.cn", True), ("first.last+tag@acme.example.com", True), ("王@例子.中国", True),
    ("", False), ("plain", False), ("@acme.test", False), ("a@", False), ("a@b", False), ("a@b.c", False),
    ("a b@acme.test", False), ("a@@acme.test", False), ("a@acme .test", False),
    ("x" * 65 + "@acme.test", False), ("a@" + "b" * 250 + ".cn", False),
])
def test_email(value: str, valid: bool) -> None:
    assert ok(v.check_email, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("Asia/Shanghai", True), ("Europe/Berlin", True), ("UTC", True), ("America/Argentina/Buenos_Aires", True),
    ("", False), ("Mars/Olympus", False), ("asia/shanghai_x", False), ("../../etc/passwd", False), ("/etc/localtime", False),
])
def test_time_zone(value: str, valid: bool) -> None:
    assert ok(v.check_timezone, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("oaSecret0123456789abcdef01234567", True), ("a" * 16, True), ("a" * 64, True), ("ab-_" * 4, True),
    ("a" * 15, False), ("a" * 65, False), ("secret with spaces 0123", False), ("", False),
])
def test_secret(value: str, valid: bool) -> None:
    assert ok(v.check_secret, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("", True), ("gh_0123456789ab", True), ("gh_0123456789a", False), ("GH_0123456789ab", False),
    ("gh_0123456789AB", False),
])
def test_original_id_is_optional_but_checked(value: str, valid: bool) -> None:
    assert ok(v.check_original_id, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("1000002", True), ("1", True), ("", False), ("abc", False), ("-1", False), ("12345678901", False),
])
def test_agent_id(value: str, valid: bool) -> None:
    assert ok(v.check_agent_id, value) is valid


@pytest.mark.parametrize(("value", "valid"), [
    ("0", True), ("500", True), ("10", True), ("-1", False), ("501", False), ("ten", False), ("", False),
    ("1.5", False),
])
def test_capacity(value: str, valid: bool) -> None:
    assert ok(v.check_capacity, value) is valid


def test_password_length_bounds() -> None:
    assert not ok(v.check_password, "x" * 9)
    assert ok(v.check_password, "x" * 10)
    assert ok(v.check_password, "x" * 256)
    assert not ok(v.check_password, "x" * 257)


def test_locale_and_choices() -> None:
    assert ok(v.check_locale, "zh_CN") and ok(v.check_locale, "en")
    assert not ok(v.check_locale, "zh-CN")
    mode = v.OA_FIELDS["mode"]
    assert ok(mode, "safe") and not ok(mode, "SAFE")
    err = v.check_field(v.OA_FIELDS, "mode", "encrypted")
    assert err is not None and err.params == {"choices": "safe, compatible, plain"}


def test_validate_names_every_wrong_field_and_strips_values() -> None:
    with pytest.raises(InvalidInput) as info:
        v.validate(v.WECOM_FIELDS, {"corp_id": "wz0123456789abcdef", "agent_id": " 1000002 ", "secret": "short",
                                    "token": "ok123", "aes_key": ""})
    assert set(info.value.by_field()) == {"corp_id", "secret", "aes_key"}
    clean = v.validate(v.OA_FIELDS, {"app_id": " wx0123456789abcdef ", "app_secret": "oaSecret0123456789abcdef",
                                     "token": "Tok123", "aes_key": "a" * 43, "mode": "safe", "oa_kind": "service"})
    assert clean["app_id"] == "wx0123456789abcdef"
    assert clean["original_id"] == ""


def test_validate_optional_fields_may_be_blank() -> None:
    data = {"app_id": "wx0123456789abcdef", "app_secret": "", "token": "Tok123", "aes_key": "", "mode": "safe",
            "oa_kind": "service"}
    with pytest.raises(InvalidInput):
        v.validate(v.OA_FIELDS, data)
    clean = v.validate(v.OA_FIELDS, data, optional=("app_secret", "aes_key"))
    assert clean["app_secret"] == clean["aes_key"] == ""

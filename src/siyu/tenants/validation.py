"""Field rules shared by the onboarding pages, the live (as-you-type) checks, the CLI and the API.

Each checker returns an English message (a gettext msgid, translated where it is shown) or None.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

from siyu.core.errors import FieldError, InvalidInput

N_ = str  # marks a string for the gettext catalog; translated at display time

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
APP_ID_RE = re.compile(r"^wx[0-9a-f]{16}$")
CORP_ID_RE = re.compile(r"^w[wx][0-9a-f]{16}$")  # corps created before 2017 have "wx" CorpIDs
AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9]{3,32}$")
ORIGINAL_ID_RE = re.compile(r"^gh_[0-9a-f]{12}$")
AGENT_ID_RE = re.compile(r"^[0-9]{1,10}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

LOCALES = ("zh_CN", "en")
ROLES = ("platform_admin", "tenant_admin", "agent")
TENANT_ROLES = ("tenant_admin", "agent")
MIN_PASSWORD = 10

Checker = Callable[[str], str | None]


def required(value: str) -> str | None:
    return N_("This field is required.") if not value.strip() else None


def check_slug(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not SLUG_RE.fullmatch(value):
        return N_("Use 1–40 lower-case letters, digits and hyphens, starting and ending with a letter or digit.")
    if value in {"admin", "api", "static", "wechat", "platform", "settings", "login", "logout"}:
        return N_("This name is reserved.")
    return None


def check_app_id(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not APP_ID_RE.fullmatch(value):
        return N_("An AppID is “wx” followed by 16 hexadecimal characters (0–9, a–f).")
    return None


def check_corp_id(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not CORP_ID_RE.fullmatch(value):
        return N_("A CorpID is “ww” (older corps: “wx”) followed by 16 hexadecimal characters (0–9, a–f).")
    return None


def check_aes_key(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not AES_KEY_RE.fullmatch(value):
        return N_("The EncodingAESKey is exactly 43 letters and digits (A–Z, a–z, 0–9); this one has {n}.")
    return None


def check_token(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not TOKEN_RE.fullmatch(value):
        return N_("The Token is 3–32 letters and digits.")
    return None


def check_secret(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not SECRET_RE.fullmatch(value):
        return N_("This secret looks wrong: copy it again from the console (16–64 letters, digits, - or _).")
    return None


def check_original_id(value: str) -> str | None:
    if value and not ORIGINAL_ID_RE.fullmatch(value):
        return N_("The original ID is “gh_” followed by 12 hexadecimal characters.")
    return None


def check_agent_id(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not AGENT_ID_RE.fullmatch(value):
        return N_("The AgentID is a number, such as 1000002.")
    return None


def check_email(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not EMAIL_RE.fullmatch(value) or len(value) > 254:
        return N_("Enter a valid email address.")
    return None


def check_password(value: str) -> str | None:
    if len(value) < MIN_PASSWORD:
        return N_("Use at least {n} characters.")
    if len(value) > 256:
        return N_("Use at most 256 characters.")
    return None


def check_name(value: str) -> str | None:
    if not value.strip():
        return N_("This field is required.")
    if len(value) > 120:
        return N_("Use at most 120 characters.")
    return None


def check_timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return N_("Unknown time zone; use a name such as Asia/Shanghai or Europe/Berlin.")
    return None


def check_locale(value: str) -> str | None:
    return None if value in LOCALES else N_("Choose zh_CN or en.")


def choice(*allowed: str) -> Checker:
    def check(value: str) -> str | None:
        return None if value in allowed else N_("Choose one of: {choices}.")

    check.choices = allowed  # type: ignore[attr-defined]
    return check


def check_capacity(value: str) -> str | None:
    try:
        n = int(value)
    except ValueError:
        return N_("Enter a whole number.")
    return None if 0 <= n <= 500 else N_("Enter a number from 0 to 500.")


# The fields of each linked-account form, with their rules.
OA_FIELDS: dict[str, Checker] = {
    "app_id": check_app_id,
    "app_secret": check_secret,
    "token": check_token,
    "aes_key": check_aes_key,
    "mode": choice("safe", "compatible", "plain"),
    "oa_kind": choice("service", "subscription"),
    "original_id": check_original_id,
}
MP_FIELDS: dict[str, Checker] = {
    "app_id": check_app_id,
    "app_secret": check_secret,
    "token": check_token,
    "aes_key": check_aes_key,
    "push_format": choice("xml", "json"),
    "original_id": check_original_id,
}
WECOM_FIELDS: dict[str, Checker] = {
    "corp_id": check_corp_id,
    "agent_id": check_agent_id,
    "secret": check_secret,
    "token": check_token,
    "aes_key": check_aes_key,
}
CHANNEL_FIELDS = {"oa": OA_FIELDS, "mp": MP_FIELDS, "wecom": WECOM_FIELDS}


def params_for(field_name: str, checker: Checker, value: str) -> dict[str, object]:
    if checker is check_aes_key:
        return {"n": len(value)}
    if checker is check_password:
        return {"n": MIN_PASSWORD}
    choices = getattr(checker, "choices", None)
    if choices:
        return {"choices": ", ".join(choices)}
    return {}


def check_field(rules: Mapping[str, Checker], field_name: str, value: str) -> FieldError | None:
    checker = rules.get(field_name)
    if checker is None:
        return None
    message = checker(value)
    if message is None:
        return None
    return FieldError(field_name, message, params_for(field_name, checker, value))


def validate(rules: Mapping[str, Checker], data: Mapping[str, Any], optional: tuple[str, ...] = ()) -> dict[str, str]:
    """Check every field; raise one InvalidInput naming all wrong fields. Returns the cleaned strings."""
    cleaned: dict[str, str] = {}
    errors: list[FieldError] = []
    for name in rules:
        raw = data.get(name)
        value = "" if raw is None else str(raw).strip()
        if not value and name in optional:
            cleaned[name] = ""
            continue
        err = check_field(rules, name, value)
        if err:
            errors.append(err)
        cleaned[name] = value
    if errors:
        raise InvalidInput(errors)
    return cleaned

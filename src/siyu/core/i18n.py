"""zh-CN / en through gettext catalogs (`frontend/locale/<locale>/LC_MESSAGES/messages.po`).

English is the source language (msgids). The current locale is a context variable set per request.
"""

from __future__ import annotations

import contextvars
from functools import cache
from pathlib import Path

from siyu.core.errors import FieldError
from siyu.core.settings import FRONTEND_DIR

LOCALES = ("zh_CN", "en")


def N_(message: str) -> str:
    """Marks a string for the catalog; it is translated where it is shown."""
    return message


LOCALE_NAMES = {"zh_CN": "简体中文", "en": "English"}
LOCALE_DIR = FRONTEND_DIR / "locale"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("siyu_locale", default="zh_CN")


@cache
def catalog(locale: str) -> dict[str, str]:
    """msgid → msgstr for a locale; fuzzy and empty entries fall back to English."""
    path = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if not Path(path).exists():
        return {}
    from babel.messages.pofile import read_po

    with open(path, "rb") as fh:
        cat = read_po(fh, locale=locale)
    out: dict[str, str] = {}
    for msg in cat:
        if not msg.id or msg.fuzzy:
            continue
        if isinstance(msg.id, tuple):  # plural entry: keep singular and plural forms
            forms = msg.string if isinstance(msg.string, (list, tuple)) else (msg.string,)
            if forms and forms[0]:
                out[msg.id[0]] = forms[0]
                out[msg.id[1]] = forms[-1]
        elif msg.string:
            out[msg.id] = msg.string
    return out


def set_locale(locale: str) -> contextvars.Token[str]:
    return _current.set(locale if locale in LOCALES else "zh_CN")


def get_locale() -> str:
    return _current.get()


def gettext(message: str) -> str:
    locale = _current.get()
    if locale == "en":
        return message
    return catalog(locale).get(message, message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return gettext(singular if n == 1 else plural)


def translate_error(err: FieldError) -> str:
    text = gettext(err.message)
    try:
        return text.format(**err.params)
    except (KeyError, IndexError, ValueError):
        return text


def negotiate(accept_language: str | None, fallback: str) -> str:
    """Pick zh_CN or en from an Accept-Language header."""
    if not accept_language:
        return fallback
    best: tuple[float, str] | None = None
    for part in accept_language.split(","):
        lang, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        lang = lang.lower()
        code = "zh_CN" if lang.startswith("zh") else "en" if lang.startswith("en") else None
        if code and (best is None or weight > best[0]):
            best = (weight, code)
    return best[1] if best else fallback

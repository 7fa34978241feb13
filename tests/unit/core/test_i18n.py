"""Every message the code and templates can show has its zh_CN translation, and placeholders agree."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from siyu.core import i18n
from siyu.core.errors import FieldError

ROOT = Path(__file__).resolve().parents[3]
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}


def _extracted() -> set[str]:
    found: set[str] = set()
    for directory, method_map, options in [
        (ROOT / "src", [("**.py", "python")], {}),
        (ROOT / "frontend" / "templates", [("**.html", "jinja2")], {"**.html": {"extensions": "jinja2.ext.i18n"}}),
    ]:
        for _filename, _lineno, message, _comments, _context in extract_from_dir(
            str(directory), method_map, options_map=options, keywords=KEYWORDS
        ):
            for m in message if isinstance(message, tuple) else (message,):
                if m:
                    found.add(m)
    return found


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\(\w+\)s|\{\w+\}", text))


def test_every_message_has_a_chinese_translation() -> None:
    messages = _extracted()
    assert len(messages) > 150  # the extraction itself works
    catalog = i18n.catalog("zh_CN")
    missing = sorted(m for m in messages if not catalog.get(m))
    assert missing == [], f"add these to frontend/locale/zh_CN/LC_MESSAGES/messages.po: {missing}"


def test_translations_keep_their_placeholders() -> None:
    path = ROOT / "frontend/locale/zh_CN/LC_MESSAGES/messages.po"
    with open(path, "rb") as fh:
        cat = read_po(fh, locale="zh_CN")
    wrong = []
    for msg in cat:
        if not msg.id:
            continue
        ids = msg.id if isinstance(msg.id, tuple) else (msg.id,)
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        for s in strings:
            if _placeholders(s) != _placeholders(ids[-1]):
                wrong.append((ids[0], s))
    assert wrong == []


def test_gettext_follows_the_current_locale() -> None:
    token = i18n.set_locale("zh_CN")
    try:
        assert i18n.gettext("Sign in") == "登录"
        assert i18n.ngettext("%(num)s member", "%(num)s members", 3) == "%(num)s 名成员"
        err = FieldError("aes_key", "The EncodingAESKey is exactly 43 letters and digits (A–Z, a–z, 0–9); "
                                    "this one has {n}.", {"n": 12})
        assert "当前为 12 位" in i18n.translate_error(err)
        i18n.set_locale("en")
        assert i18n.gettext("Sign in") == "Sign in"
        assert "this one has 12" in i18n.translate_error(err)
    finally:
        i18n._current.reset(token)


def test_accept_language_negotiation() -> None:
    assert i18n.negotiate("en-GB,en;q=0.9,zh-CN;q=0.8", "zh_CN") == "en"
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.5", "en") == "zh_CN"
    assert i18n.negotiate("fr-FR", "zh_CN") == "zh_CN"
    assert i18n.negotiate(None, "en") == "en"

"""Every audit action the code writes reads as a sentence in both languages.

The codes are found the way a reader of the code would: every call of `record_audit` under src/, its action
argument read from the syntax tree (a literal, an f-string, a conditional, or a name assigned in the same
function). A code with no sentence in `siyu.tenants.audit.SENTENCES` fails here, like a message without its
Chinese fails the i18n test.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from siyu.core import i18n
from siyu.tenants import audit

SRC = Path(__file__).resolve().parents[3] / "src" / "siyu"
# What each name in an f-string action can be. A new name fails the scan until it is listed here.
DYNAMIC = {
    "kind": ("oa", "mp", "wecom"),  # channel.{kind}.… : the linked account's kind
    "msg_type": ("wecom_task", "template", "subscribe"),  # conversation.{msg_type}: the alternatives to a reply
    # (inbox.actions: "wecom_task", and a Notice's kind from inbox.config: "template" | "subscribe")
}


def _values(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> list[str]:
    """Every string an action expression can be."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _values(node.body, assigned) + _values(node.orelse, assigned)
    if isinstance(node, ast.Name) and node.id in assigned:
        return [v for expr in assigned[node.id] for v in _values(expr, assigned)]
    if isinstance(node, ast.JoinedStr):
        choices: list[list[str]] = []
        for piece in node.values:
            if isinstance(piece, ast.Constant):
                choices.append([str(piece.value)])
            elif isinstance(piece, ast.FormattedValue):
                inner = piece.value
                if isinstance(inner, ast.Name) and inner.id in DYNAMIC:
                    choices.append(list(DYNAMIC[inner.id]))
                else:
                    choices.append(_values(inner, assigned))
        return ["".join(p) for p in itertools.product(*choices)]
    raise AssertionError(f"cannot tell which action codes {ast.unparse(node)!r} stands for: "
                         "write it as a literal, or list its name in DYNAMIC")


def written_codes() -> dict[str, list[str]]:
    """Action code → where it is written (file:line)."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
            assigned: dict[str, list[ast.expr]] = {}
            for n in ast.walk(func):
                if isinstance(n, ast.Assign):
                    for target in n.targets:
                        if isinstance(target, ast.Name):
                            assigned.setdefault(target.id, []).append(n.value)
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                if name != "record_audit" or func.name == "record_audit":
                    continue
                action = next((k.value for k in call.keywords if k.arg == "action"), None)
                if action is None:
                    assert len(call.args) >= 3, f"{path}:{call.lineno}: record_audit without an action"
                    action = call.args[2]
                for code in _values(action, assigned):
                    found.setdefault(code, []).append(f"{path.relative_to(SRC.parent)}:{call.lineno}")
    return found


def test_the_scan_finds_the_writers() -> None:
    codes = written_codes()
    # One of each form: a literal, an f-string over the account kind, a conditional, a name set from one.
    for expected in ("staff.signed_in", "channel.wecom.unlinked", "auto_reply.disabled", "tenant.reactivated",
                     "conversation.subscribe"):
        assert expected in codes
    assert len(codes) > 40


def test_every_action_written_has_a_sentence() -> None:
    missing = {code: where for code, where in written_codes().items() if code not in audit.SENTENCES}
    assert missing == {}, f"give these audit actions a Sentence in src/siyu/tenants/audit.py: {missing}"


def test_every_sentence_is_for_an_action_written_somewhere() -> None:
    stale = sorted(set(audit.SENTENCES) - set(written_codes()))
    assert stale == [], f"no code writes these any more; drop their sentences: {stale}"


# --- each sentence, rendered ------------------------------------------------------------------------

def sample(code: str) -> dict[str, Any]:
    """An entry for `code` with the changes its writer records."""
    changes: dict[str, Any] = {
        "name": "Spring VIPs", "slug": "acme", "app_id": "wx0123456789abcdef", "accounts": 2, "prefix": "ab12cd34",
        "email": "rita@acme.test", "role": "agent", "tag": "VIP", "merged": 12, "survivor": 7, "merge_id": 3,
        "reason": "unionid", "identities": 2, "events": 5, "contact": 9, "shortcut": "price", "owner": "wangfang",
        "ok": False, "errcode": 40164, "presence": ["offline", "online"], "trigger": "keyword",
        "keyword": "价格", "match_type": "contains", "message": 44, "template_id": "TPL_0123456789",
    }
    if audit.SENTENCES[code].diff:
        changes = {"name": ["Old", "New"], "presence": ["offline", "online"], "status": ["active", "suspended"],
                   "role": ["agent", "tenant_admin"], "shortcut": ["p", "price"],
                   "erase_on_unfollow": [True, False], "reply": ["旧", "新"]}
        if code.startswith("auto_reply."):
            changes["rule"] = {"trigger": "click", "menu_key": "MENU_HUMAN"}
    return {"id": 1, "actor": 5, "actor_label": "admin@acme.test", "action": code, "target_type": "x",
            "target_id": "17", "changes": changes, "ip": "10.0.0.1", "actor_platform": False}


NAMES = audit.Names(staff={5: "Léa Martin", 17: "Wang Fang"}, teams={17: "Shanghai sales"},
                    keys={17: ("MP backend", "ab12cd34")})


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
@pytest.mark.parametrize("code", sorted(audit.SENTENCES))
def test_each_sentence_names_who_did_what_without_codes(code: str, locale: str) -> None:
    token = i18n.set_locale(locale)
    try:
        said = audit.describe(sample(code), NAMES)
    finally:
        i18n._current.reset(token)
    assert said.text.startswith("Léa Martin")  # who
    assert "{" not in said.text and "}" not in said.text, said.text  # every placeholder filled
    plain = re.sub(r"siyu_\w+_…|\S+@\S+", "", said.text)  # an API key's visible prefix, emails
    assert not re.search(r"\b[a-z]+[._][a-z_.]+\b", plain), said.text  # no raw codes (staff.signed_in, tenant_admin)
    assert "\\u" not in said.text and "\\u" not in str(said.details)
    assert str(said.html).startswith('<a href="/settings/staff/5">Léa Martin</a>')
    if locale == "zh_CN":
        assert re.search(r"[\u4e00-\u9fff]", said.text.replace("价格", "")), f"not in Chinese: {said.text}"
        english = i18n.gettext(audit.SENTENCES[code].text)
        assert english != audit.SENTENCES[code].text
    for label, _value in said.details:
        assert not re.fullmatch(r"[a-z_]+", label), f"{code}: the field {label!r} has no words"


def test_the_objects_named_are_links_and_values_are_escaped() -> None:
    token = i18n.set_locale("en")
    try:
        _links_and_escaping()
    finally:
        i18n._current.reset(token)


def _links_and_escaping() -> None:
    entry = sample("contact.merged")
    html = str(audit.describe(entry, NAMES).html)
    assert '<a href="/contacts/12">contact #12</a>' in html and '<a href="/contacts/17">contact #17</a>' in html
    team = {**sample("team.created"), "changes": {"name": "<script>x</script>"}, "target_id": "99"}
    html = str(audit.describe(team, audit.Names()).html)
    assert "<script>" not in html and "&lt;script&gt;" in html
    gone = audit.describe(sample("segment.deleted"), NAMES)
    assert "<a " not in str(gone.html).replace('<a href="/settings/staff/5">', "")  # a deleted object: no link


def test_actors_that_are_not_people_are_named_in_words() -> None:
    token = i18n.set_locale("zh_CN")
    try:
        for label, words in (("system", "私域（自动）"), ("cli", "命令行"), ("demo-seed", "演示数据初始化")):
            entry = {**sample("staff.signed_in"), "actor": None, "actor_label": label}
            assert audit.describe(entry, NAMES).text.startswith(words)
        key = {**sample("contact.tagged"), "actor": None, "actor_label": "api-key:17"}
        said = audit.describe(key, NAMES)
        assert said.text.startswith("API 密钥“MP backend”")
        assert '<a href="/settings/api-keys">' in str(said.html)
        platform = {**sample("tenant.suspended"), "actor": 1, "actor_label": "root@siyu.test", "actor_platform": True}
        assert audit.describe(platform, NAMES).text.startswith("root@siyu.test（私域平台）")
    finally:
        i18n._current.reset(token)


def test_an_unknown_code_still_reads_as_a_sentence() -> None:
    token = i18n.set_locale("en")
    try:
        said = audit.describe({**sample("staff.signed_in"), "action": "future.thing"}, NAMES)
    finally:
        i18n._current.reset(token)
    assert said.text == "Léa Martin did something Siyu has no words for yet (future.thing)."

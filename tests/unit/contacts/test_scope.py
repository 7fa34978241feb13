"""The data scope's shape: the contacts and segments never name the inbox's tables (the inbox provides the
condition, the composition root injects it), and a tenant admin's list queries are exactly what they were."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from siyu.contacts import search
from siyu.contacts.scope import EVERYONE, condition, ids
from siyu.inbox.conversations import Viewer
from siyu.inbox.scope import ContactScope

SRC = Path(__file__).resolve().parents[3] / "src" / "siyu"
INBOX_TABLE = re.compile(r"\binbox_[a-z_]+\b")


def string_literals(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_contacts_and_segments_sql_never_names_the_inboxs_tables() -> None:
    offenders = [f"{path.relative_to(SRC)}: {hit}" for folder in ("contacts", "segments")
                 for path in sorted((SRC / folder).glob("*.py"))
                 for text in string_literals(path) if "SELECT" in text.upper() or "JOIN" in text.upper()
                 for hit in INBOX_TABLE.findall(text)]
    assert offenders == []
    # The check can fail: the inbox's scope does name them.
    assert any(INBOX_TABLE.search(t) for t in string_literals(SRC / "inbox" / "scope.py"))


def rep(managed: tuple[int, ...] = ()) -> Viewer:
    return Viewer(7, "Rep", False, (3,), managed, (8, 9) if managed else ())


def test_everyone_adds_nothing_so_an_admins_list_sql_is_unchanged() -> None:
    args: list[Any] = [1]
    assert condition(EVERYONE, "c", args) is None and ids(EVERYONE, args) is None and args == [1]
    admin = ContactScope(1, Viewer(1, "Admin", True, (), (), ()))
    for q in ("", "张", "o6_bmj"):
        assert search.list_query(1, q, "oa", 5, None, 25, admin) == search.list_query(1, q, "oa", 5, None, 25)
        plain, _ = search.list_query(1, q, None, None, None, 25)
        assert "inbox_" not in plain and "seen (id)" not in plain


def test_a_reps_condition_is_numbered_after_the_query_and_reads_the_scope_once_per_search() -> None:
    for viewer in (rep(), rep(managed=(4,))):
        scope = ContactScope(11, viewer)
        sql, args = search.list_query(11, "", "oa", None, None, 25, scope)
        assert args[:3] == [11, 11, 7] and args[-1] == 26  # tenant, then the scope's own, …, the limit
        placeholders = {int(n) for n in re.findall(r"\$(\d+)", sql)}
        assert placeholders == set(range(1, len(args) + 1))
        assert sql.count("inbox_conversation") == 1
        found, found_args = search.list_query(11, "张", None, None, None, 25, scope)
        assert {int(n) for n in re.findall(r"\$(\d+)", found)} == set(range(1, len(found_args) + 1))
        assert found.count("inbox_conversation") == 1 and found.count("c.id IN (SELECT id FROM seen)") == 3

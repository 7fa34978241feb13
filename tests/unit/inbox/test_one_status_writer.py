"""One writer per state machine: a conversation's status changes only in `conversations.transition`.

Every SQL text in `src/` is read (string literals, f-string parts and implicit concatenations, per
function), and a statement that sets `inbox_conversation.status` anywhere else fails this test, as does a
Piccolo write of `Conversation.status`. Creating a conversation (`INSERT … 'bot'`) is its first state, not
a change."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "siyu"
ALLOWED = {("inbox/conversations.py", "transition")}

_UPDATE = re.compile(r"UPDATE\s+inbox_conversation\b(?:\s+\w+)?\s+SET\b(?P<sets>.*?)(?:\bWHERE\b|\bRETURNING\b|$)",
                     re.IGNORECASE | re.DOTALL)
_STATUS_SET = re.compile(r"^\s*(?:\w+\.)?status\s*=", re.IGNORECASE)
_INSERT = re.compile(r"INSERT\s+INTO\s+inbox_conversation\s*\((?P<cols>[^)]*)\)\s*VALUES\s*\((?P<vals>[^)]*)\)",
                     re.IGNORECASE | re.DOTALL)
_ORM = re.compile(r"Conversation\.(?:update|insert)\b|Conversation\.status\s*:")


def _texts(node: ast.AST) -> str:
    """The SQL a function holds: its string constants (f-string parts included), in source order."""
    parts: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            parts.append(sub.value)
    return " ".join(parts)


def _items(sets: str) -> list[str]:
    """`a = 1, b = f(x, y)` → its assignments (commas inside parentheses do not split)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(sets):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(sets[start:i])
            start = i + 1
    return [*items, sets[start:]]


def writes_status(sql: str) -> bool:
    for m in _UPDATE.finditer(sql):
        if any(_STATUS_SET.match(item) for item in _items(m.group("sets"))):
            return True
    for m in _INSERT.finditer(sql):
        cols = [c.strip().lower() for c in m.group("cols").split(",")]
        if "status" in cols:
            vals = [v.strip() for v in m.group("vals").split(",")]
            if len(vals) == len(cols) and vals[cols.index("status")] != "'bot'":
                return True
    return False


def status_writers() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        rel = str(path.relative_to(SRC))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = ast.get_source_segment(source, fn) or ""
            if writes_status(_texts(fn)) or _ORM.search(body):
                found.append((rel, fn.name))
    # A nested function is also inside its parent: keep the innermost names only once.
    return sorted(set(found))


def test_the_detector_sees_status_writes() -> None:
    # The statement `do_reply` used to run (snoozed → assigned behind the transition's back).
    assert writes_status("UPDATE inbox_conversation SET last_message_at = $3, preview = $4, unread = 0, "
                         "status = CASE WHEN status = 'snoozed' THEN 'assigned' ELSE status END, "
                         "snoozed_until = NULL WHERE tenant = $1 AND id = $2 RETURNING *")
    assert writes_status("update inbox_conversation c set status='queued' where c.id = $1")
    assert writes_status("INSERT INTO inbox_conversation (tenant, identity, status) VALUES ($1, $2, 'queued')")
    assert not writes_status("INSERT INTO inbox_conversation (tenant, identity, status) VALUES ($1, $2, 'bot')")
    assert not writes_status("UPDATE inbox_conversation SET unread = unread + CASE WHEN status IN "
                             "('assigned', 'snoozed') THEN 1 ELSE 0 END WHERE tenant = $1")
    assert not writes_status("UPDATE inbox_conversation SET teams = $3 WHERE tenant = $1 AND status = 'queued'")
    assert not writes_status("UPDATE inbox_conversation SET first_response_at = CASE WHEN status = 'assigned' "
                             "THEN COALESCE(first_response_at, $3) ELSE first_response_at END WHERE id = $1")


def test_only_the_transition_function_writes_a_conversations_status() -> None:
    writers = status_writers()
    assert set(writers) - ALLOWED == set(), f"status written outside conversations.transition: {writers}"

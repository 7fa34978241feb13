"""One writer per state machine: only `siyu.engagement.ledger` writes the delivery ledger. The source is
scanned (nothing imported): every SQL string that writes `engagement_delivery`, and every Piccolo write of its
table class, must be in that module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "siyu"
WRITER = SRC / "engagement" / "ledger.py"
WRITES = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+engagement_delivery\b", re.IGNORECASE)


def sql_strings(path: Path) -> list[str]:
    """Each string literal, with the adjacent literals Python joins and f-strings' constant parts."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            found.append("".join(v.value for v in node.values if isinstance(v, ast.Constant)
                                 and isinstance(v.value, str)))
    return found


def writers() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if any(WRITES.search(s) for s in sql_strings(path)) or re.search(r"\bDelivery\.(update|insert|delete)\(", text):
            out.append(str(path.relative_to(SRC)))
    return out


def test_only_the_ledger_writes_deliveries() -> None:
    assert writers() == ["engagement/ledger.py"]


def test_the_scan_would_see_another_writer(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('SQL = ("UPDATE engagement_delivery "\n       "SET state = \'sent\'")\n', encoding="utf-8")
    assert any(WRITES.search(s) for s in sql_strings(sneaky))
    assert any(WRITES.search(s) for s in sql_strings(WRITER))

"""The simulator stands alone: it imports nothing of Siyu outside itself (so it could be lifted out), and
besides the standard library only WeChat's SDK (for WeChat's crypto), `cryptography` (for WeChat Pay's: RSA
signatures, AES-GCM), httpx, Litestar and click."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SIMULATOR = Path(__file__).resolve().parents[3] / "src" / "siyu" / "simulator"
ALLOWED_THIRD_PARTY = {"wechatpy", "cryptography", "httpx", "litestar", "click"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            found.add("__import__")  # dynamic imports would dodge this test
    return found


def test_the_simulator_imports_only_itself_the_stdlib_and_its_five_libraries() -> None:
    files = sorted(SIMULATOR.glob("*.py"))
    assert {f.name for f in files} >= {"app.py", "api.py", "oa_mp.py", "wecom.py", "wire.py", "push.py", "control.py",
                                       "state.py", "rules.py", "cli.py", "pay.py", "pay_control.py"}
    offenders = []
    for f in files:
        for name in imports(f):
            top = name.split(".")[0]
            if name == "siyu.simulator" or name.startswith("siyu.simulator."):
                continue
            if top in sys.stdlib_module_names or top == "__future__" or top in ALLOWED_THIRD_PARTY:
                continue
            offenders.append(f"{f.name}: {name}")
    assert offenders == []

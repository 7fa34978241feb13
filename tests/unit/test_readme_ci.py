"""A new machine needs `make run` and `make test`: the README says so, CI runs the same, `make help` lists them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_make_run_and_make_test() -> None:
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    for target in ("run", "test"):
        # A line that is the command, as typed: optional `$ ` prompt, optional trailing `# comment`.
        line = rf"^\s*(\$\s*)?make {target}(\s+#.*)?\s*$"
        assert re.search(line, text, re.MULTILINE), f"README shows no `make {target}` command line"


def test_ci_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    commands = [line.strip() for line in script.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands
    assert script.stat().st_mode & 0o111, ".ci/run is not executable"


def test_make_help_lists_run_and_test() -> None:
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    targets = {line.split()[0]: line for line in plain.splitlines() if line.strip()}
    assert "run" in targets and "test" in targets, plain
    assert len(targets["run"].split()) > 1 and len(targets["test"].split()) > 1  # each has a description

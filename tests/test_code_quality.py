"""Lint and strict type checks run with the tests, so CI holds the code to them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_deploy import OWN_PACKAGES

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
)
def test_tool_passes(command: list[str]) -> None:
    tool = BIN / command[0]
    if not tool.exists() and shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (pip install -e '.[dev]')")
    exe = str(tool) if tool.exists() else command[0]
    out = subprocess.run([exe, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


PACKAGES = (*sorted(OWN_PACKAGES - {"tests"}), "bench")
# A function longer than this says why on the line before it: "# long: <reason>".
MAX_FUNCTION_LINES = 60


def long_functions(root: Path) -> list[str]:
    """Each function of the packages over ``MAX_FUNCTION_LINES`` lines with no ``# long:``
    comment on the line above its ``def`` (or above its decorators)."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines), str(path))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                above = lines[first - 2].strip() if first >= 2 else ""
                if length > MAX_FUNCTION_LINES and not above.startswith("# long:"):
                    where = path.relative_to(root)
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_functions_say_why() -> None:
    assert long_functions(ROOT) == []


def test_a_long_function_is_found(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "api" / "m.py").write_text(
        f"def short():\n    pass\n\n\ndef too_long():\n{body}\n\n# long: a table\n"
        f"@staticmethod\ndef said_why():\n{body}"
    )
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    assert long_functions(tmp_path) == [f"api/m.py:5 too_long ({MAX_FUNCTION_LINES + 1} lines)"]

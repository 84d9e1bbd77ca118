"""The package map in docs/architecture.md holds: import-linter checks every import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = Path(sys.executable).parent / "lint-imports"
PACKAGES = [
    "fitq", "api", "worker", "dispatcher", "checks", "storage", "queueing", "migrations",
    "core", "models",
]  # fmt: skip


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(LINT), "--config", "pyproject.toml", "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_imports_follow_the_map() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("models/tables.py", "import core.settings", "layers"),
        ("api/errors.py", "import worker.tasks", "layers"),
        ("checks/catalog.py", "import keras", "TensorFlow"),
        ("worker/training/resume.py", "import worker.training.runner", "No cycle"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    """The check can fail: a copy of the tree with one import against the map."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode != 0, out.stdout[-3000:]
    broken = [line for line in out.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract.lower() in line.lower() for line in broken), out.stdout[-3000:]

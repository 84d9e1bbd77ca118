"""What each benchmark records besides its figures: the machine it ran on, and its own
marked section of ``docs/benchmarks.md``."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    # psutil has no CPU model name; the kernel's cpuinfo is where it is.
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def versions(modules: list[str]) -> list[str]:
    """Each module's ``__version__``, imported in a fresh process; ``?`` where unknown."""
    code = f"import importlib;print(*(importlib.import_module(m).__version__ for m in {modules!r}))"
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.split()
    return (found + ["?"] * len(modules))[: len(modules)]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout


def machine(groups: list[tuple[str, ...]]) -> dict[str, str]:
    """Date, tree, CPUs, memory, OS, Python, and the versions of each group of modules
    (keyed by their names joined with `` / ``)."""
    modules = [m for group in groups for m in group]
    found = dict(zip(modules, versions(modules), strict=True))
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tree": head
        + (f" with uncommitted changes to {len(dirty)} tracked files" if dirty else ""),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu_model(),
        "ram": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for group in groups:
        facts[" / ".join(group)] = " / ".join(found[m] for m in group)
    return facts


def write_section(begin: str, end: str, section: str) -> None:
    """Replaces the part of ``docs/benchmarks.md`` from ``begin`` to ``end`` (markers
    included in ``section``) with ``section``; appends it where the markers are missing.
    Nothing else in the file changes."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)

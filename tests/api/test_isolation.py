"""The API process never imports tensorflow, keras or the worker package."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_api_app_imports_no_tensorflow_keras_or_worker() -> None:
    code = (
        "import sys\n"
        "from api.main import create_app\n"
        "from fastapi.testclient import TestClient\n"
        "import fitq.cli\n"
        "create_app\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'worker', 'sklearn'))\n"
        "print(','.join(heavy) or 'clean')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_models_imports_neither_api_nor_worker() -> None:
    code = (
        "import sys, importlib, pkgutil, models\n"
        "for m in pkgutil.iter_modules(models.__path__):\n"
        "    importlib.import_module('models.' + m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'api', 'worker', 'tensorflow', "
        "'keras'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

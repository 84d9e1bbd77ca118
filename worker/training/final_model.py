"""The trained model a succeeded job keeps: ``model.keras``, and a SavedModel if asked.

Both are written under a temporary name and then renamed into place, so that the
job's folder holds either a whole file (or folder) or none: a worker killed while
saving leaves no half-written model for the API to serve.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from models.file_names import EXPORT_DIR, FINAL_MODEL_FILE

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """``model.keras`` as saved: its size and SHA-256, as the job records them."""

    size_bytes: int
    sha256: str


def save_final_model(model: keras.Model, job_dir: Path, export: bool) -> ModelFile:
    """Saves ``model`` as it is (the weights ``fit()`` finished with) in ``job_dir``.

    Writes ``model.keras`` with ``model.save()``, and with ``export`` the SavedModel
    ``model.export()`` makes, in ``export/``. Logs what it wrote and how long it took.
    """
    started = time.perf_counter()
    target = job_dir / FINAL_MODEL_FILE
    # model.save() wants a name ending in .keras; the pid keeps two attempts apart.
    partial = job_dir / f"model.partial-{os.getpid()}.keras"
    try:
        model.save(partial)
        saved = ModelFile(partial.stat().st_size, _sha256(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(
        f"fitq: saved {FINAL_MODEL_FILE} ({saved.size_bytes} bytes, sha256 {saved.sha256[:12]}) "
        f"in {time.perf_counter() - started:.3f}s",
        flush=True,
    )
    if export:
        _export(model, job_dir)
    return saved


def _export(model: keras.Model, job_dir: Path) -> None:
    """``model.export()`` into ``export/``, replacing what an earlier attempt left."""
    started = time.perf_counter()
    target = job_dir / EXPORT_DIR
    partial = job_dir / f"{EXPORT_DIR}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.export(str(partial), format="tf_saved_model", verbose=False)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(
        f"fitq: exported a SavedModel to {EXPORT_DIR}/ in {time.perf_counter() - started:.3f}s",
        flush=True,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()

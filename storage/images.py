"""Checks and stores uploaded image folder archives (a zip, one folder per class).

The layout is what ``keras.utils.image_dataset_from_directory`` reads:
``class_name/image.png``. Every member is checked before anything is extracted:
exactly ``folder/file`` with plain names (no ``..``, no absolute paths, no deeper
folders), an image extension, sizes and compression ratios within the caps. Each
extracted file must then open as an image of a known format and a bounded size.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from core.settings import Settings
from storage.uploads import UploadError, check_member, copy_member, store_upload

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,127}$")
MAX_SIDE = 4096
MAX_FILES = 1_000_000
IMAGES = "images"


def _check_members(archive: zipfile.ZipFile, settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        parts = name.rstrip("/").split("/")
        bad = (
            name.startswith("/")
            or "\\" in name
            or len(parts) > 2
            or not all(SAFE_NAME.match(p) and p not in (".", "..") for p in parts)
        )
        if bad:
            raise UploadError(
                f"unexpected member {name!r}; expected class_folder/image_file "
                "with plain names (letters, digits, '_', '-', '.', spaces)"
            )
        if info.is_dir():
            continue
        if len(parts) != 2 or not parts[1].lower().endswith(IMAGE_EXTENSIONS):
            raise UploadError(
                f"unexpected member {name!r}; expected class_folder/image_file "
                f"ending in one of {list(IMAGE_EXTENSIONS)}"
            )
        total = check_member(info, total, settings, "images")
        counts[parts[0]] = counts.get(parts[0], 0) + 1
    if sum(counts.values()) > MAX_FILES:
        raise UploadError(f"more than {MAX_FILES} images")
    if len(counts) > settings.max_label_classes:
        raise UploadError(
            f"found {len(counts)} class folders; expected at most "
            f"{settings.max_label_classes} (FITQ_MAX_LABEL_CLASSES)"
        )
    if len(counts) < 2:
        raise UploadError(
            f"found {len(counts)} class folder(s) with images; expected one folder "
            "per class, at least two"
        )
    return counts


def _check_image(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format not in ("PNG", "JPEG", "BMP", "GIF"):
                raise UploadError(
                    f"{path.parent.name}/{path.name} is {img.format}, not an image "
                    "format fitq reads"
                )
            width, height = img.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise UploadError(
                    f"{path.parent.name}/{path.name} is {width}x{height}; expected "
                    f"at most {MAX_SIDE} pixels a side"
                )
            img.verify()
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the upload's fault
        name = f"{path.parent.name}/{path.name}"
        # Pillow names the file by its full path, which is the server's business.
        message = str(exc).replace(str(path), name)
        raise UploadError(f"{name} is not a readable image: {message}") from exc
    return height, width


def _process_images(raw: Path, folder: Path, settings: Settings) -> dict[str, Any]:
    try:
        archive = zipfile.ZipFile(raw)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"the file is not a zip archive: {exc}") from exc
    target = folder / IMAGES
    with archive:
        counts = _check_members(archive, settings)
        for info in archive.infolist():
            if not info.is_dir():
                dest = target / info.filename
                dest.parent.mkdir(parents=True, exist_ok=True)
                copy_member(archive, info.filename, dest, info.file_size)
    raw.unlink()
    sizes = Counter(_check_image(p) for p in sorted(target.glob("*/*")))
    # Images are resized to the most common size.
    (height, width), _ = sizes.most_common(1)[0]
    classes = sorted(counts)
    meta = {
        "n_samples": sum(counts.values()),
        "x_shape": [height, width, 3],
        "x_dtype": "float32",
        "y_shape": [],
        "y_dtype": "int64",
        "n_classes": len(classes),
        "class_names": classes,
        "class_counts": [counts[c] for c in classes],
        "y_min": 0,
        "y_max": len(classes) - 1,
        "image_sizes": len(sizes),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return {"train": meta}


def store_images(upload: BinaryIO, settings: Settings) -> tuple[str, int, str, dict[str, Any]]:
    """Streams, checks and extracts an image folder archive; returns id, size, sha, info."""
    return store_upload(
        upload, settings, ".zip", lambda raw, folder: _process_images(raw, folder, settings)
    )

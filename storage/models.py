"""Checks and stores uploaded ``.keras`` models without trusting a byte of them.

A ``.keras`` file is a zip that ``model.save()`` writes with exactly three members:
``config.json`` (the model's config), ``metadata.json`` (the Keras version) and
``model.weights.h5`` (the weights, and the optimizer's state when the model was
trained). Before anything is unpacked: the members must be exactly those, no links,
each within the size caps and with a sane compression ratio (the dataset uploads'
rules). ``config.json`` must pass the allowlist and shape checks a spec's
``model.keras_config`` passes, on the input shape it declares; the weights file may
hold no more bytes than the weights that architecture has (and, for a compiled
model, its optimizer's state). The three files are then stored, unpacked, where the
workers read them; a worker loads them with Keras' ``safe_mode``.
"""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from checks.keras_config import check_keras_config
from checks.model_size import SizeError, declared_input_shape, model_size
from core.settings import Settings
from storage.artifacts import artifact_store, clean_key
from storage.uploads import UploadError, check_member, copy_member, store_upload

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MEMBERS = (CONFIG, METADATA, WEIGHTS)
MAX_METADATA_BYTES = 64 * 1024
# What an HDF5 weights file holds besides the numbers: its superblock, and a group,
# names and attributes per layer and per variable.
H5_OVERHEAD_BYTES = 64 * 1024
H5_BYTES_PER_LAYER = 16 * 1024
# A compiled and trained model also saves its optimizer's variables: at most three
# per weight (Adam with amsgrad), besides the weight itself.
OPTIMIZER_COPIES = 4


def models_dir(settings: Settings) -> Path:
    return settings.resolved_artifacts_dir / "models"


def model_dir(settings: Settings, model_id: str) -> Path:
    """Where a stored model's files are on this host (``fetch_tree(model_key(...))``
    brings them there from a remote artifact store)."""
    return models_dir(settings) / model_id


def model_key(model_id: str) -> str:
    """A stored model's prefix in the artifact store."""
    return clean_key(f"models/{model_id}")


def read_json(path: Path, limit: int, what: str) -> Any:
    """The JSON in ``path``, at most ``limit`` bytes of it."""
    if path.stat().st_size > limit:
        raise UploadError(f"{what} is over {limit} bytes")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise UploadError(f"{what} is not valid JSON: {str(exc)[:200]}") from exc


def stored_config(settings: Settings, model_id: str) -> dict[str, Any]:
    """The checked config of a stored model (read when a job names it)."""
    raw = artifact_store(settings).read_bytes(f"{model_key(model_id)}/{CONFIG}")
    config: dict[str, Any] = json.loads(raw)
    return config


def _members(archive: zipfile.ZipFile, settings: Settings) -> dict[str, zipfile.ZipInfo]:
    """The archive's members, exactly the ones ``model.save()`` writes, within the caps."""
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in archive.infolist():
        if info.filename not in MEMBERS or info.filename in members:
            raise UploadError(
                f"unexpected member {info.filename[:100]!r} in the archive; expected "
                f"exactly {list(MEMBERS)}, each once, as model.save('model.keras') writes"
            )
        if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
            raise UploadError(f"{info.filename} is a link or a folder; expected a file")
        total = check_member(info, total, settings, "model's files")
        members[info.filename] = info
    missing = [name for name in MEMBERS if name not in members]
    if missing:
        raise UploadError(
            f"the archive lacks {missing}; expected {list(MEMBERS)}, as model.save() writes"
        )
    return members


def weights_limit(params: int, n_layers: int, compiled: bool, itemsize: int) -> int:
    """The most bytes a weights file of ``params`` weights may hold."""
    copies = OPTIMIZER_COPIES if compiled else 1
    return params * itemsize * copies + H5_OVERHEAD_BYTES + H5_BYTES_PER_LAYER * n_layers


def _check_config(config: Any, settings: Settings) -> dict[str, Any]:
    """What the checked config declares: its input shape, weights and layers."""
    if not isinstance(config, dict):
        raise UploadError(f"{CONFIG} holds {type(config).__name__}; expected a model config")
    problems = check_keras_config(config, ())
    if problems:
        raise UploadError(f"{CONFIG} is refused", problems=problems)
    shape = declared_input_shape(config)
    if shape is None:
        raise UploadError(
            f"{CONFIG} declares no complete input shape (an Input, or a built model); "
            "expected a model built on samples of a known shape"
        )
    try:
        size = model_size(config, shape, ())
    except SizeError as exc:
        problems = [{"loc": list(exc.loc), "msg": exc.msg, "type": "keras_config"}]
        raise UploadError(f"{CONFIG} is refused", problems=problems) from exc
    if size.params > settings.max_params:
        raise UploadError(
            f"the model has about {size.params:,} weights; expected at most "
            f"{settings.max_params:,} (FITQ_MAX_PARAMS)"
        )
    layers = config["config"]["layers"]
    return {
        "class_name": config["class_name"],
        "input_shape": list(shape),
        "output_shape": list(size.output),
        "params": size.params,
        "layers": [_layer_name(layer) for layer in layers],
        "compiled": bool(config.get("compile_config")),
    }


def _layer_name(layer: Any) -> str | None:
    config = layer.get("config") if isinstance(layer, dict) else None
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def _itemsize(config: dict[str, Any]) -> int:
    """Bytes a weight takes: 8 when any dtype in the config is a 64-bit one."""
    text = json.dumps(config)
    return 8 if '"float64"' in text or '"int64"' in text else 4


def _process_keras(raw: Path, folder: Path, settings: Settings) -> dict[str, Any]:
    with zipfile.ZipFile(raw) as archive:
        members = _members(archive, settings)
        for name in (CONFIG, METADATA):
            copy_member(archive, name, folder / name, members[name].file_size)
        config = read_json(folder / CONFIG, settings.max_body_bytes, CONFIG)
        info = _check_config(config, settings)
        metadata = read_json(folder / METADATA, MAX_METADATA_BYTES, METADATA)
        if not isinstance(metadata, dict):
            raise UploadError(f"{METADATA} holds {type(metadata).__name__}; expected an object")
        weights = members[WEIGHTS].file_size
        limit = weights_limit(
            info["params"], len(info["layers"]), info["compiled"], _itemsize(config)
        )
        if weights > limit:
            raise UploadError(
                f"{WEIGHTS} holds {weights:,} bytes, more than the {limit:,} that the "
                f"{info['params']:,} weights of the architecture in {CONFIG} can take"
            )
        copy_member(archive, WEIGHTS, folder / WEIGHTS, weights)
    version = metadata.get("keras_version")
    return {
        **info,
        "keras_version": version if isinstance(version, str) else None,
        "weights_bytes": weights,
    }


def store_keras(upload: BinaryIO, settings: Settings) -> tuple[str, int, str, dict[str, Any]]:
    """Stores an uploaded ``.keras`` model as its three files, once checked."""
    return store_upload(
        upload,
        settings,
        ".keras",
        lambda raw, folder: _process_keras(raw, folder, settings),
        root=models_dir(settings),
    )


def delete_model(settings: Settings, model_id: str) -> None:
    artifact_store(settings).delete_prefix(model_key(model_id))

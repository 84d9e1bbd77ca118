"""Models built from stored files: an uploaded ``.keras`` model, or a warm start from
a parent job's checkpoint.

The architecture is a config that passed fitq's allowlist (when it was uploaded, and
again when the job was submitted); Keras builds it with ``safe_mode``, then loads the
weights into it with ``model.load_weights()``, as ``keras.saving.load_model()`` does.
An uploaded weights file is first read as HDF5 metadata only: every dataset in it
must be numbers, and all of them together no more than the model's weights (and an
optimizer's state) take, so that no compressed dataset unfolds into more memory than
the model has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from models.file_names import ARCHITECTURE_FILE
from storage.models import weights_limit
from worker.training.architectures import from_config

NUMBER_KINDS = "biuf"


@dataclass(frozen=True)
class ModelFiles:
    """Where a stored model is.

    Attributes:
        architecture: The model's config, as JSON.
        weights: A ``.weights.h5`` or ``.keras`` file to load the weights from; None
            to start from the architecture's initial weights.
        untrusted_weights: Whether the weights file was uploaded (it is checked before
            Keras reads it); a job's own checkpoints were written by a worker.
    """

    architecture: Path
    weights: Path | None
    untrusted_weights: bool = False


def load_stored_model(files: ModelFiles) -> keras.Model:
    """The stored model, its weights loaded."""
    model = from_config(json.loads(files.architecture.read_bytes()))
    if files.weights is not None:
        if files.untrusted_weights:
            check_weights_file(files.weights, model)
        model.load_weights(files.weights)
    return model


def freeze(model: keras.Model, names: list[str]) -> None:
    """Sets the layers named ``names`` (of ``model.layers``) not trainable."""
    for name in names:
        model.get_layer(name).trainable = False


def check_weights_file(path: Path, model: keras.Model) -> None:
    """Raises ``ValueError`` for a weights file that holds anything but numbers, or
    more of them than ``model`` and an optimizer's state can take."""
    total = 0

    def visit(name: str, node: Any) -> None:
        nonlocal total
        if isinstance(node, h5py.Dataset):
            if node.dtype.kind not in NUMBER_KINDS:
                raise ValueError(f"{path.name}: {name} holds {node.dtype}; expected numbers")
            total += int(node.size) * node.dtype.itemsize

    with h5py.File(path, "r") as weights:
        weights.visititems(visit)
    itemsize = max((np.dtype(v.dtype).itemsize for v in model.weights), default=4)
    limit = weights_limit(model.count_params(), len(model.layers), True, itemsize)
    if total > limit:
        raise ValueError(
            f"{path.name} holds {total:,} bytes of arrays, more than the {limit:,} that "
            f"the model's {model.count_params():,} weights can take"
        )


def save_architecture(model: keras.Model, job_dir: Path) -> None:
    """Records the model a job trains, before it is compiled: what a warm start from
    the job builds (``ARCHITECTURE_FILE`` in the job's folder)."""
    part = job_dir / f".{ARCHITECTURE_FILE}.part"
    part.write_text(model.to_json(), encoding="utf-8")
    part.replace(job_dir / ARCHITECTURE_FILE)

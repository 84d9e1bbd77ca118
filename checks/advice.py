"""Advice on a spec that can run: warnings, each naming the field and the fix.

A warning never refuses a job; the API stores them with it (``warnings``). Advice is
given on a spec that passed ``checks.validation.check_spec``, from what that found
of its data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from checks import catalog
from checks.compile_args import loss_name
from checks.data_info import SpecData
from models.file_names import placeholders
from models.spec import (
    KERAS_BATCH_SIZE,
    EarlyStoppingSpec,
    FitSpec,
    JobSpec,
    ModelCheckpointSpec,
    ReduceLROnPlateauSpec,
)

# A batch smaller than this is likely too noisy to train well.
SMALL_BATCH = 8
# Classes this many times apart in size are imbalanced.
IMBALANCE = 3


def advise(spec: JobSpec, data: SpecData) -> list[str]:
    """The warnings for ``spec``, whose data ``check_spec`` described as ``data``."""
    return [warning for advice in ADVICE for warning in advice(spec, data)]


# Every advice takes (spec, data), as ADVICE calls them; some read only the spec (``_data``).


def _validation_options_unused(spec: JobSpec, _data: SpecData) -> Iterator[str]:
    if spec.has_validation:
        return
    for field in ("validation_steps", "validation_batch_size"):
        if getattr(spec.fit, field) is not None:
            yield f"fit.{field} is set but there is no validation data; it has no effect"


def _imbalanced_classes(spec: JobSpec, data: SpecData) -> Iterator[str]:
    if spec.fit.class_weight is not None or not catalog.labels_are_classes(loss_name(spec)):
        return
    counts = [c for c in (data.train.class_counts or ()) if c]
    if len(counts) > 1 and max(counts) > IMBALANCE * min(counts):
        yield (
            f"the training classes are imbalanced ({max(counts)} samples in the largest class, "
            f"{min(counts)} in the smallest) and fit.class_weight is not set: rare classes "
            "will be learned poorly; set fit.class_weight to 'balanced' or a mapping"
        )


def _validation_overlaps_training(spec: JobSpec, _data: SpecData) -> Iterator[str]:
    train, val = spec.data.train, spec.data.validation
    if val is None:
        return
    same = False
    if train.dataset is not None and train.dataset == val.dataset:
        same = train.split == val.split or "all" in (train.split, val.split)
    elif isinstance(train.x, list) and isinstance(val.x, list):
        same = any(sample in train.x for sample in val.x[:100])
    elif isinstance(train.x, dict) and isinstance(val.x, dict):  # inputs by name
        pairs = [(train.x[k], v) for k, v in val.x.items() if k in train.x]
        same = bool(pairs) and all(any(s in t for s in v[:100]) for t, v in pairs)
    if same:
        yield (
            "data.validation overlaps data.train: validation metrics will look better than "
            "the model is; use a separate split (split: validation) or fit.validation_split"
        )


def _batches_in_a_pass(spec: JobSpec, n_train: int) -> tuple[int, int] | None:
    """(batch size, batches in one pass over the training data), as fit() batches it.

    None where it depends on more than the spec shows: an uploaded dataset without a
    batch_size (in memory Keras sizes batches from steps_per_epoch, from disk fitq
    uses 32), or augmented data (in memory, fitq repeats its pipeline when
    steps_per_epoch is set: it never runs out).
    """
    fit, train = spec.fit, spec.data.train
    in_memory = train.x is not None or (train.dataset or "").startswith("builtin:")
    if spec.data.augmentation:
        return None
    batch = fit.batch_size
    if batch is None and fit.steps_per_epoch is not None and in_memory:
        # Keras' array adapter: no batch_size but steps_per_epoch makes one pass of them.
        batch = math.ceil(n_train / fit.steps_per_epoch)
    if batch is None and not in_memory:
        return None
    batch = batch or KERAS_BATCH_SIZE
    return batch, math.ceil(n_train / batch)


def _steps_per_epoch_and_data(spec: JobSpec, data: SpecData) -> Iterator[str]:
    fit, n_train = spec.fit, data.train.n_samples
    if fit.steps_per_epoch is None:
        return
    if fit.validation_split > 0:
        n_train = int(n_train * (1 - fit.validation_split))
    found = _batches_in_a_pass(spec, n_train)
    if found is None:
        return
    (batch, batches), steps = found, fit.steps_per_epoch
    if steps > batches:
        yield (
            f"fit.steps_per_epoch={steps} is more than the {batches} batches of "
            f"{batch} that the {n_train} training samples make: Keras runs out of data "
            f"after {batches} steps, warns 'Your input ran out of data' and ends the "
            "epoch there, every epoch; set steps_per_epoch to at most "
            f"{batches} or leave it null"
        )
    elif steps < batches:
        yield (
            f"fit.steps_per_epoch={steps} x batch_size={batch} = {batch * steps} < "
            f"{n_train} training samples: an epoch is not a pass over the data (with "
            "arrays in memory Keras goes on with the same pass in the next epoch"
            + (
                f", and the last epoch of each pass ends early, after {batches % steps} "
                "steps, where the data runs out"
                if batches % steps
                else ""
            )
            + "), so epoch metrics and callbacks see a part of it each time; raise "
            "steps_per_epoch or leave it null"
        )


def _small_batch(spec: JobSpec, _data: SpecData) -> Iterator[str]:
    batch = spec.fit.batch_size
    if batch is not None and batch < SMALL_BATCH:
        yield (
            f"fit.batch_size={batch} is very small: batches are likely "
            "biased and training slow; use the largest batch memory allows"
        )


def _callbacks_that_do_little(spec: JobSpec, _data: SpecData) -> Iterator[str]:
    for i, cb in enumerate(spec.callbacks):
        if (
            isinstance(cb, ModelCheckpointSpec)
            and not cb.save_best_only
            and "epoch" not in placeholders(cb.filepath)
        ):
            yield (
                f"callbacks[{i}].filepath has no {{epoch}} and save_best_only is "
                "false: one file is overwritten every epoch; add {epoch:02d}"
            )
        if isinstance(cb, EarlyStoppingSpec) and cb.start_from_epoch >= spec.fit.epochs:
            yield (
                f"callbacks[{i}].start_from_epoch={cb.start_from_epoch} >= epochs: "
                "EarlyStopping will never act"
            )


def _validates_every_epoch(fit: FitSpec) -> bool:
    freq = fit.validation_freq
    if isinstance(freq, int):
        return freq == 1
    return set(range(fit.initial_epoch + 1, fit.epochs + 1)) <= set(freq)


def _monitor_missing_some_epochs(spec: JobSpec, _data: SpecData) -> Iterator[str]:
    fit = spec.fit
    if not spec.has_validation or _validates_every_epoch(fit):
        return
    for i, cb in enumerate(spec.callbacks):
        if not isinstance(cb, (EarlyStoppingSpec, ReduceLROnPlateauSpec, ModelCheckpointSpec)):
            continue
        if not cb.monitor.startswith("val_"):
            continue
        where = (
            f"callbacks[{i}] ({cb.type}) monitors {cb.monitor!r}, which Keras logs only on "
            f"the epochs that validate (fit.validation_freq={fit.validation_freq}): "
        )
        if isinstance(cb, EarlyStoppingSpec):
            yield where + (
                "on the others EarlyStopping warns that it is not available and skips the "
                f"epoch, so patience={cb.patience} counts validations, not epochs; set "
                "validation_freq to 1 or monitor a training metric"
            )
        elif isinstance(cb, ReduceLROnPlateauSpec):
            yield where + (
                "on the others ReduceLROnPlateau warns and skips the epoch, so "
                f"patience={cb.patience} and cooldown={cb.cooldown} count validations, not "
                "epochs; set validation_freq to 1 or monitor a training metric"
            )
        elif cb.save_best_only:
            yield where + (
                "on the others ModelCheckpoint cannot compare, warns, and saves the model "
                f"anyway, so {cb.filepath!r} is not only written for a best epoch; set "
                "validation_freq to 1 or monitor a training metric"
            )


def _regression_loss_on_softmax(spec: JobSpec, data: SpecData) -> Iterator[str]:
    loss, config = loss_name(spec), spec.model.keras_config
    if config is None or catalog.labels_are_classes(loss) or loss in catalog.ONE_HOT_LOSSES:
        return
    if data.train.target_dim != 1 or not _ends_in_softmax(config):
        return
    yield (
        f"compile.loss {loss!r} is a regression loss, but the model ends in a softmax "
        "(outputs that sum to 1, always 1 for one unit) and the training labels are one "
        "number per sample: Keras trains it, but the model cannot fit them; for class "
        "labels use sparse_categorical_crossentropy (class indices) or "
        "categorical_crossentropy (one-hot rows)"
    )


# Layers that pass their input's values through unchanged, at inference.
PASS_THROUGH = {"Dropout", "Flatten", "Reshape", "ActivityRegularization"}


def _ends_in_softmax(config: dict[str, Any]) -> bool:
    """Whether a (checked) Sequential or Functional model config's output is a softmax."""
    body = config.get("config") or {}
    layers = [layer for layer in body.get("layers") or [] if isinstance(layer, dict)]
    if config.get("class_name") == "Functional":
        output = body.get("output_layers")
        while isinstance(output, list) and output and isinstance(output[0], list):
            output = output[0] if len(output) == 1 else None
        named = {layer.get("name"): layer for layer in layers}
        head = output[0] if isinstance(output, list) and output else None
        layers = [named[head]] if isinstance(head, str) and head in named else []
    for layer in reversed(layers):
        cls, args = layer.get("class_name"), layer.get("config") or {}
        if cls in PASS_THROUGH:
            continue
        return bool(cls == "Softmax" or args.get("activation") == "softmax")
    return False


ADVICE: tuple[Callable[[JobSpec, SpecData], Iterator[str]], ...] = (
    _validation_options_unused,
    _imbalanced_classes,
    _validation_overlaps_training,
    _steps_per_epoch_and_data,
    _small_batch,
    _callbacks_that_do_little,
    _monitor_missing_some_epochs,
    _regression_loss_on_softmax,
)

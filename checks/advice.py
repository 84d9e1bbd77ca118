"""Advice on a spec that can run: warnings, each naming the field and the fix.

A warning never refuses a job; the API stores them with it (``warnings``). Advice is
given on a spec that passed ``checks.validation.check_spec``, from what that found
of its data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from checks import catalog
from checks.compile_args import loss_name
from checks.data_info import SpecData
from models.file_names import placeholders
from models.spec import KERAS_BATCH_SIZE, EarlyStoppingSpec, JobSpec, ModelCheckpointSpec

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
    elif train.x is not None and val.x is not None:
        same = any(sample in train.x for sample in val.x[:100])
    if same:
        yield (
            "data.validation overlaps data.train: validation metrics will look better than "
            "the model is; use a separate split (split: validation) or fit.validation_split"
        )


def _epochs_skip_data(spec: JobSpec, data: SpecData) -> Iterator[str]:
    fit, n_train = spec.fit, data.train.n_samples
    if fit.validation_split > 0:
        n_train = int(n_train * (1 - fit.validation_split))
    batch = fit.batch_size or KERAS_BATCH_SIZE
    if fit.steps_per_epoch and batch * fit.steps_per_epoch < n_train:
        yield (
            f"fit.steps_per_epoch={fit.steps_per_epoch} x batch_size={batch} = "
            f"{batch * fit.steps_per_epoch} < {n_train} training samples: each epoch "
            "skips data; raise steps_per_epoch or leave it null"
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


ADVICE: tuple[Callable[[JobSpec, SpecData], Iterator[str]], ...] = (
    _validation_options_unused,
    _imbalanced_classes,
    _validation_overlaps_training,
    _epochs_skip_data,
    _small_batch,
    _callbacks_that_do_little,
)

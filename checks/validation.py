"""Semantic checks of a job spec: everything the schema alone cannot see.

``check_spec`` collects every problem (with its path inside the spec) and raises one
``SpecError``; it returns the advice (warnings) for a spec that can run. It needs no
Keras: shapes and class counts come from ``checks.datasets`` and the inline arrays.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from checks import catalog
from checks.architectures import ARCHITECTURES
from checks.datasets import BUILTIN_DATASETS, BUILTIN_PREFIX, split_indices
from checks.keras_config import check_keras_config
from checks.labels import label_stats
from checks.model_size import ModelSize, SizeError, model_size, stack_size
from core.errors import SpecError
from core.settings import Settings
from models.spec import (
    CSVLoggerSpec,
    DataRef,
    EarlyStoppingSpec,
    JobSpec,
    ModelCheckpointSpec,
    ObjectSpec,
    RandomCropSpec,
    ReduceLROnPlateauSpec,
    TensorBoardSpec,
)

Loc = tuple[str | int, ...]
MAX_INLINE_DEPTH = 5
CHECKPOINT_SUFFIXES = (".keras",)
WEIGHTS_SUFFIXES = (".weights.h5",)
SAFE_NAME_CHARS = set(string.ascii_letters + string.digits + "_-.=")
SMALL_BATCH = 8
IMBALANCE = 3


@dataclass(frozen=True)
class DataInfo:
    """What fitq knows of a data set before loading it."""

    n_samples: int
    feature_shape: tuple[int, ...]
    # Labels as class indices, when they are 1-D integers 0..n-1 (whether they are
    # classes is the loss's to say: catalog.labels_are_classes); None otherwise.
    n_classes: int | None
    class_counts: tuple[int, ...] | None
    target_dim: int = 1  # numbers in one sample's target


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Loc, msg: str, type_: str = "value_error") -> None:
        self.items.append({"loc": list(loc), "msg": msg, "type": type_})

    def extend_validation_error(self, loc: Loc, exc: ValidationError) -> None:
        for err in exc.errors():
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (received {got!r})"
            self.add(loc + tuple(err["loc"]), f"{err['msg']}{shown}", err["type"])


DatasetLookup = Callable[[str], dict[str, Any] | None]


def uploaded_split(split: str) -> str:
    """The part of an uploaded dataset a ``split`` names (``all`` is its training arrays)."""
    return "train" if split == "all" else split


def check_spec(
    spec: JobSpec, settings: Settings, datasets: DatasetLookup | None = None
) -> list[str]:
    """Raises ``SpecError`` listing every problem; returns warnings for a runnable spec.

    ``datasets`` looks up an uploaded dataset's per-split metadata by id.
    """
    problems = _Problems()
    lookup: DatasetLookup = datasets or (lambda _id: None)
    warnings: list[str] = []

    train = _data_info(spec.data.train, ("data", "train"), settings, problems, lookup)
    validation = (
        _data_info(spec.data.validation, ("data", "validation"), settings, problems, lookup)
        if spec.data.validation
        else None
    )
    test = (
        _data_info(spec.data.test, ("data", "test"), settings, problems, lookup)
        if spec.data.test
        else None
    )
    for info, loc in ((validation, ("data", "validation")), (test, ("data", "test"))):
        if info and train and info.feature_shape != train.feature_shape:
            problems.add(
                loc,
                f"samples have shape {list(info.feature_shape)}, expected the "
                f"training data's shape {list(train.feature_shape)}",
            )

    _check_model(spec, [_augmented(spec, train, problems), validation, test], problems, settings)
    splits = {"training": train, "validation": validation, "test": test}
    _check_compile(spec, splits, settings.max_label_classes, problems)
    has_validation = _check_fit(spec, train, validation, settings, problems, warnings)
    _check_callbacks(spec, has_validation, problems, warnings)
    _check_resources(spec, settings, problems)

    if spec.max_runtime_seconds and spec.max_runtime_seconds > settings.max_runtime_seconds:
        problems.add(
            ("max_runtime_seconds",),
            f"received {spec.max_runtime_seconds}, expected "
            f"at most {settings.max_runtime_seconds} (FITQ_MAX_RUNTIME_SECONDS)",
        )
    if problems.items:
        raise SpecError(problems.items)
    return warnings


def _check_resources(spec: JobSpec, settings: Settings, problems: _Problems) -> None:
    gpus = spec.resources.gpus
    if gpus > settings.max_gpus_per_worker:
        problems.add(
            ("resources", "gpus"),
            f"received gpus={gpus}, but no worker has more than "
            f"{settings.max_gpus_per_worker} (FITQ_MAX_GPUS_PER_WORKER): the job could "
            f"never run; expected at most {settings.max_gpus_per_worker}",
        )
    batch = spec.fit.batch_size or 32
    if gpus > 1 and batch < gpus:
        problems.add(
            ("fit", "batch_size"),
            f"received batch_size={batch} for resources.gpus={gpus}; the batch is "
            f"global, split across the {gpus} replicas, so expected at least {gpus}",
        )


def log_keys(spec: JobSpec) -> list[str]:
    """The keys Keras will put in the epoch logs: ``loss`` and the compiled metrics."""
    keys = ["loss"]
    for metric in spec.compile.metrics:
        if isinstance(metric, str):
            keys.append(metric)
        else:
            name = metric.config.get("name") or catalog.METRIC_CLASSES.get(metric.class_name)
            if isinstance(name, str):
                keys.append(name)
    return keys


def _data_info(
    ref: DataRef, loc: Loc, settings: Settings, problems: _Problems, lookup: DatasetLookup
) -> DataInfo | None:
    if ref.dataset is not None:
        info = _dataset_info(ref, loc, problems, lookup)
    else:
        info = _inline_info(ref, loc, settings, problems)
    if info and ref.take is not None:
        if ref.take > info.n_samples:
            problems.add(
                loc + ("take",),
                f"received take={ref.take}, but the data has only {info.n_samples} samples",
            )
            return None
        return DataInfo(ref.take, info.feature_shape, info.n_classes, None, info.target_dim)
    return info


def _dataset_info(
    ref: DataRef, loc: Loc, problems: _Problems, lookup: DatasetLookup
) -> DataInfo | None:
    name = ref.dataset or ""
    uploaded = None if name.startswith(BUILTIN_PREFIX) else lookup(name)
    if uploaded is not None:
        part = uploaded.get(uploaded_split(ref.split))
        if part is None:
            problems.add(
                loc + ("split",),
                f"dataset {name} has no {ref.split} arrays; it has {sorted(uploaded)}",
            )
            return None
        counts = part.get("class_counts")
        return DataInfo(
            int(part["n_samples"]),
            tuple(part["x_shape"]) or (1,),
            part.get("n_classes"),
            tuple(counts) if counts else None,
            math.prod(part.get("y_shape") or [1]),
        )
    if not name.startswith(BUILTIN_PREFIX) or name[len(BUILTIN_PREFIX) :] not in BUILTIN_DATASETS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        problems.add(
            loc + ("dataset",),
            f"unknown dataset {name!r}, expected one of {known} or the id of an uploaded dataset",
        )
        return None
    ds = BUILTIN_DATASETS[name[len(BUILTIN_PREFIX) :]]
    n = len(split_indices(ds.n_samples, ref.split))
    return DataInfo(
        n, ds.feature_shape, ds.n_classes, ds.class_counts if ref.split == "all" else None
    )


def _count_values(node: Any, budget: int, depth: int = 0) -> int:
    """Counts the leaves of a nested list, stopping early past ``budget``."""
    if depth > MAX_INLINE_DEPTH:
        raise ValueError(f"nested deeper than {MAX_INLINE_DEPTH} levels")
    if not isinstance(node, list):
        return 1
    total = 0
    for item in node:
        total += _count_values(item, budget - total, depth + 1)
        if total > budget:
            break
    return total


def _as_array(values: list[Any], loc: Loc, budget: int, problems: _Problems) -> np.ndarray | None:
    try:
        count = _count_values(values, budget)
    except ValueError as exc:
        problems.add(loc, str(exc))
        return None
    if count > budget:
        problems.add(
            loc,
            f"inline data holds more than {budget} numbers (FITQ_MAX_INLINE_VALUES); "
            "upload it as a dataset instead",
            "too_large",
        )
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        problems.add(
            loc,
            "expected a rectangular nested list of numbers (every sample the same "
            "shape, no strings or nulls)",
        )
        return None
    if array.ndim == 0 or array.shape[0] == 0:
        problems.add(loc, "expected at least one sample")
        return None
    if not np.isfinite(array).all():
        problems.add(loc, "expected finite numbers (no NaN or infinity)")
        return None
    return array


def _inline_info(
    ref: DataRef, loc: Loc, settings: Settings, problems: _Problems
) -> DataInfo | None:
    assert ref.x is not None and ref.y is not None
    x = _as_array(ref.x, loc + ("x",), settings.max_inline_values, problems)
    y = _as_array(ref.y, loc + ("y",), settings.max_inline_values, problems)
    if x is None or y is None:
        return None
    if x.shape[0] != y.shape[0]:
        problems.add(
            loc + ("y",),
            f"received {y.shape[0]} labels for {x.shape[0]} samples in x, "
            "expected one label per sample",
        )
        return None
    feature_shape = tuple(int(d) for d in x.shape[1:]) or (1,)
    # Labels are class ids only when they are small non-negative integers; their
    # description never grows with a label's value (see checks.labels).
    labels = label_stats(y, settings.max_label_classes)
    return DataInfo(
        len(y), feature_shape, labels.n_classes, labels.class_counts, math.prod(y.shape[1:])
    )


def _builtin_layers(
    name: str, params: Any, shape: tuple[int, ...], n_out: int
) -> list[dict[str, Any]]:
    """The layers a built-in architecture builds (``worker.training.architectures``)."""

    def layer(cls: str, **cfg: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": cls, "config": cfg}

    dropout = [layer("Dropout", rate=params.dropout)] if params.dropout else []
    if name == "mlp":
        hidden = [[layer("Dense", units=u), *dropout] for u in params.hidden_units]
        return [layer("Flatten"), *sum(hidden, []), layer("Dense", units=n_out)]
    out = [layer("Reshape", target_shape=[*shape, 1])] if len(shape) == 2 else []
    side = min(shape[0], shape[1]) if len(shape) >= 2 else 1
    for f in params.filters:
        out.append(layer("Conv2D", filters=f, kernel_size=params.kernel_size, padding="same"))
        if side >= 4:
            side //= 2
            out.append(layer("MaxPooling2D", pool_size=2))
    return out + [
        layer("Flatten"),
        layer("Dense", units=params.dense_units),
        *dropout,
        layer("Dense", units=n_out),
    ]


def _check_size(size: ModelSize, spec: JobSpec, settings: Settings, problems: _Problems) -> None:
    if size.params > settings.max_params:
        problems.add(
            ("model",),
            f"the model has about {size.params:,} weights; expected at most "
            f"{settings.max_params:,} (FITQ_MAX_PARAMS)",
        )
    # The largest batch one device runs: fit() splits the global batch across
    # replicas; validation runs without gradients but may use a larger batch.
    fit = spec.fit
    batch = max(fit.batch_size or 32, fit.validation_batch_size or 0)
    per_device = -(-batch // spec.resources.gpus)
    need = size.activation_bytes(per_device)
    if need > settings.max_activation_bytes:
        problems.add(
            ("model",),
            f"a training step holds about {need:,} bytes of activations ({size.numbers:,} "
            f"numbers a sample, {per_device} samples a device, 4 bytes each); expected at "
            f"most {settings.max_activation_bytes:,} (FITQ_MAX_ACTIVATION_BYTES): use smaller "
            "layers or a smaller fit.batch_size",
        )


def _loss_name(spec: JobSpec) -> str:
    loss = spec.compile.loss
    return loss if isinstance(loss, str) else loss.class_name


def _n_classes(spec: JobSpec, infos: list[DataInfo | None]) -> int | None:
    """How many classes the labels index, when the loss reads them as classes.

    As the worker sizes its output layer: one more than the largest label of any
    split. With a regression loss integer targets are numbers, not classes.
    """
    if not catalog.labels_are_classes(_loss_name(spec)):
        return None
    counts = [info.n_classes for info in infos if info is not None and info.n_classes]
    return max(counts) if counts else None


def _check_model(
    spec: JobSpec,
    data: list[DataInfo | None],
    problems: _Problems,
    settings: Settings,
) -> None:
    model, train = spec.model, data[0]
    if model.builtin is not None:
        params_model = ARCHITECTURES.get(model.builtin)
        if params_model is None:
            problems.add(
                ("model", "builtin"),
                f"unknown architecture {model.builtin!r}, expected one of {sorted(ARCHITECTURES)}",
            )
            return
        try:
            params: BaseModel = params_model.model_validate(model.params)
        except ValidationError as exc:
            problems.extend_validation_error(("model", "params"), exc)
            return
        if model.builtin == "cnn" and train and len(train.feature_shape) not in (2, 3):
            problems.add(
                ("model", "builtin"),
                "the cnn architecture needs image-shaped samples "
                "(height, width[, channels]); received samples of shape "
                f"{list(train.feature_shape)}",
            )
        loss = _loss_name(spec)
        regression = not catalog.labels_are_classes(loss) and loss not in catalog.ONE_HOT_LOSSES
        if (
            train
            and regression
            and train.target_dim == 1
            and getattr(params, "output_activation", None) == "softmax"
        ):
            problems.add(
                ("model", "params", "output_activation"),
                f"received 'softmax' with the regression loss {loss!r}: a softmax over the "
                "one output unit is always 1; expected 'linear', 'sigmoid' or null",
            )
        if train and (model.builtin != "cnn" or len(train.feature_shape) in (2, 3)):
            n_out, _ = catalog.output_head(
                _loss_name(spec), _n_classes(spec, data), train.target_dim
            )
            layers = _builtin_layers(model.builtin, params, train.feature_shape, n_out)
            _check_size(stack_size(layers, train.feature_shape), spec, settings, problems)
        return
    assert model.keras_config is not None
    found = check_keras_config(model.keras_config, ("model", "keras_config"))
    for item in found:
        problems.items.append(item)
    if found or train is None:
        return
    try:
        size = model_size(model.keras_config, train.feature_shape, ("model", "keras_config"))
    except SizeError as exc:
        problems.add(exc.loc, exc.msg, "keras_config")
        return
    _check_size(size, spec, settings, problems)


def _check_object(
    value: str | ObjectSpec,
    loc: Loc,
    names: dict[str, str] | set[str],
    config_keys: dict[str, str],
    what: str,
    problems: _Problems,
) -> None:
    if isinstance(value, str):
        if value not in names:
            problems.add(loc, f"unknown {what} {value[:60]!r}, expected one of {sorted(names)}")
        return
    classes = set(names.values()) if isinstance(names, dict) else set()
    if what == "metric":
        classes = set(catalog.METRIC_CLASSES)
    if value.class_name not in classes:
        problems.add(
            loc + ("class_name",),
            f"unknown {what} class {value.class_name!r}, expected one of {sorted(classes)}",
        )
    for key, item in value.config.items():
        kind = config_keys.get(key)
        if kind is None:
            problems.add(
                loc + ("config", key),
                f"unknown {what} argument {key[:60]!r}, expected one of {sorted(config_keys)}",
            )
        elif not _is_kind(kind, item):
            expected = VALUE_KINDS[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            problems.add(loc + ("config", key), f"received {key}={shown}, expected {expected}")


VALUE_KINDS = {
    "number": "a finite number",
    "int": "an integer",
    "bool": "true or false",
    "name": "a string of at most 200 characters",
    "numbers": "a finite number or a list of them",
}


def _is_kind(kind: str, item: Any) -> bool:
    """Whether ``item`` is what an argument of ``kind`` holds (``catalog.*_CONFIG_KEYS``)."""
    if item is None:
        return kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "bool":
        return isinstance(item, bool)
    if kind == "name":
        return isinstance(item, str) and len(item) <= 200
    if kind == "int":
        return isinstance(item, int) and not isinstance(item, bool)
    if kind == "numbers" and isinstance(item, list):
        return 0 < len(item) <= 1000 and all(_is_kind("number", v) for v in item)
    return isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)


def _check_compile(
    spec: JobSpec, splits: dict[str, DataInfo | None], max_classes: int, problems: _Problems
) -> None:
    c = spec.compile
    _check_object(
        c.optimizer,
        ("compile", "optimizer"),
        catalog.OPTIMIZERS,
        catalog.OPTIMIZER_CONFIG_KEYS,
        "optimizer",
        problems,
    )
    _check_object(
        c.loss, ("compile", "loss"), catalog.LOSSES, catalog.LOSS_CONFIG_KEYS, "loss", problems
    )
    for i, metric in enumerate(c.metrics):
        _check_object(
            metric,
            ("compile", "metrics", i),
            catalog.METRIC_NAMES,
            catalog.METRIC_CONFIG_KEYS,
            "metric",
            problems,
        )
    keys = log_keys(spec)
    if len(set(keys)) != len(keys):
        problems.add(
            ("compile", "metrics"),
            f"metrics log under the names {keys}; each name must appear once",
        )
    loss_name = c.loss if isinstance(c.loss, str) else c.loss.class_name
    if loss_name not in catalog.SPARSE_LOSSES:
        return
    # The worker sizes the output layer to the largest label of any split.
    for split, info in splits.items():
        if info is not None and info.n_classes is None:
            problems.add(
                ("compile", "loss"),
                f"{loss_name} needs integer class labels from 0 to {max_classes - 1} "
                f"(FITQ_MAX_LABEL_CLASSES), one per sample, but the {split} labels are not: "
                "real numbers, negative, larger, or more than one per sample",
            )
        elif info is not None and info.n_classes and info.n_classes > max_classes:
            problems.add(
                ("compile", "loss"),
                f"the {split} labels go up to {info.n_classes - 1}, expected "
                f"at most {max_classes} classes for {loss_name} (FITQ_MAX_LABEL_CLASSES)",
            )


def _check_fit(
    spec: JobSpec,
    train: DataInfo | None,
    validation: DataInfo | None,
    settings: Settings,
    problems: _Problems,
    warnings: list[str],
) -> bool:
    fit = spec.fit
    if fit.epochs > settings.max_epochs:
        problems.add(
            ("fit", "epochs"),
            f"received {fit.epochs}, expected at most {settings.max_epochs} (FITQ_MAX_EPOCHS)",
        )
    for field in ("steps_per_epoch", "validation_steps"):
        steps = getattr(fit, field)
        if steps is not None and steps > settings.max_steps:
            problems.add(
                ("fit", field),
                f"received {field}={steps}, expected at most {settings.max_steps:,} "
                "(FITQ_MAX_STEPS)",
            )
    if fit.workers > settings.max_fit_workers:
        problems.add(
            ("fit", "workers"),
            f"received workers={fit.workers}, expected at most {settings.max_fit_workers} "
            "(FITQ_MAX_FIT_WORKERS)",
        )
    if fit.initial_epoch >= fit.epochs:
        problems.add(
            ("fit", "initial_epoch"),
            f"received initial_epoch={fit.initial_epoch} with "
            f"epochs={fit.epochs}; expected initial_epoch < epochs (epochs is the index "
            "of the last epoch, not a count)",
        )
    if isinstance(fit.validation_freq, int):
        if fit.validation_freq > fit.epochs:
            problems.add(
                ("fit", "validation_freq"),
                f"received {fit.validation_freq}, which is "
                f"beyond epochs={fit.epochs}; validation would never run",
            )
    else:
        if not fit.validation_freq:
            problems.add(
                ("fit", "validation_freq"),
                "expected a positive integer or a non-empty list of epochs",
            )
        for i, epoch in enumerate(fit.validation_freq):
            if epoch > fit.epochs:
                problems.add(
                    ("fit", "validation_freq", i),
                    f"received epoch {epoch}, expected 1..{fit.epochs} (epochs are 1-based)",
                )
    if spec.data.validation is not None and fit.validation_split:
        problems.add(
            ("fit", "validation_split"),
            "give validation data or validation_split, "
            "not both (Keras uses validation data and ignores the split)",
        )
    has_validation = spec.data.validation is not None or fit.validation_split > 0
    n_train = train.n_samples if train else None
    if train and fit.validation_split > 0:
        n_val = train.n_samples - int(train.n_samples * (1 - fit.validation_split))
        n_train = train.n_samples - n_val
        if n_val == 0 or n_train == 0:
            problems.add(
                ("fit", "validation_split"),
                f"received {fit.validation_split} of "
                f"{train.n_samples} samples, which leaves an empty split",
            )
    if not has_validation:
        for field in ("validation_steps", "validation_batch_size"):
            if getattr(fit, field) is not None:
                warnings.append(
                    f"fit.{field} is set but there is no validation data; it has no effect"
                )
    loss = _loss_name(spec)
    classes = catalog.labels_are_classes(loss)
    if (
        fit.class_weight is not None
        and train
        and not classes
        and loss not in catalog.ONE_HOT_LOSSES
    ):
        problems.add(
            ("fit", "class_weight"),
            f"class_weight weighs classes, but the loss {loss!r} does not read the labels "
            "as classes; expected null, or a loss on class labels "
            f"({sorted(catalog.SPARSE_LOSSES | catalog.BINARY_LOSSES)})",
        )
    elif isinstance(fit.class_weight, dict) and train:
        if train.n_classes is None:
            problems.add(
                ("fit", "class_weight"),
                "class_weight needs class labels (1-D integers from 0), but the training "
                "labels are not",
            )
        else:
            for key in fit.class_weight:
                if not 0 <= key < train.n_classes:
                    problems.add(
                        ("fit", "class_weight", key),
                        f"received class {key}, expected a class index in 0..{train.n_classes - 1}",
                    )
    elif fit.class_weight == "balanced" and train and train.n_classes is None:
        problems.add(
            ("fit", "class_weight"),
            "'balanced' needs class labels, but the training labels are real numbers",
        )
    counts = [c for c in (train.class_counts or ()) if c] if train and classes else []
    if fit.class_weight is None and len(counts) > 1 and max(counts) > IMBALANCE * min(counts):
        warnings.append(
            f"the training classes are imbalanced ({max(counts)} samples in the largest class, "
            f"{min(counts)} in the smallest) and fit.class_weight is not set: rare classes "
            "will be learned poorly; set fit.class_weight to 'balanced' or a mapping"
        )
    overlap = _overlap(spec)
    if overlap:
        warnings.append(overlap)
    batch = fit.batch_size or 32
    if fit.steps_per_epoch and n_train and batch * fit.steps_per_epoch < n_train:
        warnings.append(
            f"fit.steps_per_epoch={fit.steps_per_epoch} x batch_size={batch} = "
            f"{batch * fit.steps_per_epoch} < {n_train} training samples: each epoch "
            "skips data; raise steps_per_epoch or leave it null"
        )
    if fit.batch_size is not None and fit.batch_size < SMALL_BATCH:
        warnings.append(
            f"fit.batch_size={fit.batch_size} is very small: batches are likely "
            "biased and training slow; use the largest batch memory allows"
        )
    return has_validation


def _augmented(spec: JobSpec, train: DataInfo | None, problems: _Problems) -> DataInfo | None:
    """The training data as the model sees it after augmentation (RandomCrop resizes)."""
    if train is None or not spec.data.augmentation:
        return train
    shape = train.feature_shape
    for i, aug in enumerate(spec.data.augmentation):
        loc: Loc = ("data", "augmentation", i)
        if aug.layer != "GaussianNoise" and len(shape) != 3:
            problems.add(
                loc,
                f"{aug.layer} needs image samples of shape (height, width, "
                f"channels); the training samples have shape {list(shape)}",
            )
            return None
        if isinstance(aug, RandomCropSpec):
            if aug.height > shape[0] or aug.width > shape[1]:
                problems.add(
                    loc,
                    f"received a {aug.height}x{aug.width} crop of "
                    f"{shape[0]}x{shape[1]} images; expected at most the image size",
                )
                return None
            shape = (aug.height, aug.width, shape[2])
    return replace(train, feature_shape=shape)


def _overlap(spec: JobSpec) -> str | None:
    """A warning when the validation data is (partly) the training data."""
    train, val = spec.data.train, spec.data.validation
    if val is None:
        return None
    same = False
    if train.dataset is not None and train.dataset == val.dataset:
        same = train.split == val.split or "all" in (train.split, val.split)
    elif train.x is not None and val.x is not None:
        same = any(sample in train.x for sample in val.x[:100])
    if not same:
        return None
    return (
        "data.validation overlaps data.train: validation metrics will look better than "
        "the model is; use a separate split (split: validation) or fit.validation_split"
    )


def _template_fields(template: str) -> list[tuple[str, str]]:
    """The ``(name, format_spec)`` of each placeholder; raises ValueError on bad syntax."""
    fields = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if not set(literal) <= SAFE_NAME_CHARS:
            bad = sorted(set(literal) - SAFE_NAME_CHARS)
            raise ValueError(f"contains {bad}; expected letters, digits, '_', '-', '.', '='")
        if name is None:
            continue
        if conversion or not name.isidentifier():
            raise ValueError(
                f"placeholder {{{name}}} is not a plain name (no attribute, index or conversion)"
            )
        if spec and not _small_format(spec):
            raise ValueError(
                f"format {spec!r} of {{{name}}} is not a small numeric format "
                "such as '02d' or '.3f'"
            )
        fields.append((name, spec or ""))
    return fields


def _small_format(spec: str) -> bool:
    import re

    match = re.fullmatch(r"0?(\d{0,2})(\.(\d{1,2}))?([dfegFEG])?", spec)
    return match is not None and int(match.group(1) or 0) <= 32


def _check_file_name(
    name: str, loc: Loc, allowed_fields: set[str], suffixes: tuple[str, ...], problems: _Problems
) -> list[str]:
    try:
        fields = _template_fields(name)
    except ValueError as exc:
        problems.add(loc, f"received {name!r}: {exc}")
        return []
    if name.startswith(".") or ".." in name:
        problems.add(
            loc,
            f"received {name!r}; expected a file name inside the job's folder "
            "(no leading '.', no '..')",
        )
    if suffixes and not name.endswith(suffixes):
        problems.add(loc, f"received {name!r}; expected a name ending in {' or '.join(suffixes)}")
    names = [f for f, _ in fields]
    for field in names:
        if field not in allowed_fields:
            problems.add(
                loc,
                f"placeholder {{{field}}} names nothing Keras logs; expected "
                f"one of {sorted(allowed_fields)}",
            )
    return names


def _check_callbacks(
    spec: JobSpec, has_validation: bool, problems: _Problems, warnings: list[str]
) -> None:
    keys = log_keys(spec)
    available = set(keys) | ({f"val_{k}" for k in keys} if has_validation else set())
    every_epoch = spec.fit.validation_freq == 1
    seen: dict[str, int] = {}
    for i, cb in enumerate(spec.callbacks):
        loc: Loc = ("callbacks", i)
        seen[cb.type] = seen.get(cb.type, 0) + 1
        if isinstance(cb, (EarlyStoppingSpec, ModelCheckpointSpec, ReduceLROnPlateauSpec)):
            if cb.monitor not in available:
                hint = (
                    " (val_* metrics need validation data or fit.validation_split)"
                    if cb.monitor.startswith("val_") and not has_validation
                    else ""
                )
                problems.add(
                    loc + ("monitor",),
                    f"received monitor={cb.monitor!r}, which no "
                    f"compiled metric produces; expected one of {sorted(available)}{hint}",
                )
        if isinstance(cb, ModelCheckpointSpec):
            suffixes = WEIGHTS_SUFFIXES if cb.save_weights_only else CHECKPOINT_SUFFIXES
            names = _check_file_name(
                cb.filepath, loc + ("filepath",), available | {"epoch"}, suffixes, problems
            )
            if (
                any(n.startswith("val_") for n in names)
                and not cb.save_best_only
                and not every_epoch
            ):
                problems.add(
                    loc + ("filepath",),
                    "val_* placeholders are only filled on epochs "
                    "that validate; with validation_freq other than 1, set "
                    "save_best_only or drop them",
                )
            if cb.save_freq != "epoch" and any(n != "epoch" for n in names):
                problems.add(
                    loc + ("filepath",),
                    "with save_freq in batches only {epoch} is "
                    "filled in; metric placeholders need save_freq='epoch'",
                )
            if "epoch" not in names and not cb.save_best_only:
                warnings.append(
                    f"callbacks[{i}].filepath has no {{epoch}} and save_best_only is "
                    "false: one file is overwritten every epoch; add {epoch:02d}"
                )
        if isinstance(cb, CSVLoggerSpec):
            _check_file_name(cb.filename, loc + ("filename",), set(), (), problems)
            if cb.filename.endswith((".keras", ".h5")):
                problems.add(loc + ("filename",), "expected a CSV file name")
        if isinstance(cb, (TensorBoardSpec, CSVLoggerSpec)) and seen[cb.type] > 1:
            problems.add(loc, f"{cb.type} appears more than once; its files would collide")
        if isinstance(cb, EarlyStoppingSpec) and cb.start_from_epoch >= spec.fit.epochs:
            warnings.append(
                f"callbacks[{i}].start_from_epoch={cb.start_from_epoch} >= epochs: "
                "EarlyStopping will never act"
            )

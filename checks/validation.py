"""Checks of a job spec against what fitq knows beyond the spec itself.

The spec's own validators (``models.spec``) have refused what the spec alone shows to
be wrong. These checks need more: the allowlist of Keras objects (``checks.catalog``),
the data's shapes and labels (``checks.data_info``), the model's size
(``checks.model_size``) and the service's limits (``FITQ_*``). ``check_spec`` collects
every problem, each with its path inside the spec, and raises one ``SpecError``. No
Keras is needed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from checks import catalog
from checks.architectures import ARCHITECTURES
from checks.compile_args import check_compile, log_keys, loss_name
from checks.data_info import DataInfo, DatasetLookup, SpecData, augmented, read_data
from checks.data_info import uploaded_split as uploaded_split  # the worker reads it here
from checks.keras_config import check_keras_config
from checks.model_size import ModelSize, SizeError, model_size, stack_size
from checks.problems import Loc, Problems
from core.settings import Settings
from models.file_names import placeholders
from models.spec import (
    KERAS_BATCH_SIZE,
    EarlyStoppingSpec,
    JobSpec,
    ModelCheckpointSpec,
    ReduceLROnPlateauSpec,
)


def check_spec(
    spec: JobSpec, settings: Settings, datasets: DatasetLookup | None = None
) -> SpecData:
    """Raises ``SpecError`` listing every problem; returns what a runnable spec's data is.

    ``datasets`` looks up an uploaded dataset's per-split metadata by id.
    """
    problems = Problems()
    train, validation, test = read_data(spec, settings, problems, datasets or _no_uploads)
    _check_model(spec, [augmented(spec, train, problems), validation, test], problems, settings)
    splits = {"training": train, "validation": validation, "test": test}
    check_compile(spec, splits, settings.max_label_classes, problems)
    _check_fit_limits(spec, settings, problems)
    _check_validation_split(spec, train, problems)
    _check_class_weight(spec, train, problems)
    _check_callbacks(spec, problems)
    _check_worker_limits(spec, settings, problems)
    problems.raise_any()
    assert train is not None  # data that cannot be read is a problem, raised above
    return SpecData(train, validation, test)


def _no_uploads(_dataset_id: str) -> None:
    # The uploads lookup's signature, for specs checked where nothing is uploaded.
    return None


def _check_worker_limits(spec: JobSpec, settings: Settings, problems: Problems) -> None:
    """A worker has the devices the job asks for, and lets it run as long."""
    gpus, most = spec.resources.gpus, settings.max_gpus_per_worker
    if gpus > most:
        problems.add(
            ("resources", "gpus"),
            f"received gpus={gpus}, but no worker has more than {most} "
            f"(FITQ_MAX_GPUS_PER_WORKER): the job could never run; expected at most {most}",
        )
    runtime = spec.max_runtime_seconds
    if runtime and runtime > settings.max_runtime_seconds:
        problems.add(
            ("max_runtime_seconds",),
            f"received {runtime}, expected "
            f"at most {settings.max_runtime_seconds} (FITQ_MAX_RUNTIME_SECONDS)",
        )


def _n_classes(spec: JobSpec, infos: list[DataInfo | None]) -> int | None:
    """How many classes the labels index, when the loss reads them as classes.

    As the worker sizes its output layer: one more than the largest label of any
    split. With a regression loss integer targets are numbers, not classes.
    """
    if not catalog.labels_are_classes(loss_name(spec)):
        return None
    counts = [info.n_classes for info in infos if info is not None and info.n_classes]
    return max(counts) if counts else None


def _check_model(
    spec: JobSpec, data: list[DataInfo | None], problems: Problems, settings: Settings
) -> None:
    """``data`` is the training data as the model sees it, then validation and test."""
    if spec.model.builtin is not None:
        params = _builtin_params(spec.model.builtin, spec.model.params, problems)
        if params is not None:
            _check_builtin(spec, params, data, problems, settings)
        return
    assert spec.model.keras_config is not None
    found = check_keras_config(spec.model.keras_config, ("model", "keras_config"))
    problems.items.extend(found)
    train = data[0]
    if found or train is None:
        return
    try:
        size = model_size(spec.model.keras_config, train.feature_shape, ("model", "keras_config"))
    except SizeError as exc:
        problems.add(exc.loc, exc.msg, "keras_config")
        return
    _check_size(size, spec, settings, problems)


def _builtin_params(name: str, params: dict[str, Any], problems: Problems) -> BaseModel | None:
    """The parameters of the built-in architecture ``name``, when it is one and they fit it."""
    params_model = ARCHITECTURES.get(name)
    if params_model is None:
        problems.add(
            ("model", "builtin"),
            f"unknown architecture {name!r}, expected one of {sorted(ARCHITECTURES)}",
        )
        return None
    try:
        return params_model.model_validate(params)
    except ValidationError as exc:
        problems.add_validation_error(("model", "params"), exc)
        return None


def _check_builtin(
    spec: JobSpec,
    params: BaseModel,
    data: list[DataInfo | None],
    problems: Problems,
    settings: Settings,
) -> None:
    """The architecture fits the training data and the loss, within the size limits."""
    builtin, train = spec.model.builtin or "", data[0]
    if train is None:
        return
    images = len(train.feature_shape) in (2, 3)
    if builtin == "cnn" and not images:
        problems.add(
            ("model", "builtin"),
            "the cnn architecture needs image-shaped samples "
            "(height, width[, channels]); received samples of shape "
            f"{list(train.feature_shape)}",
        )
    loss = loss_name(spec)
    regression = not catalog.labels_are_classes(loss) and loss not in catalog.ONE_HOT_LOSSES
    if (
        regression
        and train.target_dim == 1
        and getattr(params, "output_activation", None) == "softmax"
    ):
        problems.add(
            ("model", "params", "output_activation"),
            f"received 'softmax' with the regression loss {loss!r}: a softmax over the "
            "one output unit is always 1; expected 'linear', 'sigmoid' or null",
        )
    if builtin != "cnn" or images:
        n_out, _ = catalog.output_head(loss, _n_classes(spec, data), train.target_dim)
        layers = _builtin_layers(builtin, params, train.feature_shape, n_out)
        _check_size(stack_size(layers, train.feature_shape), spec, settings, problems)


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


def _check_size(size: ModelSize, spec: JobSpec, settings: Settings, problems: Problems) -> None:
    if size.params > settings.max_params:
        problems.add(
            ("model",),
            f"the model has about {size.params:,} weights; expected at most "
            f"{settings.max_params:,} (FITQ_MAX_PARAMS)",
        )
    # The largest batch one device runs: fit() splits the global batch across
    # replicas; validation runs without gradients but may use a larger batch.
    fit = spec.fit
    batch = max(fit.batch_size or KERAS_BATCH_SIZE, fit.validation_batch_size or 0)
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


def _check_fit_limits(spec: JobSpec, settings: Settings, problems: Problems) -> None:
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


def _check_validation_split(spec: JobSpec, train: DataInfo | None, problems: Problems) -> None:
    split = spec.fit.validation_split
    if train is None or split == 0:
        return
    n_train = int(train.n_samples * (1 - split))
    if n_train == 0 or n_train == train.n_samples:
        problems.add(
            ("fit", "validation_split"),
            f"received {split} of {train.n_samples} samples, which leaves an empty split",
        )


def _check_class_weight(spec: JobSpec, train: DataInfo | None, problems: Problems) -> None:
    """class_weight needs a loss on class labels, and labels that are classes."""
    weights, loss = spec.fit.class_weight, loss_name(spec)
    if weights is None or train is None:
        return
    if not catalog.labels_are_classes(loss) and loss not in catalog.ONE_HOT_LOSSES:
        problems.add(
            ("fit", "class_weight"),
            f"class_weight weighs classes, but the loss {loss!r} does not read the labels "
            "as classes; expected null, or a loss on class labels "
            f"({sorted(catalog.SPARSE_LOSSES | catalog.BINARY_LOSSES)})",
        )
    elif train.n_classes is None:
        problems.add(
            ("fit", "class_weight"),
            "class_weight needs class labels (1-D integers from 0), but the training labels are not"
            if isinstance(weights, dict)
            else "'balanced' needs class labels, but the training labels are real numbers",
        )
    elif isinstance(weights, dict):
        for key in weights:
            if not 0 <= key < train.n_classes:
                problems.add(
                    ("fit", "class_weight", key),
                    f"received class {key}, expected a class index in 0..{train.n_classes - 1}",
                )


def _check_callbacks(spec: JobSpec, problems: Problems) -> None:
    """Callbacks monitor, and name files after, keys Keras logs."""
    keys = log_keys(spec)
    available = set(keys) | ({f"val_{k}" for k in keys} if spec.has_validation else set())
    for i, cb in enumerate(spec.callbacks):
        loc: Loc = ("callbacks", i)
        if isinstance(cb, (EarlyStoppingSpec, ModelCheckpointSpec, ReduceLROnPlateauSpec)):
            if cb.monitor not in available:
                hint = (
                    " (val_* metrics need validation data or fit.validation_split)"
                    if cb.monitor.startswith("val_") and not spec.has_validation
                    else ""
                )
                problems.add(
                    loc + ("monitor",),
                    f"received monitor={cb.monitor!r}, which no "
                    f"compiled metric produces; expected one of {sorted(available)}{hint}",
                )
        if isinstance(cb, ModelCheckpointSpec):
            allowed = available | {"epoch"}
            for name in placeholders(cb.filepath):
                if name not in allowed:
                    problems.add(
                        loc + ("filepath",),
                        f"placeholder {{{name}}} names nothing Keras logs; expected "
                        f"one of {sorted(allowed)}",
                    )

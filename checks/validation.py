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
from checks.compile_args import (
    LEARNING_RATE_LOC,
    check_compile,
    check_schedule,
    log_keys,
    loss_name,
    optimizer_schedule,
)
from checks.data_info import (
    DataInfo,
    DatasetLookup,
    ModelIO,
    ModelOutputs,
    SpecData,
    augmented,
    check_names,
    read_data,
)
from checks.data_info import uploaded_split as uploaded_split  # the worker reads it here
from checks.keras_config import check_keras_config
from checks.model_size import ModelSize, SizeError, model_io, model_size, stack_size
from checks.model_source import (
    ArchitectureLookup,
    SourceProblem,
    check_freeze,
    no_stored_models,
    source_field,
)
from checks.monitor import keras_decides
from checks.problems import Loc, Problems
from core.settings import Settings
from models.file_names import placeholders
from models.spec import (
    KERAS_BATCH_SIZE,
    DataRef,
    EarlyStoppingSpec,
    JobSpec,
    LearningRateSchedulerSpec,
    ModelCheckpointSpec,
    ReduceLROnPlateauSpec,
)


def check_spec(
    spec: JobSpec,
    settings: Settings,
    datasets: DatasetLookup | None = None,
    architectures: ArchitectureLookup | None = None,
) -> SpecData:
    """Raises ``SpecError`` listing every problem; returns what a runnable spec's data is.

    ``datasets`` looks up an uploaded dataset's per-split metadata by id;
    ``architectures`` what ``model.uploaded`` or ``model.from_job`` names.
    """
    problems = Problems()
    train, validation, test = read_data(spec, settings, problems, datasets or _no_uploads)
    model_data = [augmented(spec, train, problems), validation, test]
    if spec.model.layer_source:
        lookup = architectures or no_stored_models
        outputs = _check_stored(spec, model_data, lookup, problems, settings)
    else:
        outputs = _check_model(spec, model_data, problems, settings)
    splits = {"training": train, "validation": validation, "test": test}
    check_compile(spec, splits, settings.max_label_classes, problems, outputs)
    _check_fit_limits(spec, settings, problems)
    _check_validation_split(spec, train, problems)
    _check_class_weight(spec, train, outputs, problems)
    _check_callbacks(spec, outputs.names if outputs else [], problems)
    _check_rate_setters(spec, problems)
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
) -> ModelOutputs | None:
    """``data`` is the training data as the model sees it, then validation and test.

    Returns the model's outputs (names and, when it could be sized, shapes); None when
    its config is refused before they are known.
    """
    refs = [spec.data.train, spec.data.validation, spec.data.test]
    if spec.model.builtin is not None:
        fit = _names_fit(refs, data, None, problems)
        params = _builtin_params(spec.model.builtin, spec.model.params, problems)
        if params is not None and fit:
            _check_builtin(spec, params, data, problems, settings)
        return ModelOutputs([])
    assert spec.model.keras_config is not None
    return _check_config(
        spec, spec.model.keras_config, ("model", "keras_config"), data, problems, settings
    )


def _check_config(
    spec: JobSpec,
    config: dict[str, Any],
    loc: Loc,
    data: list[DataInfo | None],
    problems: Problems,
    settings: Settings,
    data_problems: Problems | None = None,
) -> ModelOutputs | None:
    """A model config passes the allowlist, the data gives each of its inputs and
    outputs, and it fits the training data and the size limits.

    Returns the model's outputs (names and, when it could be sized, shapes); None when
    the config is refused before they are known. Problems of the data go to
    ``data_problems`` (``problems`` by default).
    """
    found = check_keras_config(config, loc)
    problems.items.extend(found)
    if found:
        return None
    try:
        io = model_io(config, loc)
    except SizeError as exc:
        problems.add(exc.loc, exc.msg, "keras_config")
        return None
    train = data[0]
    refs = [spec.data.train, spec.data.validation, spec.data.test]
    named = _names_fit(refs, data, io, data_problems or problems)
    if train is None:
        return ModelOutputs(io[1])
    try:  # also where the names do not fit: the model's side of it, at its path
        size = model_size(config, train.inputs or train.feature_shape, loc)
    except SizeError as exc:
        problems.add(exc.loc, exc.msg, "keras_config")
        return ModelOutputs(io[1])
    _check_size(size, spec, settings, problems)
    return ModelOutputs(io[1], size.outputs if named else None)


def _check_stored(
    spec: JobSpec,
    data: list[DataInfo | None],
    lookup: ArchitectureLookup,
    problems: Problems,
    settings: Settings,
) -> ModelOutputs | None:
    """An uploaded model or a parent job's: found, the owner's, and fit for the data.

    Problems inside the stored config are reported at the source's field, with their
    path inside the config in the message. Returns its outputs, as ``_check_config``.
    """
    field = source_field(spec.model)
    found = lookup(spec.model)
    if isinstance(found, SourceProblem):
        problems.add(("model", found.field), found.msg)
        return None
    try:
        in_names, out_names = model_io(found.config)
    except SizeError:
        in_names, out_names = [], []  # the checks below say what is wrong with the graph
    if len(in_names) > 1 or len(out_names) > 1:
        problems.add(
            ("model", field),
            f"the model has inputs {in_names} and outputs {out_names}; an uploaded model or a "
            "parent job's trains here with one input and one output (a model of several "
            "trains from its config, as model.keras_config)",
        )
        return None
    inner = Problems()
    outputs = _check_config(spec, found.config, ("config",), data, inner, settings, problems)
    for item in inner.items:
        where = ".".join(str(part) for part in item["loc"])
        if item["loc"] == ["model"]:  # a size limit
            problems.add(("model", field), item["msg"], item["type"])
        else:
            problems.add(("model", field), f"the model's {where}: {item['msg']}", item["type"])
    check_freeze(spec.model, found.config, problems)
    return outputs


def _names_fit(
    refs: list[DataRef | None], data: list[DataInfo | None], io: ModelIO, problems: Problems
) -> bool:
    """Every data set gives an array for each input and output of the model, by name."""
    ok = True
    for name, ref, info in zip(("train", "validation", "test"), refs, data, strict=True):
        if ref is not None and info is not None:
            ok = check_names(ref, info, ("data", name), io, problems) and ok
    return ok


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


def _check_class_weight(
    spec: JobSpec, train: DataInfo | None, outputs: ModelOutputs | None, problems: Problems
) -> None:
    """class_weight needs a loss on class labels, and labels that are classes; Keras
    takes it for a model with one output, without sample weights."""
    weights, loss = spec.fit.class_weight, loss_name(spec)
    if weights is None or train is None:
        return
    loc: Loc = ("fit", "class_weight")
    if outputs is not None and len(outputs.names) > 1:
        problems.add(
            loc,
            f"Keras takes class_weight only for a model with one output; this one has "
            f"{outputs.names}: expected null, or sample weights (data.*.sample_weight)",
        )
    elif train.sample_weight is not None:
        problems.add(
            loc,
            "the training data has sample weights, and Keras takes class_weight or "
            "sample_weight, not both: expected null",
        )
    elif not catalog.labels_are_classes(loss) and loss not in catalog.ONE_HOT_LOSSES:
        problems.add(
            loc,
            f"class_weight weighs classes, but the loss {loss!r} does not read the labels "
            "as classes; expected null, or a loss on class labels "
            f"({sorted(catalog.SPARSE_LOSSES | catalog.BINARY_LOSSES)})",
        )
    elif train.n_classes is None:
        problems.add(
            loc,
            "class_weight needs class labels (1-D integers from 0), but the training labels are not"
            if isinstance(weights, dict)
            else "'balanced' needs class labels, but the training labels are real numbers",
        )
    elif isinstance(weights, dict):
        for key in weights:
            if not 0 <= key < train.n_classes:
                problems.add(
                    loc + (key,),
                    f"received class {key}, expected a class index in 0..{train.n_classes - 1}",
                )


def _check_callbacks(spec: JobSpec, outputs: list[str], problems: Problems) -> None:
    """Callbacks monitor, and name files after, keys Keras logs (for the model's
    ``outputs``: ``<output>_loss``, ``val_<output>_accuracy``, ...)."""
    keys = log_keys(spec, outputs)
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
            elif cb.mode == "auto" and not isinstance(cb, ReduceLROnPlateauSpec):
                _check_auto_mode(spec, cb.monitor, loc, problems)
        if isinstance(cb, ModelCheckpointSpec):
            allowed = available | {"epoch"}
            for name in placeholders(cb.filepath):
                if name not in allowed:
                    problems.add(
                        loc + ("filepath",),
                        f"placeholder {{{name}}} names nothing Keras logs; expected "
                        f"one of {sorted(allowed)}",
                    )


def _check_rate_setters(spec: JobSpec, problems: Problems) -> None:
    """LearningRateScheduler's schedule is one Keras has; callbacks that set the
    optimizer's rate need a rate they can set, not a schedule (Keras raises a
    TypeError when they try)."""
    schedule = optimizer_schedule(spec)
    for i, cb in enumerate(spec.callbacks):
        if isinstance(cb, LearningRateSchedulerSpec):
            check_schedule(cb.schedule, ("callbacks", i, "schedule"), problems)
        sets_rate = isinstance(cb, LearningRateSchedulerSpec | ReduceLROnPlateauSpec)
        if schedule is not None and sets_rate:
            problems.add(
                ("callbacks", i, "type"),
                f"{cb.type} sets the optimizer's learning rate at run time, but "
                f"{'.'.join(map(str, LEARNING_RATE_LOC))} is a schedule "
                f"({str(schedule.get('class_name'))[:60]!r}), which Keras cannot set; expected a "
                "number as the optimizer's learning_rate, or no rate-setting callback",
            )


def _check_auto_mode(spec: JobSpec, monitor: str, loc: Loc, problems: Problems) -> None:
    """In mode 'auto', Keras must be able to tell which way ``monitor`` improves."""
    if not keras_decides(monitor, spec.compile):
        problems.add(
            loc + ("mode",),
            f"received mode='auto' with monitor={monitor!r}: Keras tells which way only "
            "'loss' and a compiled metric's own name improve (with or without 'val_'), and "
            f"raises for {monitor!r}; expected mode 'min' or 'max'",
        )

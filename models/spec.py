"""The job spec: a ``model.fit()`` call written down as data.

Field names, defaults and constraints are Keras' own wherever Keras has them. The
schema here refuses everything the spec alone shows to be wrong: wrong types and
values, and fields that disagree with each other (``initial_epoch`` past ``epochs``,
validation data and ``validation_split`` together, file names a callback could not
write), each error at its field's path. ``checks.validation`` then checks what needs
more than the spec (the allowlist of Keras objects, the data's shapes and labels, the
service's limits) before anything is queued.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.file_names import name_problems, placeholders

Mode = Literal["auto", "min", "max"]
# Strict: JSON ``true`` is not the number 1.
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]


VERBOSITY = ("auto", 0, 1, 2)


def _verbosity(value: Any) -> Any:
    if not isinstance(value, str | int) or isinstance(value, bool) or value not in VERBOSITY:
        raise PydanticCustomError("literal_error", "Input should be 'auto', 0, 1 or 2")
    return value


# One string literal or one of three integers (two types, so that client generators
# can type it); booleans and floats are refused, not read as numbers.
Verbosity = Annotated[Literal["auto"] | Literal[0, 1, 2], BeforeValidator(_verbosity)]


def _callback_verbosity(value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PydanticCustomError(
            "int_type",
            "received verbose={got}; expected a count: 0 (silent), or 1 or more (a line "
            "each time the callback acts), not true or false",
            {"got": repr(value)[:60]},
        )
    return value


# A callback's ``verbose``: Keras' callbacks print when ``verbose > 0``, so any count
# is accepted (EarlyStopping(verbose=2) acts as 1); booleans and floats are refused.
CallbackVerbosity = Annotated[int, Field(ge=0), BeforeValidator(_callback_verbosity)]


# fit()'s batch_size when the spec leaves it null, as Keras.
KERAS_BATCH_SIZE = 32
# What ModelCheckpoint accepts for a whole model: the Keras format, or legacy HDF5
# (Keras writes it with a warning; ``.hdf5`` it refuses).
CHECKPOINT_SUFFIXES = (".keras", ".h5")
WEIGHTS_SUFFIXES = (".weights.h5",)
CSV_NOT_SUFFIXES = (".keras", ".h5")
# Most layer names a model spec may freeze.
MAX_FROZEN = 200

# The queue a job goes to when its spec names none.
DEFAULT_QUEUE = "default"
# Queue names allow [A-Za-z0-9_.-] (as kombu's filesystem transport does); jobs that need
# several devices are routed to ``<queue>.gpus<n>``, so a spec may not name its queue so.
ROUTED_SUFFIX = ".gpus"


class _Strict(BaseModel):
    # NaN and infinity would be stored as null; refuse them at the door.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Problem(NamedTuple):
    """One problem a validator found."""

    loc: tuple[str | int, ...]  # the path inside the model validated
    msg: str
    got: Any  # the value refused


def _refuse(problems: list[Problem]) -> None:
    """Raises the problems a validator found as one error, each at its own path.

    pydantic puts each path under the validated model's own, so a validator of the
    whole spec can name ``fit.validation_split`` or ``callbacks.0.filepath``.
    """
    if problems:
        raise ValidationError.from_exception_data(
            "JobSpec",
            [
                InitErrorDetails(type=PydanticCustomError("value_error", msg), loc=loc, input=got)
                for loc, msg, got in problems
            ],
        )


def _without_nulls(data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without those of ``fields`` that are null: a spec that does not use a
    field is stored as specs were before it existed (the same hash for
    Idempotency-Key, and workers of the previous release still read it)."""
    return {k: v for k, v in data.items() if not (k in fields and v is None)}


class ModelSpec(_Strict):
    """Where the model comes from: exactly one of ``builtin``, ``keras_config``,
    ``uploaded`` or ``from_job``.

    Attributes:
        builtin: A registered architecture (``mlp``, ``cnn``), sized to the data.
        params: The architecture's parameters (see ``docs/spec.md``).
        keras_config: What ``model.to_json()`` (parsed),
            ``keras.saving.serialize_keras_object(model)`` or ``model.get_config()``
            gives, for a Sequential or Functional model (several inputs and outputs,
            merge layers, shared layers, models inside it) of the Keras layers on
            fitq's allowlist (no Lambda, no custom objects); every name in it
            (activations, initializers, regularizers, constraints, dtypes) must be
            one Keras knows.
        uploaded: The id of a ``.keras`` file uploaded to ``POST /v1/models``.
        weights: With ``uploaded``: start from the file's weights (true), or from
            the architecture alone, freshly initialized (false). Defaults to true.
        from_job: A warm start: the id of a finished job whose architecture is
            built and given the weights of one of its checkpoints.
        checkpoint: With ``from_job``: ``best`` (the checkpoint marked best),
            ``last`` (the newest) or a checkpoint id from
            ``GET /v1/jobs/{id}/checkpoints``. Defaults to ``best``. The stored spec
            holds the id it resolved to.
        freeze: With ``uploaded`` or ``from_job``: names of the model's layers
            (``model.layers``) to train no further (``layer.trainable = False``
            before ``compile()``). Defaults to none.

    The archive's compile config and optimizer state are not used: the job compiles
    the model with its ``compile`` section, as ``model.compile()`` after
    ``keras.saving.load_model()`` does. Before the job is queued, fitq works out the
    model's weights and the activations a training step holds, from the training
    data's shape, and refuses a model over ``FITQ_MAX_PARAMS`` or
    ``FITQ_MAX_ACTIVATION_BYTES``.
    """

    builtin: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    keras_config: dict[str, Any] | None = None
    uploaded: str | None = Field(default=None, min_length=1, max_length=32)
    weights: bool | None = None
    from_job: str | None = Field(default=None, min_length=1, max_length=32)
    checkpoint: Literal["best", "last"] | PositiveInt | None = None
    freeze: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=MAX_FROZEN
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = {
            "builtin": self.builtin,
            "keras_config": self.keras_config,
            "uploaded": self.uploaded,
            "from_job": self.from_job,
        }
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'builtin' (e.g. 'mlp'), 'keras_config', 'uploaded' "
                f"(a model id) or 'from_job' (a job id); received {given or 'none'}"
            )
        if self.builtin is None and self.params:
            raise ValueError("'params' goes with 'builtin' only")
        for name, owner in (("weights", "uploaded"), ("checkpoint", "from_job")):
            if getattr(self, name) is not None and owner not in given:
                raise ValueError(f"'{name}' goes with '{owner}' only")
        if self.freeze is not None and not {"uploaded", "from_job"} & set(given):
            raise ValueError("'freeze' goes with 'uploaded' or 'from_job' only")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_sources(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Specs of the first two sources are stored as they were before the others
        # existed, so their hash (for Idempotency-Key) stays the same.
        data: dict[str, Any] = handler(self)
        unset: tuple[str, ...] = ("uploaded", "weights", "from_job", "checkpoint", "freeze")
        if self.layer_source:
            unset += ("builtin", "params", "keras_config")
        for key in unset:
            if not data.get(key) and data.get(key) is not False:
                data.pop(key, None)
        return data

    @property
    def layer_source(self) -> bool:
        """Whether the model comes from a stored architecture (an upload, a parent job)."""
        return self.uploaded is not None or self.from_job is not None


class ObjectSpec(_Strict):
    """A Keras object by class name and config, as ``keras.*.serialize`` writes it."""

    class_name: str = Field(max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(_Strict):
    """A learning-rate schedule of ``keras.optimizers.schedules``, by class name and config.

    As ``keras.optimizers.schedules.serialize`` writes it: ``module`` and
    ``registered_name``, when given, are ``keras.optimizers.schedules`` and null.
    ``ExponentialDecay``, ``PiecewiseConstantDecay``, ``PolynomialDecay``,
    ``InverseTimeDecay``, ``CosineDecay`` (with ``warmup_target`` and
    ``warmup_steps``) and ``CosineDecayRestarts`` take Keras' own arguments.
    """

    class_name: str = Field(max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    module: Literal["keras.optimizers.schedules"] | None = None
    registered_name: None = None


# A loss or a metric: a name Keras knows, or ``{class_name, config}``.
KerasObject = str | ObjectSpec
# A model's input or output, by its layer's name.
IOName = Annotated[str, Field(min_length=1, max_length=200)]
# An output's metrics: one metric or a list of them.
OutputMetrics = KerasObject | Annotated[list[KerasObject], Field(max_length=16)]
Metrics = Annotated[
    Annotated[list[OutputMetrics], Field(max_length=16)]
    | Annotated[dict[IOName, OutputMetrics], Field(max_length=16)],
    Field(union_mode="left_to_right"),
]
Losses = Annotated[
    KerasObject
    | Annotated[dict[IOName, KerasObject], Field(min_length=1, max_length=64)]
    | Annotated[list[KerasObject], Field(min_length=1, max_length=64)],
    Field(union_mode="left_to_right"),
]
Weight = Annotated[float, Strict(), Field(ge=0.0)]
LossWeights = Annotated[
    Weight
    | Annotated[list[Weight], Field(max_length=64)]
    | Annotated[dict[IOName, Weight], Field(max_length=64)],
    Field(union_mode="left_to_right"),
]


class CompileSpec(_Strict):
    """The arguments of ``model.compile()``, with Keras' names and meanings.

    A model with several outputs names each output by its output layer's name.

    Attributes:
        optimizer: A name (``adam``) or ``{class_name, config}``. Defaults to
            ``rmsprop``, as Keras. Its ``learning_rate`` is a number or a
            learning-rate schedule (``{class_name: ExponentialDecay, config: {...}}``,
            see ``ScheduleSpec``), which the optimizer evaluates at each step.
        loss: A loss name or ``{class_name, config}`` (the same loss for every
            output), a dict by output name (every output), or a list in the model's
            output order.
        metrics: Metric names or ``{class_name, config}``. With several outputs, a
            dict by output name (some outputs) or a list of one entry (a metric or a
            list of metrics) per output, as Keras 3 reads it. Defaults to none.
        loss_weights: Scales each output's loss in the total: a number (the same for
            every output), a list in output order, or a dict by output name. Defaults
            to none (every weight 1).
        weighted_metrics: Metrics weighted by ``sample_weight`` (or ``class_weight``),
            in the forms of ``metrics``. Defaults to none.
    """

    optimizer: str | ObjectSpec = "rmsprop"
    loss: Losses
    metrics: Metrics = Field(default_factory=list)
    loss_weights: LossWeights | None = None
    weighted_metrics: Metrics | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_nulls(handler(self), ("loss_weights", "weighted_metrics"))


# Inline arrays: a (nested) list of numbers, first axis the samples; or, for a model
# with several inputs (outputs), an object of such lists by input (output) name.
InlineArrays = list[Any] | Annotated[dict[IOName, list[Any]], Field(min_length=1, max_length=64)]


class DataRef(_Strict):
    """One data set: a stored dataset, or small inline arrays.

    Attributes:
        dataset: ``builtin:digits`` (or ``iris``, ``wine``, ``breast_cancer``).
        split: Which part of a built-in dataset: ``train`` (70%), ``validation``
            (15%), ``test`` (15%) of a fixed permutation, or ``all``. Defaults to
            ``all``.
        take: Use only the first ``take`` samples of it. Defaults to all of them.
        x: Inline inputs, a (nested) list of numbers, first axis the samples; for a
            model with several inputs, an object of them by input name.
        y: Inline labels: class indices, or numbers for regression; for a model with
            several outputs, an object of them by output name.
        sample_weight: Inline weights, one number per sample (fit()'s
            ``sample_weight``); or an object of them by output name. Defaults to none.
    """

    dataset: str | None = Field(default=None, max_length=128)
    split: Literal["train", "validation", "test", "all"] = "all"
    take: PositiveInt | None = None
    x: InlineArrays | None = None
    y: InlineArrays | None = None
    sample_weight: InlineArrays | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_nulls(handler(self), ("sample_weight",))

    @model_validator(mode="after")
    def _one_source(self) -> DataRef:
        inline = self.x is not None or self.y is not None
        if (self.dataset is None) == (not inline):
            raise ValueError(
                "give either 'dataset' (e.g. 'builtin:digits') or both inline 'x' and 'y'"
            )
        if inline and (self.x is None or self.y is None):
            raise ValueError("inline data needs both 'x' and 'y'")
        if inline and self.split != "all":
            raise ValueError("'split' applies to a 'dataset', not to inline data")
        if self.dataset is not None and self.sample_weight is not None:
            raise ValueError(
                "inline 'sample_weight' goes with inline 'x' and 'y'; a dataset's sample "
                "weights are its 'sample_weight' arrays"
            )
        return self


Factor = (
    Annotated[float, Field(ge=-1.0, le=1.0)]
    | tuple[Annotated[float, Field(ge=-1.0, le=1.0)], Annotated[float, Field(ge=-1.0, le=1.0)]]
)
FillMode = Literal["reflect", "wrap", "constant", "nearest"]


class RandomFlipSpec(_Strict):
    layer: Literal["RandomFlip"]
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal_and_vertical"


class RandomRotationSpec(_Strict):
    layer: Literal["RandomRotation"]
    factor: Factor
    fill_mode: FillMode = "reflect"


class RandomZoomSpec(_Strict):
    layer: Literal["RandomZoom"]
    height_factor: Factor
    width_factor: Factor | None = None
    fill_mode: FillMode = "reflect"


class RandomTranslationSpec(_Strict):
    layer: Literal["RandomTranslation"]
    height_factor: Factor
    width_factor: Factor
    fill_mode: FillMode = "reflect"


class RandomCropSpec(_Strict):
    layer: Literal["RandomCrop"]
    height: PositiveInt
    width: PositiveInt


class RandomContrastSpec(_Strict):
    layer: Literal["RandomContrast"]
    factor: Annotated[float, Field(ge=0.0, le=1.0)]


class RandomBrightnessSpec(_Strict):
    layer: Literal["RandomBrightness"]
    factor: Factor
    value_range: tuple[float, float] = (0.0, 1.0)


class GaussianNoiseSpec(_Strict):
    layer: Literal["GaussianNoise"]
    stddev: Annotated[float, Field(ge=0.0)]


AugmentationSpec = Annotated[
    RandomFlipSpec
    | RandomRotationSpec
    | RandomZoomSpec
    | RandomTranslationSpec
    | RandomCropSpec
    | RandomContrastSpec
    | RandomBrightnessSpec
    | GaussianNoiseSpec,
    Field(discriminator="layer"),
]


class DataSpec(_Strict):
    """Training, validation and test data.

    Attributes:
        train: The data fit() trains on.
        validation: ``validation_data``; or use ``fit.validation_split``.
        test: Evaluated once, after training.
        augmentation: Keras preprocessing layers, with their arguments, applied to
            training batches only, in the input pipeline, seeded from the job's seed.
            Validation and test data are never augmented (with RandomCrop they are
            center-cropped to the same size, as Keras' RandomCrop does at inference).
    """

    train: DataRef
    validation: DataRef | None = None
    test: DataRef | None = None
    augmentation: list[AugmentationSpec] = Field(default_factory=list, max_length=16)


class FitSpec(_Strict):
    """The arguments of ``model.fit()``, with Keras' names and defaults.

    ``verbose`` defaults to 2 (one line per epoch in the job's log) rather than
    Keras' ``"auto"``; it changes only what the log shows. ``workers`` sets how
    many batches of a file-backed dataset are augmented in parallel; in-memory arrays
    ignore it and ``use_multiprocessing``, as Keras ignores them there, and
    file-backed datasets ignore ``use_multiprocessing`` (they load in tf.data's threads).
    ``steps_per_epoch`` and ``validation_steps`` are at most ``FITQ_MAX_STEPS``,
    ``workers`` at most ``FITQ_MAX_FIT_WORKERS``.
    """

    batch_size: PositiveInt | None = None
    epochs: PositiveInt = 1
    steps_per_epoch: PositiveInt | None = None
    verbose: Verbosity = 2
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    validation_freq: PositiveInt | list[PositiveInt] = 1
    shuffle: bool = True
    validation_batch_size: PositiveInt | None = None
    validation_steps: PositiveInt | None = None
    class_weight: dict[int, Annotated[float, Field(ge=0.0)]] | Literal["balanced"] | None = None
    initial_epoch: NonNegInt = 0
    workers: PositiveInt = 1
    use_multiprocessing: bool = False

    @model_validator(mode="after")
    def _epochs_agree(self) -> FitSpec:
        epochs, freq = self.epochs, self.validation_freq
        problems: list[Problem] = []
        if self.initial_epoch >= epochs:
            problems.append(
                Problem(
                    ("initial_epoch",),
                    f"received initial_epoch={self.initial_epoch} with epochs={epochs}; "
                    "expected initial_epoch < epochs (epochs is the index of the last epoch, "
                    "not a count)",
                    self.initial_epoch,
                )
            )
        if isinstance(freq, int) and freq > epochs:
            problems.append(
                Problem(
                    ("validation_freq",),
                    f"received {freq}, which is beyond epochs={epochs}; validation would never run",
                    freq,
                )
            )
        elif freq == []:
            problems.append(
                Problem(
                    ("validation_freq",),
                    "expected a positive integer or a non-empty list of epochs",
                    freq,
                )
            )
        elif isinstance(freq, list):
            problems += [
                Problem(
                    ("validation_freq", i),
                    f"received epoch {epoch}, expected 1..{epochs} (epochs are 1-based)",
                    epoch,
                )
                for i, epoch in enumerate(freq)
                if epoch > epochs
            ]
        _refuse(problems)
        return self


class EarlyStoppingSpec(_Strict):
    """``keras.callbacks.EarlyStopping``, with its arguments and defaults."""

    type: Literal["EarlyStopping"]
    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: NonNegInt = 0
    verbose: CallbackVerbosity = 0
    mode: Mode = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: NonNegInt = 0


class ModelCheckpointSpec(_Strict):
    """``keras.callbacks.ModelCheckpoint``.

    ``filepath`` is a file name inside the job's ``checkpoints/`` folder, with
    ``{epoch}`` and metric placeholders (``epoch{epoch:02d}-{val_loss:.3f}.keras``);
    it ends in ``.keras`` (or ``.h5``, Keras' legacy HDF5 format), or ``.weights.h5``
    with ``save_weights_only``.
    ``save_freq`` is ``"epoch"`` or a number of batches.
    """

    type: Literal["ModelCheckpoint"]
    filepath: str = Field(min_length=1, max_length=200)
    monitor: str = "val_loss"
    verbose: CallbackVerbosity = 0
    save_best_only: bool = False
    save_weights_only: bool = False
    mode: Mode = "auto"
    save_freq: Literal["epoch"] | PositiveInt = "epoch"
    initial_value_threshold: float | None = None

    def filepath_problems(self) -> list[str]:
        """What is wrong with ``filepath``, whatever metrics the model logs."""
        suffixes = WEIGHTS_SUFFIXES if self.save_weights_only else CHECKPOINT_SUFFIXES
        problems = name_problems(self.filepath, suffixes)
        try:
            names = placeholders(self.filepath)
        except ValueError:
            return problems
        if self.save_freq != "epoch" and any(n != "epoch" for n in names):
            problems.append(
                "with save_freq in batches only {epoch} is filled in; metric placeholders "
                "need save_freq='epoch'"
            )
        return problems


class TensorBoardSpec(_Strict):
    """``keras.callbacks.TensorBoard``; ``log_dir`` is always the job's ``tensorboard/``."""

    type: Literal["TensorBoard"]
    histogram_freq: NonNegInt = 0
    write_graph: bool = True
    write_images: bool = False
    write_steps_per_second: bool = False
    update_freq: Literal["epoch", "batch"] | PositiveInt = "epoch"


class ReduceLROnPlateauSpec(_Strict):
    """``keras.callbacks.ReduceLROnPlateau``, with its arguments and defaults."""

    type: Literal["ReduceLROnPlateau"]
    monitor: str = "val_loss"
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    patience: NonNegInt = 10
    verbose: CallbackVerbosity = 0
    mode: Mode = "auto"
    min_delta: float = 1e-4
    cooldown: NonNegInt = 0
    min_lr: float = Field(default=0.0, ge=0.0)


class LearningRateSchedulerSpec(_Strict):
    """``keras.callbacks.LearningRateScheduler``, with a schedule object for its function.

    Keras takes a Python function of the epoch index; a spec names a learning-rate
    schedule (``ScheduleSpec``) instead, evaluated at the epoch index: epoch ``i``
    (0-based, counted from the first epoch of training as Keras counts it, so
    ``initial_epoch`` and a resumed attempt go on where they were) trains at
    ``schedule(i)``, set on the optimizer when the epoch begins.

    Attributes:
        schedule: The learning-rate schedule.
        verbose: 0 quiet; 1 or more, a line in the job's log at each update. Defaults to 0.
    """

    type: Literal["LearningRateScheduler"]
    schedule: ScheduleSpec
    verbose: CallbackVerbosity = 0


class CSVLoggerSpec(_Strict):
    """``keras.callbacks.CSVLogger``; ``filename`` is a name inside the job's folder."""

    type: Literal["CSVLogger"]
    filename: str = Field(default="training.csv", min_length=1, max_length=100)
    separator: str = Field(default=",", min_length=1, max_length=1)
    append: bool = False

    def filename_problems(self) -> list[str]:
        """What is wrong with ``filename``: the checkpoint rules, without placeholders."""
        problems = name_problems(self.filename)
        try:
            names = placeholders(self.filename)
        except ValueError:
            names = []
        problems += [
            f"placeholder {{{n}}} names nothing Keras logs; expected one of []" for n in names
        ]
        if self.filename.endswith(CSV_NOT_SUFFIXES):
            problems.append("expected a CSV file name")
        return problems


class TerminateOnNaNSpec(_Strict):
    """``keras.callbacks.TerminateOnNaN``: a NaN or infinite loss ends the job ``failed``."""

    type: Literal["TerminateOnNaN"]


CallbackSpec = Annotated[
    EarlyStoppingSpec
    | ModelCheckpointSpec
    | TensorBoardSpec
    | ReduceLROnPlateauSpec
    | LearningRateSchedulerSpec
    | CSVLoggerSpec
    | TerminateOnNaNSpec,
    Field(discriminator="type"),
]


class ResourcesSpec(_Strict):
    """What a job needs from the worker that trains it.

    Attributes:
        gpus: How many devices the job trains on. With more than one, the model is
            replicated on that many GPUs with ``tf.distribute.MirroredStrategy`` and
            each step splits ``fit.batch_size`` (the global batch) across them, as
            Keras documents. A worker without GPUs counts its logical CPU devices
            (``FITQ_LOGICAL_CPUS``). A job waits for a worker with this many devices;
            one asking more than ``FITQ_MAX_GPUS_PER_WORKER`` is refused. Defaults to 1.
    """

    gpus: Annotated[int, Strict(), Field(ge=1, le=64)] = 1


MAX_KEEP = 10_000


class RetentionSpec(_Strict):
    """Which ModelCheckpoint files a job keeps once it has ended.

    Keras' ModelCheckpoint writes its files while the job trains, as its arguments
    say. When the job ends (succeeded, failed, stopped or cancelled), fitq removes
    every checkpoint file that is neither among the ``keep_best`` best nor among the
    ``keep_last`` newest, and marks its row removed (``removed_at``,
    ``removed_reason: retention``): ``GET /v1/jobs/{id}/checkpoints`` still lists it,
    and its download answers 410. Give ``keep_best``, ``keep_last`` or both (the one
    left out counts as 0), or ``keep_all``.

    Attributes:
        keep_best: How many of the best checkpoints to keep, for each monitored
            metric: ranked by the value of the ModelCheckpoint's ``monitor`` in its
            ``mode`` (``auto`` decided by Keras' rule), the earlier epoch first on a
            tie. A checkpoint written without that value is never among the best.
            Defaults to 0.
        keep_last: How many of the newest checkpoints to keep (by epoch, then by the
            order they were written). Defaults to 0.
        keep_all: Keep every checkpoint, whatever the server's default
            (``FITQ_KEEP_BEST_CHECKPOINTS``, ``FITQ_KEEP_LAST_CHECKPOINTS``). Not
            with ``keep_best`` or ``keep_last``. Defaults to False.
    """

    keep_best: Annotated[int, Strict(), Field(ge=0, le=MAX_KEEP)] = 0
    keep_last: Annotated[int, Strict(), Field(ge=0, le=MAX_KEEP)] = 0
    keep_all: StrictBool = False

    @model_validator(mode="after")
    def _one_rule(self) -> RetentionSpec:
        counts = {"keep_best", "keep_last"} & self.model_fields_set
        if self.keep_all and counts:
            raise ValueError(
                f"received keep_all with {sorted(counts)}; keep_all keeps every checkpoint, "
                "so give either keep_all or keep_best/keep_last"
            )
        if not self.keep_all and not counts:
            raise ValueError(
                "expected keep_best, keep_last (or both), or keep_all: true; an empty "
                "retention says nothing about what to keep"
            )
        return self

    @property
    def removes(self) -> bool:
        """Whether this rule may remove checkpoints (it does unless ``keep_all``)."""
        return not self.keep_all


class OutputSpec(_Strict):
    """What a job keeps: its trained model, besides ``model.keras``, and its checkpoints.

    Every succeeded job saves the model ``fit()`` finished with (after
    EarlyStopping's ``restore_best_weights``) with ``model.save()`` as ``model.keras``
    in its folder, before the test set is evaluated on it.

    Attributes:
        export: Also write a TensorFlow SavedModel with ``model.export()`` (its
            default ``format="tf_saved_model"``) to the job's ``export/`` folder, for
            TensorFlow Serving or ``tf.saved_model.load()``. Defaults to False.
        retention: Which checkpoint files to keep once the job ends
            (``RetentionSpec``). When left out, the server's default applies
            (``FITQ_KEEP_BEST_CHECKPOINTS`` and ``FITQ_KEEP_LAST_CHECKPOINTS``), and
            the stored spec records it; with neither set, every checkpoint is kept.
    """

    export: StrictBool = False
    retention: RetentionSpec | None = None


class JobSpec(_Strict):
    """A training job: a model, its data and the arguments of ``model.fit()``.

    Attributes:
        name: A label for people. Optional.
        queue: The Celery queue; workers subscribe with ``--queues``. Defaults to
            ``default``.
        seed: Seeds Keras, so the same spec gives the same history. When omitted,
            fitq picks one and records it in the stored spec.
        max_runtime_seconds: Stop training after this long (``stop_reason:
            max_runtime``). Optional.
        max_attempts: How many attempts may end without an outcome (a worker
            killed, frozen or lost) before the job fails. Each new attempt resumes
            from the last completed epoch. Defaults to 3.
        model: The model source.
        compile: The arguments of ``model.compile()``.
        data: Training, validation and test data.
        fit: The arguments of ``model.fit()``.
        callbacks: Keras callbacks, declared as data.
        resources: The devices the job trains on.
        output: What the job keeps of its trained model.
    """

    name: str | None = Field(default=None, max_length=200)
    queue: str = Field(default=DEFAULT_QUEUE, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    max_runtime_seconds: PositiveInt | None = None
    max_attempts: Annotated[int, Strict(), Field(ge=1, le=20)] = 3
    model: ModelSpec
    compile: CompileSpec
    data: DataSpec
    fit: FitSpec = Field(default_factory=FitSpec)
    callbacks: list[CallbackSpec] = Field(default_factory=list, max_length=16)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A spec that leaves `resources`, `output` or `output.retention` at their
        # defaults is stored as specs were before they existed: its hash (for
        # Idempotency-Key) stays the same, and workers of the previous release still
        # read it while an upgrade rolls out.
        data: dict[str, Any] = handler(self)
        if self.resources == ResourcesSpec():
            data.pop("resources", None)
        if self.output == OutputSpec():
            data.pop("output", None)
        elif self.output.retention is None and isinstance(data.get("output"), dict):
            data["output"] = {k: v for k, v in data["output"].items() if k != "retention"}
        return data

    @property
    def has_validation(self) -> bool:
        """Whether fit() validates: with validation data or with a validation split."""
        return self.data.validation is not None or self.fit.validation_split > 0

    @field_validator("callbacks")
    @classmethod
    def _callbacks_write_apart(cls, callbacks: list[CallbackSpec]) -> list[CallbackSpec]:
        problems: list[Problem] = []
        writers: set[str] = set()
        for i, cb in enumerate(callbacks):
            if isinstance(cb, ModelCheckpointSpec):
                problems += [
                    Problem((i, "filepath"), m, cb.filepath) for m in cb.filepath_problems()
                ]
            if isinstance(cb, CSVLoggerSpec):
                problems += [
                    Problem((i, "filename"), m, cb.filename) for m in cb.filename_problems()
                ]
            if isinstance(cb, (TensorBoardSpec, CSVLoggerSpec)):
                if cb.type in writers:
                    msg = f"{cb.type} appears more than once; its files would collide"
                    problems.append(Problem((i,), msg, cb.model_dump()))
                writers.add(cb.type)
        _refuse(problems)
        return callbacks

    @model_validator(mode="after")
    def _sections_agree(self) -> JobSpec:
        fit = self.fit
        problems: list[Problem] = []
        if self.data.validation is not None and fit.validation_split:
            problems.append(
                Problem(
                    ("fit", "validation_split"),
                    "give validation data or validation_split, not both (Keras uses "
                    "validation data and ignores the split)",
                    fit.validation_split,
                )
            )
        batch, gpus = fit.batch_size or KERAS_BATCH_SIZE, self.resources.gpus
        if gpus > 1 and batch < gpus:
            problems.append(
                Problem(
                    ("fit", "batch_size"),
                    f"received batch_size={batch} for resources.gpus={gpus}; the batch is "
                    f"global, split across the {gpus} replicas, so expected at least {gpus}",
                    batch,
                )
            )
        problems += self._val_placeholders_filled()
        _refuse(problems)
        return self

    def _val_placeholders_filled(self) -> list[Problem]:
        """``val_*`` placeholders need a validation every epoch, save_best_only or not:
        Keras fills in the name before it decides whether to save, and fails with a
        KeyError on an epoch without validation."""
        if self.fit.validation_freq == 1:
            return []
        return [
            Problem(
                ("callbacks", i, "filepath"),
                "val_* placeholders are only filled on epochs that validate, and Keras "
                "fills in the name on every epoch (with save_best_only too): it fails on "
                "the first epoch without validation; with validation_freq other than 1, "
                "drop them",
                cb.filepath,
            )
            for i, cb in enumerate(self.callbacks)
            if isinstance(cb, ModelCheckpointSpec)
            and any(n.startswith("val_") for n in placeholders(cb.filepath))
        ]

    @field_validator("queue")
    @classmethod
    def _not_a_routed_queue(cls, queue: str) -> str:
        if re.search(re.escape(ROUTED_SUFFIX) + r"\d+$", queue):
            raise ValueError(
                f"received queue={queue!r}; names ending in '{ROUTED_SUFFIX}<number>' are "
                "where fitq routes jobs that need several devices; set resources.gpus instead"
            )
        return queue

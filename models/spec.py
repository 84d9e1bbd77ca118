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


# fit()'s batch_size when the spec leaves it null, as Keras.
KERAS_BATCH_SIZE = 32
CHECKPOINT_SUFFIXES = (".keras",)
WEIGHTS_SUFFIXES = (".weights.h5",)
CSV_NOT_SUFFIXES = (".keras", ".h5")

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


class ModelSpec(_Strict):
    """Where the model comes from: exactly one of ``builtin`` or ``keras_config``.

    Attributes:
        builtin: A registered architecture (``mlp``, ``cnn``), sized to the data.
        params: The architecture's parameters (see ``docs/spec.md``).
        keras_config: What ``model.to_json()`` / ``model.get_config()`` gives, for a
            Sequential or Functional model (one input, one output) of the Keras
            layers on fitq's allowlist (no Lambda, no custom objects); every name in
            it (activations, initializers, regularizers, constraints, dtypes) must be
            one Keras knows.

    Before the job is queued, fitq works out the model's weights and the
    activations a training step holds, from the training data's shape, and refuses
    a model over ``FITQ_MAX_PARAMS`` or ``FITQ_MAX_ACTIVATION_BYTES``.
    """

    builtin: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    keras_config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.builtin is None) == (self.keras_config is None):
            raise ValueError(
                "give exactly one of 'builtin' (e.g. 'mlp') or 'keras_config' "
                f"(received builtin={self.builtin!r}, "
                f"keras_config={'set' if self.keras_config is not None else None})"
            )
        if self.keras_config is not None and self.params:
            raise ValueError("'params' goes with 'builtin', not with 'keras_config'")
        return self


class ObjectSpec(_Strict):
    """A Keras object by class name and config, as ``keras.*.serialize`` writes it."""

    class_name: str = Field(max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class CompileSpec(_Strict):
    """The arguments of ``model.compile()``.

    Attributes:
        optimizer: A name (``adam``) or ``{class_name, config}``. Defaults to
            ``rmsprop``, as Keras.
        loss: A loss name or ``{class_name, config}``.
        metrics: Metric names or ``{class_name, config}``. Defaults to none.
    """

    optimizer: str | ObjectSpec = "rmsprop"
    loss: str | ObjectSpec
    metrics: list[str | ObjectSpec] = Field(default_factory=list, max_length=16)


class DataRef(_Strict):
    """One data set: a stored dataset, or small inline arrays.

    Attributes:
        dataset: ``builtin:digits`` (or ``iris``, ``wine``, ``breast_cancer``).
        split: Which part of a built-in dataset: ``train`` (70%), ``validation``
            (15%), ``test`` (15%) of a fixed permutation, or ``all``. Defaults to
            ``all``.
        take: Use only the first ``take`` samples of it. Defaults to all of them.
        x: Inline inputs, a (nested) list of numbers, first axis the samples.
        y: Inline labels: class indices, or numbers for regression.
    """

    dataset: str | None = Field(default=None, max_length=128)
    split: Literal["train", "validation", "test", "all"] = "all"
    take: PositiveInt | None = None
    x: list[Any] | None = None
    y: list[Any] | None = None

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
    Keras' ``"auto"``; it changes only what the log shows. ``workers`` and
    ``use_multiprocessing`` set data-loading parallelism for file-backed datasets and
    are ignored for in-memory arrays, as Keras ignores them there.
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
    verbose: Literal[0, 1] = 0
    mode: Mode = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: NonNegInt = 0


class ModelCheckpointSpec(_Strict):
    """``keras.callbacks.ModelCheckpoint``.

    ``filepath`` is a file name inside the job's ``checkpoints/`` folder, with
    ``{epoch}`` and metric placeholders (``epoch{epoch:02d}-{val_loss:.3f}.keras``);
    it ends in ``.keras``, or ``.weights.h5`` with ``save_weights_only``.
    ``save_freq`` is ``"epoch"`` or a number of batches.
    """

    type: Literal["ModelCheckpoint"]
    filepath: str = Field(min_length=1, max_length=200)
    monitor: str = "val_loss"
    verbose: Literal[0, 1] = 0
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
    verbose: Literal[0, 1] = 0
    mode: Mode = "auto"
    min_delta: float = 1e-4
    cooldown: NonNegInt = 0
    min_lr: float = Field(default=0.0, ge=0.0)


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

    @model_serializer(mode="wrap")
    def _omit_default_resources(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A one-device spec is stored as specs were before `resources` existed: its
        # hash (for Idempotency-Key) stays the same, and workers of the previous
        # release still read it while an upgrade rolls out.
        data: dict[str, Any] = handler(self)
        if self.resources == ResourcesSpec():
            data.pop("resources", None)
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
        """``val_*`` placeholders need a validation every epoch, or save_best_only."""
        if self.fit.validation_freq == 1:
            return []
        return [
            Problem(
                ("callbacks", i, "filepath"),
                "val_* placeholders are only filled on epochs that validate; with "
                "validation_freq other than 1, set save_best_only or drop them",
                cb.filepath,
            )
            for i, cb in enumerate(self.callbacks)
            if isinstance(cb, ModelCheckpointSpec)
            and not cb.save_best_only
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

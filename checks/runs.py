"""Checks of an evaluate or predict run against the job whose model it uses, before it
is queued: the data can be read, its samples have the shape the model was trained on,
and (for evaluate) its labels are what the model's loss reads. No Keras is needed: the
model's input is known from the parent job's own spec and data."""

from __future__ import annotations

from checks import catalog
from checks.compile_args import loss_name
from checks.data_info import DataInfo, DatasetLookup, data_info, inputs_info, read_data
from checks.problems import Loc, Problems
from core.settings import Settings
from models.runs import EvaluateRequest, InputRef, PredictRequest
from models.spec import DataRef, JobSpec


def check_run(
    parent: JobSpec,
    request: EvaluateRequest | PredictRequest,
    settings: Settings,
    lookup: DatasetLookup,
) -> None:
    """Raises ``SpecError`` (paths inside the request body) unless the run can use the
    model that ``parent`` trained."""
    problems = Problems()
    info = _run_data(request.data, settings, problems, lookup)
    problems.raise_any()
    assert info is not None  # data that cannot be read is a problem, raised above
    trained = read_data(parent, settings, Problems(), lookup)
    train = trained[0]
    loc = _samples_loc(request.data)
    if train is not None and info.feature_shape != train.feature_shape:
        problems.add(
            loc,
            f"samples have shape {list(info.feature_shape)}, expected the shape the model "
            f"was trained on: {list(train.feature_shape)}",
        )
    elif train is not None and isinstance(request, EvaluateRequest):
        _check_labels(parent, info, trained, _labels_loc(request.data), problems)
    problems.raise_any()


def _run_data(
    ref: DataRef | InputRef, settings: Settings, problems: Problems, lookup: DatasetLookup
) -> DataInfo | None:
    if isinstance(ref, DataRef):
        return data_info(ref, ("data",), settings, problems, lookup)
    as_data = ref.data_ref()
    if as_data is not None:
        return data_info(as_data, ("data",), settings, problems, lookup)
    assert ref.x is not None
    info = inputs_info(ref.x, ("data", "x"), settings, problems)
    if info is not None and ref.take is not None:
        if ref.take > info.n_samples:
            problems.add(
                ("data", "take"),
                f"received take={ref.take}, but the data has only {info.n_samples} samples",
            )
            return None
        return DataInfo(ref.take, info.feature_shape, None, None)
    return info


def _samples_loc(ref: DataRef | InputRef) -> Loc:
    return ("data", "dataset") if ref.dataset is not None else ("data", "x")


def _labels_loc(ref: DataRef) -> Loc:
    return ("data", "dataset") if ref.dataset is not None else ("data", "y")


def _check_labels(
    parent: JobSpec,
    info: DataInfo,
    trained: tuple[DataInfo | None, DataInfo | None, DataInfo | None],
    loc: Loc,
    problems: Problems,
) -> None:
    """The labels are what the loss reads, for the outputs the model has."""
    loss = loss_name(parent)
    if loss in catalog.SPARSE_LOSSES:
        # The output layer was sized to the largest label of any of the parent's splits.
        classes = max((t.n_classes for t in trained if t is not None and t.n_classes), default=0)
        if info.n_classes is None:
            problems.add(
                loc,
                f"the model's loss {loss} reads the labels as class indices, but these are "
                "not: expected whole numbers from 0, one per sample",
            )
        elif classes and info.n_classes > classes:
            problems.add(
                loc,
                f"the labels go up to {info.n_classes - 1}, but the model has {classes} "
                f"classes; expected labels from 0 to {classes - 1}",
            )
        return
    train = trained[0]
    if train is not None and info.target_dim != train.target_dim:
        problems.add(
            loc,
            f"each sample has {info.target_dim} target value(s), expected "
            f"{train.target_dim}, as the model was trained on",
        )

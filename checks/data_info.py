"""What fitq knows of a spec's data sets before loading them, and the checks that needs.

Built-in datasets are described by ``checks.datasets``, uploaded ones by the
metadata stored with them, inline arrays by reading them (bounded by
``FITQ_MAX_INLINE_VALUES``). No Keras is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from checks.datasets import BUILTIN_DATASETS, BUILTIN_PREFIX, split_indices
from checks.labels import label_stats
from checks.problems import Loc, Problems
from core.settings import Settings
from models.spec import DataRef, JobSpec, RandomCropSpec

MAX_INLINE_DEPTH = 5

# Looks up an uploaded dataset's per-split metadata by id; None when there is none.
DatasetLookup = Callable[[str], dict[str, Any] | None]


Shape = tuple[int, ...]
# Which outputs sample weights weigh: None (no weights), "all" (one array for every
# output), or the names of the outputs each weighed by its own array.
Weighed = Literal["all"] | frozenset[str] | None


@dataclass(frozen=True)
class TargetInfo:
    """One output's labels."""

    shape: Shape  # one sample's target, () for one number a sample
    n_classes: int | None  # as DataInfo.n_classes
    class_counts: tuple[int, ...] | None


@dataclass(frozen=True)
class DataInfo:
    """What fitq knows of a data set before loading it.

    With ``x`` given by input name (``inputs``) and ``y`` by output name (``outputs``),
    ``feature_shape`` is the first input's, and the label fields describe the one
    output there is (they are None with several).
    """

    n_samples: int
    feature_shape: Shape
    # Labels as class indices, when they are 1-D integers 0..n-1 (whether they are
    # classes is the loss's to say: catalog.labels_are_classes); None otherwise.
    n_classes: int | None
    class_counts: tuple[int, ...] | None
    target_dim: int = 1  # numbers in one sample's target
    target_shape: Shape = ()
    inputs: dict[str, Shape] | None = None
    outputs: dict[str, TargetInfo] | None = None
    sample_weight: Weighed = None

    def targets(self, names: list[str]) -> dict[str, TargetInfo]:
        """Each output's labels, by the model's output ``names`` ([]: one unnamed output)."""
        if self.outputs is not None:
            return self.outputs
        target = TargetInfo(self.target_shape, self.n_classes, self.class_counts)
        return {names[0] if names else "": target}


def make_info(
    n_samples: int,
    x: Shape | dict[str, Shape],
    y: TargetInfo | dict[str, TargetInfo],
    weighed: Weighed = None,
) -> DataInfo:
    """A DataInfo of inputs (one shape, or shapes by input name) and labels (one
    output's, or by output name)."""
    inputs = x if isinstance(x, dict) else None
    outputs = y if isinstance(y, dict) else None
    feature = next(iter(x.values())) if isinstance(x, dict) else x
    one = y if isinstance(y, TargetInfo) else next(iter(y.values())) if len(y) == 1 else None
    return DataInfo(
        n_samples,
        feature,
        one.n_classes if one else None,
        one.class_counts if one else None,
        math.prod(one.shape) if one else 1,
        one.shape if one else (),
        inputs,
        outputs,
        weighed,
    )


@dataclass(frozen=True)
class SpecData:
    """The data sets of a spec that passed its checks."""

    train: DataInfo
    validation: DataInfo | None
    test: DataInfo | None


def uploaded_split(split: str) -> str:
    """The part of an uploaded dataset a ``split`` names (``all`` is its training arrays)."""
    return "train" if split == "all" else split


def data_info(
    ref: DataRef, loc: Loc, settings: Settings, problems: Problems, lookup: DatasetLookup
) -> DataInfo | None:
    """What ``ref`` holds, or None after adding why it cannot be used to ``problems``."""
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
        outputs = info.outputs and {
            name: replace(target, class_counts=None) for name, target in info.outputs.items()
        }
        return replace(info, n_samples=ref.take, class_counts=None, outputs=outputs)
    return info


def _dataset_info(
    ref: DataRef, loc: Loc, problems: Problems, lookup: DatasetLookup
) -> DataInfo | None:
    name = ref.dataset or ""
    uploaded = None if name.startswith(BUILTIN_PREFIX) else lookup(name)
    if uploaded is not None:
        return _uploaded_info(uploaded, ref, loc, problems)
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


def _uploaded_info(
    uploaded: dict[str, Any], ref: DataRef, loc: Loc, problems: Problems
) -> DataInfo | None:
    part = uploaded.get(uploaded_split(ref.split))
    if part is None:
        problems.add(
            loc + ("split",),
            f"dataset {ref.dataset} has no {ref.split} arrays; it has {sorted(uploaded)}",
        )
        return None
    return make_info(
        int(part["n_samples"]),
        _uploaded_inputs(part),
        _uploaded_targets(part),
        _weighed(part.get("sample_weight")),
    )


def _uploaded_inputs(part: dict[str, Any]) -> Shape | dict[str, Shape]:
    inputs = part.get("inputs")
    if inputs is not None:
        return {name: tuple(i["shape"]) or (1,) for name, i in inputs.items()}
    return tuple(part["x_shape"]) or (1,)


def _uploaded_targets(part: dict[str, Any]) -> TargetInfo | dict[str, TargetInfo]:
    def target(y: dict[str, Any], shape_key: str) -> TargetInfo:
        counts = y.get("class_counts")
        shape = tuple(y.get(shape_key) or ())
        return TargetInfo(shape, y.get("n_classes"), tuple(counts) if counts else None)

    outputs = part.get("outputs")
    if outputs is not None:
        return {name: target(y, "shape") for name, y in outputs.items()}
    return target(part, "y_shape")


def _weighed(stored: Any) -> Weighed:
    if stored is None:
        return None
    return "all" if stored == "all" else frozenset(stored)


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


def _as_array(values: list[Any], loc: Loc, budget: int, problems: Problems) -> np.ndarray | None:
    # Counted before numpy reads them: the cap is what bounds the work.
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


Inline = np.ndarray | dict[str, np.ndarray]  # one array, or arrays by input/output name


def _inline_arrays(values: Any, loc: Loc, budget: int, problems: Problems) -> Inline | None:
    """Inline values as one array, or arrays by name; the arrays share ``budget``."""
    if isinstance(values, list):
        return _as_array(values, loc, budget, problems)
    arrays: dict[str, np.ndarray] = {}
    for name, item in values.items():
        array = _as_array(item, loc + (name,), budget, problems)
        if array is None:
            return None
        budget -= array.size
        arrays[name] = array
    return arrays


def _each(arrays: Inline, loc: Loc) -> list[tuple[Loc, np.ndarray]]:
    if isinstance(arrays, dict):
        return [(loc + (name,), a) for name, a in arrays.items()]
    return [(loc, arrays)]


def _counts_agree(
    x: Inline, y: Inline, weights: Inline | None, loc: Loc, problems: Problems
) -> bool:
    """Every array of one data set holds the same samples: one label and weight a sample."""
    (first_loc, first), *inputs = _each(x, loc + ("x",))
    n, ok = first.shape[0], True
    what = [(inputs, "samples", "the same samples in every input")]
    what.append((_each(y, loc + ("y",)), "labels", "one label per sample"))
    if weights is not None:
        what.append((_each(weights, loc + ("sample_weight",)), "weights", "one weight a sample"))
    for arrays, noun, expected in what:
        for at, array in arrays:
            if array.shape[0] != n:
                ok = False
                named = f"x.{first_loc[-1]}" if isinstance(x, dict) else "x"
                problems.add(
                    at,
                    f"received {array.shape[0]} {noun} for {n} samples in {named}, "
                    f"expected {expected}",
                )
    return ok


def _weights_fit(y: Inline, weights: Inline | None, loc: Loc, problems: Problems) -> bool:
    """Weights are one number a sample, and by output name only as y is."""
    if weights is None:
        return True
    bad = [at for at, w in _each(weights, loc) if w.ndim != 1]
    for at in bad:
        problems.add(at, "expected one weight per sample (a flat list of numbers)")
    if isinstance(weights, dict) and (not isinstance(y, dict) or set(weights) != set(y)):
        expected = f"one per output of y: {sorted(y)}" if isinstance(y, dict) else "a flat list"
        problems.add(loc, f"received sample weights for {sorted(weights)}, expected {expected}")
        return False
    return not bad


def _target(y: np.ndarray, max_classes: int) -> TargetInfo:
    # Labels are class ids only when they are small non-negative integers; their
    # description never grows with a label's value (see checks.labels).
    labels = label_stats(y, max_classes)
    return TargetInfo(tuple(int(d) for d in y.shape[1:]), labels.n_classes, labels.class_counts)


def _inline_info(ref: DataRef, loc: Loc, settings: Settings, problems: Problems) -> DataInfo | None:
    assert ref.x is not None and ref.y is not None
    budget = settings.max_inline_values
    x = _inline_arrays(ref.x, loc + ("x",), budget, problems)
    y = _inline_arrays(ref.y, loc + ("y",), budget, problems)
    weights = None
    if ref.sample_weight is not None:
        weights = _inline_arrays(ref.sample_weight, loc + ("sample_weight",), budget, problems)
        if weights is None:
            return None
    if x is None or y is None or not _counts_agree(x, y, weights, loc, problems):
        return None
    if not _weights_fit(y, weights, loc + ("sample_weight",), problems):
        return None
    n = next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]

    def shape(a: np.ndarray) -> Shape:
        return tuple(int(d) for d in a.shape[1:]) or (1,)

    weighed: Weighed = None
    if weights is not None:
        weighed = frozenset(weights) if isinstance(weights, dict) else "all"
    max_classes = settings.max_label_classes
    return make_info(
        int(n),
        {k: shape(a) for k, a in x.items()} if isinstance(x, dict) else shape(x),
        {k: _target(a, max_classes) for k, a in y.items()}
        if isinstance(y, dict)
        else _target(y, max_classes),
        weighed,
    )


def inputs_info(
    values: list[Any], loc: Loc, settings: Settings, problems: Problems
) -> DataInfo | None:
    """What inline inputs without labels hold (for predict), or None after adding why not."""
    x = _as_array(values, loc, settings.max_inline_values, problems)
    if x is None:
        return None
    return DataInfo(len(x), tuple(int(d) for d in x.shape[1:]) or (1,), None, None)


def augmented(spec: JobSpec, train: DataInfo | None, problems: Problems) -> DataInfo | None:
    """The training data as the model sees it after augmentation (RandomCrop resizes)."""
    if train is None or not spec.data.augmentation:
        return train
    if train.inputs is not None or train.sample_weight is not None:
        problems.add(
            ("data", "augmentation"),
            "augmentation applies to one input array without sample weights; the "
            "training data gives "
            + ("x by input name" if train.inputs is not None else "sample weights")
            + ": expected no augmentation",
        )
        return None
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


def read_data(
    spec: JobSpec, settings: Settings, problems: Problems, lookup: DatasetLookup
) -> tuple[DataInfo | None, DataInfo | None, DataInfo | None]:
    """The training, validation and test data of ``spec``; their samples' shapes agree."""
    data = spec.data
    train = data_info(data.train, ("data", "train"), settings, problems, lookup)
    others = []
    for name, ref in (("validation", data.validation), ("test", data.test)):
        loc: Loc = ("data", name)
        info = data_info(ref, loc, settings, problems, lookup) if ref else None
        if info and train and info.inputs is None and train.inputs is None:
            if info.feature_shape != train.feature_shape:
                problems.add(
                    loc,
                    f"samples have shape {list(info.feature_shape)}, expected the "
                    f"training data's shape {list(train.feature_shape)}",
                )
        elif info and train and _shapes(info) != _shapes(train):
            problems.add(
                loc,
                f"the inputs have sample shapes {_shapes(info)}, expected the training "
                f"data's {_shapes(train)}",
            )
        others.append(info)
    return train, others[0], others[1]


def _shapes(info: DataInfo) -> dict[str, list[int]]:
    inputs = info.inputs or {"x": info.feature_shape}
    return {name: list(shape) for name, shape in inputs.items()}


# The model's input and output names, in its order; None for a built-in model (one
# input and one output, unnamed).
ModelIO = tuple[list[str], list[str]] | None


@dataclass(frozen=True)
class ModelOutputs:
    """A model's outputs: their names in the model's order ([] for a built-in model's
    one output), and each one's shape per sample when the model could be sized."""

    names: list[str]
    shapes: dict[str, Shape] | None = None


def check_names(ref: DataRef, info: DataInfo, loc: Loc, io: ModelIO, problems: Problems) -> bool:
    """The data has an array for every input and output of the model, by its name."""
    ok = True
    for key, given, names, what in (
        ("x", info.inputs, io[0] if io else [], "input"),
        ("y", info.outputs, io[1] if io else [], "output"),
    ):
        at = loc + ((key,) if ref.dataset is None else ("dataset",))
        if given is None and len(names) > 1:
            ok = False
            problems.add(
                at,
                f"the model has {len(names)} {what}s {names}: give {key} as an object by "
                f"{what} name ({{{names[0]!r}: [...], ...}}), or {key}/<{what}> arrays in "
                "an uploaded .npz",
            )
        elif given is not None and set(given) != set(names):
            ok = False
            expected = (
                f"the model's {what}s {names}"
                if names
                else f"one array (a built-in model has one {what}, unnamed)"
            )
            for name in sorted(set(given) - set(names)):
                where = at + (name,) if ref.dataset is None else at
                problems.add(
                    where,
                    f"{key} names {what} {name!r}, which the model does not "
                    f"have; expected {expected}",
                )
            for name in [n for n in names if n not in given]:
                problems.add(
                    at,
                    f"no {key} array for the model's {what} {name!r}; expected "
                    f"one for each of {names}",
                )
    return ok

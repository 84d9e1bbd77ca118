"""The output shape and the weights of each Keras layer fitq allows, from its config.

Worked out without Keras, before a job is queued: each layer's rule reads the
arguments that decide its shape and its weights, refuses values Keras would refuse
(and those that would add weights fitq does not count, such as LoRA), and gives what
``compute_output_shape()`` and ``count_params()`` give once Keras builds the layer.
Shapes are per sample, without the batch axis; Keras' axis numbers count the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from checks.layer_args import (
    MAX_INT,
    MISSING,
    Args,
    LayerSize,
    Loc,
    Shape,
    SizeError,
    is_int,
    show,
)

# A layer is called on one tensor (a Shape) or on a list of tensors (merge layers).
Inputs = Shape | list[Shape]

# An unrolled recurrent layer is traced once per timestep; beyond this, refused.
MAX_UNROLL = 1024
# No layer output holds more numbers a sample (far past any memory limit; it keeps
# the sums fitq makes, and its messages, small).
MAX_NUMBERS = 2**48
RECURRENT = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}  # gates: weight blocks per unit


Rule = Callable[[Args, Inputs], LayerSize]
RULES: dict[str, Rule] = {}


def single(*classes: str) -> Callable[[Callable[[Args, Shape], LayerSize]], None]:
    """Registers the rule of layers called on one tensor."""

    def register(fn: Callable[[Args, Shape], LayerSize]) -> None:
        def rule(args: Args, inputs: Inputs) -> LayerSize:
            if isinstance(inputs, list):
                args.fail(None, f"received a list of {len(inputs)} inputs, expected one tensor")
            return fn(args, inputs)

        for cls in classes:
            RULES[cls] = rule

    return register


def merge(*classes: str) -> Callable[[Callable[[Args, list[Shape]], LayerSize]], None]:
    """Registers the rule of layers called on a list of tensors."""

    def register(fn: Callable[[Args, list[Shape]], LayerSize]) -> None:
        def rule(args: Args, inputs: Inputs) -> LayerSize:
            if not isinstance(inputs, list) or not inputs:
                args.fail(None, "expected to be called on a list of tensors")
            return fn(args, inputs)

        for cls in classes:
            RULES[cls] = rule

    return register


def size_layer(layer: Any, inputs: Inputs, loc: Loc) -> LayerSize:
    """The size of a serialized layer (``{module, class_name, config, ...}``) on ``inputs``."""
    if not isinstance(layer, dict):
        raise SizeError(loc, f"received {show(layer)}; expected a layer object")
    cls = layer.get("class_name")
    rule = (
        RULES.get(cls) if layer.get("module") == "keras.layers" and isinstance(cls, str) else None
    )
    if rule is None or cls is None:
        raise SizeError(
            loc + ("class_name",),
            f"received {show(cls)} here; expected one of the layers fitq can size: "
            f"{sorted(RULES)}, or a Sequential or Functional model",
        )
    check_build_config(layer.get("build_config"), inputs, loc + ("build_config",))
    size = rule(Args(cls, layer.get("config", {}), loc + ("config",)), inputs)
    if math.prod(size.output) > MAX_NUMBERS:
        raise SizeError(
            loc, f"{cls}: its output would hold more than {MAX_NUMBERS:,} numbers a sample"
        )
    return size


def _with_batch(shape: Shape) -> list[int | None]:
    return [None, *shape]


def check_build_config(build: Any, inputs: Inputs, loc: Loc) -> None:
    """Refuses a ``build_config`` whose shape is not the one the layer receives.

    Keras builds a layer (or a model) from its build_config as it deserializes it,
    before any data flows: another shape would build weights fitq did not count.
    """
    if build is None:
        return
    if not isinstance(build, dict) or not set(build) <= {"input_shape"}:
        raise SizeError(
            loc,
            f"received {show(build)}; expected {{input_shape: ...}} as model.to_json() writes it",
        )
    declared = build.get("input_shape")
    if declared is None:
        return
    expected = [_with_batch(s) for s in inputs] if isinstance(inputs, list) else _with_batch(inputs)
    if not _shape_matches(declared, expected):
        raise SizeError(
            loc + ("input_shape",),
            f"received {show(declared)}, but the layer receives {show(expected)}; expected that "
            "shape (null for any dimension)",
        )


def _shape_matches(declared: Any, expected: Any) -> bool:
    if isinstance(expected, list) and expected and isinstance(expected[0], list):
        return (
            isinstance(declared, list)
            and len(declared) == len(expected)
            and all(_shape_matches(d, e) for d, e in zip(declared, expected, strict=True))
        )
    if not isinstance(declared, list) or len(declared) != len(expected):
        return False
    batch, *dims = declared
    if batch is not None and not (is_int(batch) and batch > 0):
        return False
    return all(d is None or (is_int(d) and d == e) for d, e in zip(dims, expected[1:], strict=True))


def _no_extra_weights(args: Args) -> None:
    for key in ("lora_rank", "quantization_config"):
        args.null(key, "fitq does not count LoRA or quantized weights")


# --- core layers -------------------------------------------------------------------


@single("Dense")
def _dense(a: Args, s: Shape) -> LayerSize:
    _no_extra_weights(a)
    units = a.integer("units")
    bias = a.flag("use_bias", True)
    return LayerSize((*s[:-1], units), s[-1] * units + (units if bias else 0))


@single("Embedding")
def _embedding(a: Args, s: Shape) -> LayerSize:
    _no_extra_weights(a)
    a.null("weights", "initial weights do not travel in a job spec")
    a.flag("mask_zero", False)
    vocabulary, width = a.integer("input_dim"), a.integer("output_dim")
    return LayerSize((*s, width), vocabulary * width)


@single(
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "ActivityRegularization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
)
# A rule takes (args, shape) like every rule `single` registers, though it reads no args.
def _same_shape(_a: Args, s: Shape) -> LayerSize:
    return LayerSize(s, 0)


@single("Softmax", "UnitNormalization")
def _same_shape_on_axes(a: Args, s: Shape) -> LayerSize:
    a.axes("axis", s, -1)
    return LayerSize(s, 0)


@single("Rescaling")
def _rescaling(a: Args, s: Shape) -> LayerSize:
    a.numbers("scale", MISSING)
    a.numbers("offset", 0.0)
    return LayerSize(s, 0)


@single("SpatialDropout1D", "SpatialDropout2D")
def _spatial_dropout(a: Args, s: Shape) -> LayerSize:
    rank = 2 if a.cls == "SpatialDropout1D" else 3
    if len(s) != rank:
        a.fail(None, f"expected samples with {rank} axes, received shape {show(list(s))}")
    return LayerSize(s, 0)


@single("PReLU")
def _prelu(a: Args, s: Shape) -> LayerSize:
    shared = a.get("shared_axes", None)
    axes = [] if shared is None else a.axes("shared_axes", s, None)
    return LayerSize(s, math.prod(1 if i in axes else d for i, d in enumerate(s)))


# --- reshaping ---------------------------------------------------------------------


@single("Flatten")
def _flatten(a: Args, s: Shape) -> LayerSize:
    a.data_format()
    return LayerSize((math.prod(s),), 0)


@single("Reshape")
def _reshape(a: Args, s: Shape) -> LayerSize:
    target = a.get("target_shape")
    if (
        not isinstance(target, list)
        or not target
        or not all(is_int(d) and (d >= 1 or d == -1) for d in target)
        or target.count(-1) > 1
    ):
        a.fail("target_shape", f"received {show(target)}, expected a list of sizes (one may be -1)")
    size, known = math.prod(s), math.prod(d for d in target if d != -1)
    if -1 in target and size % known == 0:
        target = [size // known if d == -1 else d for d in target]
    if math.prod(target) != size:
        a.fail(
            "target_shape",
            f"received target_shape={show(target)} for samples of shape {show(list(s))} "
            f"({size} numbers); expected a shape of {size} numbers",
        )
    return LayerSize(tuple(target), 0)


@single("Permute")
def _permute(a: Args, s: Shape) -> LayerSize:
    dims = a.get("dims")
    if (
        not isinstance(dims, list)
        or not all(is_int(d) for d in dims)
        or sorted(dims) != list(range(1, len(s) + 1))
    ):
        a.fail("dims", f"received {show(dims)}, expected a permutation of 1..{len(s)}")
    return LayerSize(tuple(s[d - 1] for d in dims), 0)


@single("RepeatVector")
def _repeat_vector(a: Args, s: Shape) -> LayerSize:
    if len(s) != 1:
        a.fail(None, f"expected samples with one axis, received shape {show(list(s))}")
    return LayerSize((a.integer("n"), s[0]), 0)


def _spatial(a: Args, s: Shape, rank: int) -> tuple[Shape, int, str]:
    """(spatial sizes, channels, data format) of image-like samples."""
    fmt = a.data_format()
    if len(s) != rank + 1:
        a.fail(None, f"expected samples with {rank + 1} axes, received shape {show(list(s))}")
    return (s[:-1], s[-1], fmt) if fmt == "channels_last" else (s[1:], s[0], fmt)


def _join(spatial: Sequence[int], channels: int, fmt: str) -> Shape:
    return (*spatial, channels) if fmt == "channels_last" else (channels, *spatial)


def _pairs(a: Args, key: str, default: Any) -> list[tuple[int, int]]:
    """ZeroPadding2D's and Cropping2D's argument: n, (h, w) or ((top, bottom), (left, right))."""
    value = a.get(key, default)
    if is_int(value):
        value = [value, value]
    if isinstance(value, list) and len(value) == 2 and all(is_int(v) for v in value):
        value = [[value[0], value[0]], [value[1], value[1]]]
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(p, list) and len(p) == 2 for p in value)
        and all(is_int(v) and 0 <= v <= MAX_INT for p in value for v in p)
    )
    if not ok:
        a.fail(
            key,
            f"received {key}={show(value)}, expected n, [h, w] or "
            "[[top, bottom], [left, right]] of integers >= 0",
        )
    return [(p[0], p[1]) for p in value]


@single("ZeroPadding2D")
def _zero_padding(a: Args, s: Shape) -> LayerSize:
    spatial, channels, fmt = _spatial(a, s, 2)
    pads = _pairs(a, "padding", 1)
    return LayerSize(
        _join([n + lo + hi for n, (lo, hi) in zip(spatial, pads, strict=True)], channels, fmt), 0
    )


@single("Cropping2D")
def _cropping(a: Args, s: Shape) -> LayerSize:
    spatial, channels, fmt = _spatial(a, s, 2)
    crops = _pairs(a, "cropping", 0)
    out = [n - lo - hi for n, (lo, hi) in zip(spatial, crops, strict=True)]
    if min(out) < 1:
        a.fail("cropping", f"crops samples of shape {show(list(s))} to nothing")
    return LayerSize(_join(out, channels, fmt), 0)


@single("UpSampling2D")
def _up_sampling(a: Args, s: Shape) -> LayerSize:
    spatial, channels, fmt = _spatial(a, s, 2)
    size = a.ints("size", 2, 2)
    a.choice(
        "interpolation",
        ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area"),
        "nearest",
    )
    return LayerSize(_join([n * k for n, k in zip(spatial, size, strict=True)], channels, fmt), 0)


# --- convolution and pooling -------------------------------------------------------


def _windows(
    a: Args, spatial: Shape, window: Shape, strides: Shape, dilation: Shape, padding: str | None
) -> list[int]:
    if padding == "valid":
        out = [
            (n - d * (k - 1) - 1) // st + 1
            for n, k, st, d in zip(spatial, window, strides, dilation, strict=True)
        ]
    else:
        out = [(n - 1) // st + 1 for n, st in zip(spatial, strides, strict=True)]
    if min(out) < 1:
        a.fail(
            None,
            f"a window of {show(list(window))} with padding={padding!r} does not fit samples of "
            f"spatial size {show(list(spatial))}; use padding='same' or a smaller window",
        )
    return out


def _conv_window(a: Args, spatial: Shape, rank: int) -> tuple[Shape, list[int]]:
    kernel = a.ints("kernel_size", rank)
    strides = a.ints("strides", rank, 1)
    dilation = a.ints("dilation_rate", rank, 1)
    if max(strides) > 1 and max(dilation) > 1:
        a.fail("strides", "strides > 1 cannot be combined with dilation_rate > 1")
    paddings = ("valid", "same", "causal") if rank == 1 else ("valid", "same")
    padding = a.choice("padding", paddings, "valid")
    return kernel, _windows(a, spatial, kernel, strides, dilation, padding)


def _conv(rank: int) -> Callable[[Args, Shape], LayerSize]:
    def rule(a: Args, s: Shape) -> LayerSize:
        _no_extra_weights(a)
        spatial, channels, fmt = _spatial(a, s, rank)
        filters, groups = a.integer("filters"), a.integer("groups", 1)
        if channels % groups or filters % groups:
            a.fail(
                "groups",
                f"received groups={groups} for {channels} input channels and {filters} "
                "filters; expected a divisor of both",
            )
        kernel, out = _conv_window(a, spatial, rank)
        weights = math.prod(kernel) * (channels // groups) * filters
        return LayerSize(
            _join(out, filters, fmt), weights + (filters if a.flag("use_bias", True) else 0)
        )

    return rule


single("Conv1D")(_conv(1))
single("Conv2D")(_conv(2))
single("Conv3D")(_conv(3))


@single("SeparableConv2D", "DepthwiseConv2D")
def _depthwise(a: Args, s: Shape) -> LayerSize:
    spatial, channels, fmt = _spatial(a, s, 2)
    multiplier = a.integer("depth_multiplier", 1)
    kernel, out = _conv_window(a, spatial, 2)
    depthwise = math.prod(kernel) * channels * multiplier
    bias = a.flag("use_bias", True)
    if a.cls == "DepthwiseConv2D":
        width = channels * multiplier
        return LayerSize(_join(out, width, fmt), depthwise + (width if bias else 0))
    filters = a.integer("filters")
    pointwise = channels * multiplier * filters
    return LayerSize(_join(out, filters, fmt), depthwise + pointwise + (filters if bias else 0))


@single("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def _pooling(a: Args, s: Shape) -> LayerSize:
    rank = int(a.cls[-2])
    spatial, channels, fmt = _spatial(a, s, rank)
    pool = a.ints("pool_size", rank, 2)
    strides = pool if a.get("strides", None) is None else a.ints("strides", rank)
    padding = a.choice("padding", ("valid", "same"), "valid")
    out = _windows(a, spatial, pool, strides, (1,) * rank, padding)
    return LayerSize(_join(out, channels, fmt), 0)


@single(
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
)
def _global_pooling(a: Args, s: Shape) -> LayerSize:
    rank = int(a.cls[-2])
    _, channels, fmt = _spatial(a, s, rank)
    if a.flag("keepdims", False):
        return LayerSize(_join([1] * rank, channels, fmt), 0)
    return LayerSize((channels,), 0)


# --- normalization -----------------------------------------------------------------


@single("BatchNormalization")
def _batch_norm(a: Args, s: Shape) -> LayerSize:
    (axis,) = a.axes("axis", s, -1, allow_list=False)
    per_channel = 2 + a.flag("center", True) + a.flag("scale", True) + 3 * a.flag("renorm", False)
    return LayerSize(s, per_channel * s[axis])


@single("LayerNormalization")
def _layer_norm(a: Args, s: Shape) -> LayerSize:
    axes = a.axes("axis", s, -1)
    per_number = a.flag("center", True) + a.flag("scale", True)
    return LayerSize(s, per_number * math.prod(s[i] for i in set(axes)))


@single("Normalization")
def _normalization(a: Args, s: Shape) -> LayerSize:
    kept = [] if a.get("axis", -1) is None else a.axes("axis", s, -1)
    a.flag("invert", False)
    mean, variance = a.get("mean", None), a.get("variance", None)
    if (mean is None) != (variance is None):
        a.fail("mean", "expected both mean and variance, or neither")
    if mean is not None:
        a.numbers("mean", None)
        a.numbers("variance", None)
        return LayerSize(s, 0)
    # Without a given mean: the mean and variance to adapt, and a count.
    return LayerSize(s, 2 * math.prod(s[i] for i in set(kept)) + 1)


# --- recurrent layers and wrappers -------------------------------------------------


def _recurrent(a: Args, s: Shape) -> LayerSize:
    if len(s) != 2:
        a.fail(None, f"expected samples of shape (timesteps, features), received {show(list(s))}")
    steps, features = s
    units, bias = a.integer("units"), a.flag("use_bias", True)
    if a.flag("return_state", False):
        a.fail("return_state", "received true; fitq sizes layers with one output")
    if a.flag("unroll", False) and steps > MAX_UNROLL:
        a.fail("unroll", f"received true for {steps} timesteps; expected at most {MAX_UNROLL}")
    for key in ("go_backwards", "stateful"):
        a.flag(key, False)
    gates = RECURRENT[a.cls]
    biases = gates * units if bias else 0
    if a.cls == "GRU" and a.flag("reset_after", True) and bias:
        biases *= 2
    params = gates * units * (features + units) + biases
    out = (steps, units) if a.flag("return_sequences", False) else (units,)
    return LayerSize(out, params, steps * (gates + 2) * units)


single(*RECURRENT)(_recurrent)


def _wrapped(a: Args, key: str, s: Shape, allowed: set[str] | None) -> LayerSize:
    layer = a.get(key)
    cls = layer.get("class_name") if isinstance(layer, dict) else None
    if allowed is not None and (not isinstance(cls, str) or cls not in allowed):
        a.fail(key, f"received {show(cls)}, expected one of {sorted(allowed)}")
    return size_layer(layer, s, a.loc + (key,))


@single("Bidirectional")
def _bidirectional(a: Args, s: Shape) -> LayerSize:
    a.null("weights", "initial weights do not travel in a job spec")
    forward = _wrapped(a, "layer", s, set(RECURRENT))
    backward = forward
    if a.get("backward_layer", None) is not None:
        backward = _wrapped(a, "backward_layer", s, set(RECURRENT))
    mode = a.choice("merge_mode", ("concat", "sum", "mul", "ave"), "concat")
    fo, bo = forward.output, backward.output
    if fo != bo:
        # Keras sizes what follows as if both directions gave the forward shape.
        a.fail(
            "backward_layer",
            f"gives shape {show(list(bo))}, the forward layer {show(list(fo))}; "
            "expected the same shape",
        )
    out = (*fo[:-1], fo[-1] + bo[-1]) if mode == "concat" else fo
    held = forward.numbers + backward.numbers
    return LayerSize(out, forward.params + backward.params, held)


@single("TimeDistributed")
def _time_distributed(a: Args, s: Shape) -> LayerSize:
    if len(s) < 2:
        a.fail(None, f"expected samples with a time axis and more, received shape {show(list(s))}")
    inner = _wrapped(a, "layer", s[1:], set(RULES) - {"TimeDistributed", "Bidirectional"})
    return LayerSize((s[0], *inner.output), inner.params, s[0] * inner.held)


# --- merging -----------------------------------------------------------------------


@merge("Add", "Multiply", "Average", "Maximum", "Minimum", "Subtract")
def _elementwise(a: Args, shapes: list[Shape]) -> LayerSize:
    if a.cls == "Subtract" and len(shapes) != 2:
        a.fail(None, f"expected exactly 2 inputs, received {len(shapes)}")
    first = shapes[0]
    if any(len(s) != len(first) for s in shapes) or any(
        len({d for d in dims if d != 1}) > 1 for dims in zip(*shapes, strict=True)
    ):
        a.fail(
            None,
            f"received inputs of shapes {show([list(s) for s in shapes], 120)}; expected one shape",
        )
    return LayerSize(tuple(max(dims) for dims in zip(*shapes, strict=True)), 0)


@merge("Concatenate")
def _concatenate(a: Args, shapes: list[Shape]) -> LayerSize:
    first = shapes[0]
    if any(len(s) != len(first) for s in shapes):
        a.fail(
            None,
            f"received inputs of shapes {show([list(s) for s in shapes], 120)}; expected one rank",
        )
    (axis,) = a.axes("axis", first, -1, allow_list=False)
    rest = {s[:axis] + s[axis + 1 :] for s in shapes}
    if len(rest) > 1:
        a.fail(
            "axis",
            f"received inputs of shapes {show([list(s) for s in shapes], 120)}; expected them "
            f"to differ only along axis {axis + 1}",
        )
    size = sum(s[axis] for s in shapes)
    return LayerSize((*first[:axis], size, *first[axis + 1 :]), 0)


@merge("Dot")
def _dot(a: Args, shapes: list[Shape]) -> LayerSize:
    if len(shapes) != 2 or not all(1 <= len(s) <= 2 for s in shapes):
        a.fail(
            None,
            f"received inputs of shapes {show([list(s) for s in shapes], 120)}; expected "
            "2 inputs of 1 or 2 axes a sample",
        )
    a.flag("normalize", False)
    axes = a.get("axes")
    pair = [axes, axes] if is_int(axes) else axes
    if not (isinstance(pair, list) and len(pair) == 2 and all(is_int(x) for x in pair)):
        a.fail("axes", f"received axes={show(axes)}, expected an axis or a list of 2 axes")
    picked = []
    for axis, shape in zip(pair, shapes, strict=True):
        rank = len(shape) + 1
        if not -rank < axis < rank or axis % rank == 0:
            a.fail(
                "axes",
                f"received axes={show(axes)} for inputs of shapes "
                f"{show([list(s) for s in shapes], 120)}; expected axes from 1 (or negative, "
                "from the end); axis 0 is the batch",
            )
        picked.append(axis % rank - 1)
    (s1, i), (s2, j) = zip(shapes, picked, strict=True)
    if s1[i] != s2[j]:
        a.fail(
            "axes",
            f"the inputs have {s1[i]} and {s2[j]} numbers along the axes {show(axes)} "
            f"(shapes {show([list(s) for s in shapes], 120)}); expected the same",
        )
    out = (*s1[:i], *s1[i + 1 :], *s2[:j], *s2[j + 1 :])
    return LayerSize(out or (1,), 0)

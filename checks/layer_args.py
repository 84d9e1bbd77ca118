"""What the size rules of ``checks.layer_sizes`` share: typed reads of a layer's
config, the size of one layer call, and the error for a config fitq cannot size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

Shape = tuple[int, ...]  # per sample, without the batch axis
Loc = tuple[str | int, ...]
MISSING: Any = object()
MAX_INT = 2**31 - 1  # the largest size, count or window a layer argument may hold


class SizeError(ValueError):
    """A model config fitq cannot size; ``loc`` is the path of the offending field."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True)
class LayerSize:
    """What one call of a layer gives and holds.

    Attributes:
        output: The output shape, per sample.
        params: The layer's weights, trainable or not (``count_params()``).
        held: Numbers per sample the layer keeps for the backward pass besides its
            output: a recurrent layer's state at every timestep, a wrapped layer's
            own outputs.
    """

    output: Shape
    params: int
    held: int = 0

    @property
    def numbers(self) -> int:
        """Numbers per sample this call holds during a training step."""
        return math.prod(self.output) + self.held


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts
        return "a number too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Args:
    """Typed reads of a layer's ``config``; a bad value raises ``SizeError`` at its key."""

    def __init__(self, cls: str, config: Any, loc: Loc) -> None:
        if not isinstance(config, dict):
            raise SizeError(loc, f"received {show(config)}; expected the layer's config object")
        self.cls = cls
        self.config = config
        self.loc = loc

    def fail(self, key: str | None, msg: str) -> NoReturn:
        raise SizeError(self.loc + ((key,) if key else ()), f"{self.cls}: {msg}")

    def get(self, key: str, default: Any = MISSING) -> Any:
        value = self.config.get(key, default)
        if value is MISSING:
            self.fail(key, f"{key} is required")
        return value

    def integer(self, key: str, default: Any = MISSING, low: int = 1) -> int:
        value = self.get(key, default)
        if not is_int(value) or not low <= value <= MAX_INT:
            self.fail(
                key, f"received {key}={show(value)}, expected an integer from {low} to {MAX_INT}"
            )
        return int(value)

    def ints(self, key: str, n: int, default: Any = MISSING, low: int = 1) -> Shape:
        """An integer, or a list of ``n`` integers, each at least ``low``."""
        value = self.get(key, default)
        items = [value] * n if is_int(value) else value
        if (
            not isinstance(items, (list, tuple))
            or len(items) != n
            or not all(is_int(v) and low <= v <= MAX_INT for v in items)
        ):
            self.fail(
                key,
                f"received {key}={show(value)}, expected an integer from {low} to "
                f"{MAX_INT} or a list of {n} of them",
            )
        return tuple(int(v) for v in items)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"received {key}={show(value)}, expected true or false")
        return value

    def choice(self, key: str, options: Sequence[str | None], default: str | None) -> str | None:
        value = self.get(key, default)
        if isinstance(value, str):
            value = value.lower()
        if not (value is None or isinstance(value, str)) or value not in options:
            self.fail(key, f"received {key}={show(value)}, expected one of {list(options)}")
        return value

    def null(self, key: str, why: str) -> None:
        if self.config.get(key) is not None:
            self.fail(key, f"received {key}={show(self.config[key])}; expected null ({why})")

    def numbers(self, key: str, default: Any) -> None:
        value = self.get(key, default)
        items = value if isinstance(value, list) else [value]
        if not all(is_number(v) and math.isfinite(v) for v in items):
            self.fail(key, f"received {key}={show(value)}, expected a number or a list of numbers")

    def axes(self, key: str, shape: Shape, default: Any, allow_list: bool = True) -> list[int]:
        """Keras axes (the batch is axis 0) as indices into the per-sample ``shape``."""
        value = self.get(key, default)
        items = value if allow_list and isinstance(value, list) else [value]
        rank = len(shape) + 1
        out = []
        for axis in items:
            if not is_int(axis) or not -rank < axis < rank or axis in (0, -rank):
                self.fail(
                    key,
                    f"received {key}={show(value)} for inputs of shape {show(list(shape))}; "
                    f"expected {'axes' if allow_list else 'an axis'} from 1 to {rank - 1} "
                    "(or negative, from the end); axis 0 is the batch",
                )
            out.append(axis % rank - 1)
        return out

    def data_format(self) -> str:
        fmt = self.choice("data_format", ("channels_last", "channels_first", None), None)
        return fmt or "channels_last"

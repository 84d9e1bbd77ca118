"""Parsing of JSON and YAML request bodies within bounds; run in the thread pool.

A body of a few hundred bytes can unfold into gigabytes (YAML aliases expand wherever
they are used: the "billion laughs"), and lists nested thousands deep exhaust a
recursive parser. Before anything is built, one pass over the body's tokens (JSON) or
parser events (YAML) counts what it would unfold into, an alias counted with all that
its anchor holds, and stops at the first bound it passes:

- depth: lists and maps within each other (``FITQ_MAX_BODY_DEPTH``, 422);
- nodes: values, keys, lists and maps (``FITQ_MAX_BODY_NODES``, 413);
- text: the characters of the scalars once aliases are expanded
  (``FITQ_MAX_BODY_BYTES``, 413).

Both passes are iterative and stop at the bound, so that a refusal costs no more
than the bound's worth of work. A JSON body within bounds goes on as it came (FastAPI
parses it); a YAML body within bounds is built by PyYAML's safe loader and goes on as
JSON.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import yaml

from api.errors import clip

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# Longer numbers are refused before they are built: a YAML 1.1 base-60 integer
# (1:2:3:...) costs time quadratic in its length, and Python refuses to convert
# decimal integers of more than 4300 digits anyway.
MAX_NUMBER_CHARS = 1000
_RESOLVER = yaml.resolver.Resolver()
_JSON_TOKEN = re.compile(
    # a string (an unterminated one runs to the end: json.loads reports it), a
    # bracket, or a number or literal; commas, colons and white space are skipped
    rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)|[\[\]{}]|[^\s\[\]{},:"]++',
    re.DOTALL,
)
_OPENING, _CLOSING = frozenset(b"[{"), frozenset(b"]}")
# The thread that parses hands the interpreter lock over this often (tokens, events or
# nodes, about a millisecond's work), so that the event loop, which needs the lock for
# every step of every other request, waits for it a fraction of a millisecond rather
# than the interpreter's switch interval (5 ms) at each step.
YIELD_EVERY = 1024


def _yield() -> None:
    time.sleep(0)


class Loader(_SafeLoader):
    """PyYAML's safe loader (libyaml's when built with it) that hands the lock over."""

    _steps = 0

    def _step(self) -> None:
        self._steps += 1
        if self._steps % YIELD_EVERY == 0:
            _yield()

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        self._step()
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        self._step()
        return super().construct_object(node, deep)


@dataclass(frozen=True)
class Bounds:
    """What one body may unfold into (see the module's docstring)."""

    depth: int
    nodes: int
    chars: int


class BodyRefused(Exception):
    """A body refused before it was built: the ``status`` and ``detail`` to answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def unprocessable(type_: str, msg: str) -> BodyRefused:
    return BodyRefused(422, [{"loc": ["body"], "type": type_, "msg": msg}])


def _too_deep(kind: str, depth: int) -> BodyRefused:
    return unprocessable(
        "too_deep",
        f"the {kind} body nests lists and maps more than {depth} levels deep; "
        f"expected at most FITQ_MAX_BODY_DEPTH={depth} levels",
    )


class _Tally:
    def __init__(self, bounds: Bounds, kind: str) -> None:
        self.bounds = bounds
        self.kind = kind
        self.nodes = 0
        self.chars = 0

    def add(self, nodes: int, chars: int, depth: int) -> None:
        """Counts ``nodes`` more nodes and ``chars`` more characters, reaching ``depth``."""
        self.nodes += nodes
        self.chars += chars
        bounds = self.bounds
        if depth > bounds.depth:
            raise _too_deep(self.kind, bounds.depth)
        if self.nodes > bounds.nodes:
            aliases = " (an alias counts as all that its anchor holds)" * (self.kind == "YAML")
            raise BodyRefused(
                413,
                f"the {self.kind} body holds more than {bounds.nodes} values, keys, lists "
                f"and maps{aliases}; the limit is FITQ_MAX_BODY_NODES={bounds.nodes}",
            )
        if self.chars > bounds.chars:
            raise BodyRefused(
                413,
                f"the {self.kind} body's aliases expand to more than {bounds.chars} "
                f"characters of text; the limit is FITQ_MAX_BODY_BYTES={bounds.chars}",
            )


def check_json(raw: bytes, bounds: Bounds) -> None:
    """Refuses (``BodyRefused``) a JSON body deeper or larger than ``bounds``.

    It does not check that the JSON is well-formed: the parser that comes next does.
    """
    tally = _Tally(bounds, "JSON")
    depth = 0
    for count, token in enumerate(_JSON_TOKEN.finditer(raw), 1):
        if count % YIELD_EVERY == 0:
            _yield()
        first = raw[token.start()]
        if first in _CLOSING:
            depth -= 1
            continue
        if first in _OPENING:
            depth += 1
        tally.add(1, 0, depth)


def yaml_to_json(raw: bytes, bounds: Bounds) -> bytes:
    """The YAML body ``raw`` as JSON, once it is known to stay within ``bounds``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise unprocessable(
            "yaml_invalid", f"the body is not valid YAML: it is not UTF-8 ({clip(str(exc))})"
        ) from exc
    try:
        check_yaml(text, bounds)
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        # libyaml's scanner, which looks ahead, refuses flow collections nested past
        # its own limit (1000) before the first event reaches the check above.
        if "nesting depth" in str(getattr(exc, "problem", "")):
            raise _too_deep("YAML", bounds.depth) from exc
        raise unprocessable(
            "yaml_invalid", f"the body is not valid YAML: {clip(str(exc))}"
        ) from exc
    try:
        return json.dumps(data, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise unprocessable(
            "yaml_invalid",
            "the YAML holds a value JSON cannot (a date, binary data or NaN); expected "
            f"numbers, strings, lists and maps: {clip(str(exc))}",
        ) from exc


def check_yaml(text: str, bounds: Bounds) -> None:
    """Refuses (``BodyRefused``) a YAML body that would unfold past ``bounds``.

    One pass over the parser's events, never building a node: each open list or map
    keeps the nodes, characters and height below it, each anchor what it stood for
    when it closed, and each alias adds its anchor's all over again.
    """
    walk = _YamlWalk(_Tally(bounds, "YAML"))
    for count, event in enumerate(yaml.parse(text, Loader=Loader), 1):
        if count % YIELD_EVERY == 0:
            _yield()
        walk.event(event)


class _YamlWalk:
    """What ``check_yaml`` keeps between events: the open collections and the anchors."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.anchors: dict[str, tuple[int, int, int]] = {}  # nodes, characters, height
        self.frames: list[list[Any]] = []  # per open collection: nodes, chars, height, anchor

    def event(self, event: Any) -> None:
        if isinstance(event, yaml.ScalarEvent):
            self.scalar(event)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.tally.add(1, 0, len(self.frames) + 1)
            self.frames.append([1, 0, 0, event.anchor])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            nodes, chars, height, anchor = self.frames.pop()
            if anchor is not None:
                self.anchors[anchor] = (nodes, chars, height + 1)
            self.absorb(nodes, chars, height + 1)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.anchors.clear()

    def scalar(self, event: Any) -> None:
        value: str = event.value
        if len(value) > MAX_NUMBER_CHARS:
            _refuse_long_number(value, event.tag, event.style, event.implicit)
        if event.anchor is not None:
            self.anchors[event.anchor] = (1, len(value), 0)
        self.leaf(1, len(value), 0)

    def alias(self, event: Any) -> None:
        if any(frame[3] == event.anchor for frame in self.frames):
            raise unprocessable(
                "yaml_invalid",
                f"the alias *{clip(str(event.anchor), 100)} refers to a list or map "
                "that holds it; expected no cycles (JSON cannot hold one)",
            )
        # An unknown alias counts as one node; the loader then reports it.
        self.leaf(*self.anchors.get(event.anchor or "", (1, 0, 0)))

    def absorb(self, nodes: int, chars: int, height: int) -> None:
        if self.frames:
            top = self.frames[-1]
            top[0] += nodes
            top[1] += chars
            top[2] = max(top[2], height)

    def leaf(self, nodes: int, chars: int, height: int) -> None:
        self.tally.add(nodes, chars, len(self.frames) + height)
        self.absorb(nodes, chars, height)


def _refuse_long_number(
    value: str, tag: str | None, style: str | None, implicit: tuple[bool, bool]
) -> None:
    if tag in (None, "!"):
        if style:  # quoted ('' is libyaml's plain style): a string
            return
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
    if tag in NUMBER_TAGS:
        raise unprocessable(
            "number_too_long",
            f"a number of {len(value)} characters ({clip(value, 40)}); expected at most "
            f"{MAX_NUMBER_CHARS}",
        )

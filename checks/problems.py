"""The problems the checks of a spec find, gathered into one ``SpecError``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import SpecError

Loc = tuple[str | int, ...]


class Problems:
    """Every problem found in a spec, each with its path inside the spec.

    Each is ``{"loc", "msg", "type"}``, the shape ``SpecError`` documents; the
    checks go on after a problem, so one answer lists them all.
    """

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Loc, msg: str, type_: str = "value_error") -> None:
        self.items.append({"loc": list(loc), "msg": msg, "type": type_})

    def add_validation_error(self, loc: Loc, exc: ValidationError) -> None:
        """The errors of a pydantic model checked on its own, put under ``loc``."""
        for err in exc.errors():
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (received {got!r})"
            self.add(loc + tuple(err["loc"]), f"{err['msg']}{shown}", err["type"])

    def raise_any(self) -> None:
        """Raises ``SpecError`` listing every problem, if there is one."""
        if self.items:
            raise SpecError(self.items)

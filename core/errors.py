"""Domain errors of fitq. The API maps them to HTTP in one place (api/errors.py)."""

from __future__ import annotations

from typing import Any


class FitqError(Exception):
    """Base class of fitq's domain errors."""


class SpecError(FitqError):
    """A job spec that is well-formed but cannot run.

    Args:
        errors: Items of the form ``{"loc": [...], "msg": str, "type": str}``, the
            same shape as FastAPI's validation errors, with ``loc`` the path inside
            the spec.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str, type_: str = "value_error") -> SpecError:
        return cls([{"loc": list(loc), "msg": msg, "type": type_}])


class NotFound(FitqError):
    """No such resource; ``reason``, when given, says why the one asked for is missing."""

    def __init__(self, what: str, ident: str, reason: str | None = None) -> None:
        super().__init__(f"{what} {ident!r} not found" + (f": {reason}" if reason else ""))
        self.what = what
        self.ident = ident


class Gone(FitqError):
    """A resource that existed and was removed on purpose (a checkpoint that retention
    removed, a job's deleted artifacts); its row stays, saying when and why."""


class Conflict(FitqError):
    """The request contradicts the current state (a finished job, a reused key)."""


class DatabaseNotMigrated(FitqError):
    """The database schema is not at the latest migration."""


class TooManyJobs(FitqError):
    """An owner has as many queued and running jobs as the settings allow."""

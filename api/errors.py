"""Maps domain errors to HTTP, in one place; every error body is ``{"detail": ...}``.

Every answer is bounded and tells no server paths: a received value is echoed as an
excerpt of at most ``EXCERPT_CHARS`` characters, any one message is cut at
``MESSAGE_CHARS``, at most ``MAX_ERRORS`` errors are listed (then how many more there
were), and the data and artifact folders read as ``$FITQ_DATA_DIR`` and
``$FITQ_ARTIFACTS_DIR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException

from core.errors import Conflict, Gone, NotFound, SpecError, TooManyJobs

EXCERPT_CHARS = 200
MESSAGE_CHARS = 2000
MAX_ERRORS = 50


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text``, cut after ``limit`` characters with a note of how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` of at most about ``limit`` characters, saying how much was cut."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... [{len(value) - limit} more characters]"
    try:
        return clip(repr(value), limit)
    except ValueError:  # an integer past Python's digit limit for str()
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__}"


def _echo(error: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in error.items() if k in ("loc", "msg", "type")}
    got = error.get("input")
    if "input" in error and not isinstance(got, (dict, list)) and "received" not in out["msg"]:
        out["msg"] = f"{out['msg']} (received {excerpt(got)})"
    return out


def _paths(request: Request) -> list[tuple[str, str]]:
    """The server's folders, longest first, and the names they read as in answers."""
    settings = getattr(request.app.state, "settings", None)
    return [] if settings is None else settings.folder_names()


def bounded(detail: Any, paths: list[tuple[str, str]]) -> Any:
    """``detail`` with long texts cut, long lists of errors shortened and paths hidden."""
    if isinstance(detail, str):
        text = clip(detail)
        for path, name in paths:
            text = text.replace(path, name)
        return text
    if isinstance(detail, (list, tuple)):
        items = [bounded(item, paths) for item in detail[:MAX_ERRORS]]
        if len(detail) > MAX_ERRORS:
            first = detail[MAX_ERRORS]
            loc = first.get("loc", [])[:1] if isinstance(first, dict) else []
            items.append(
                {
                    "loc": loc,
                    "msg": f"{len(detail) - MAX_ERRORS} more errors left out; "
                    f"the first {MAX_ERRORS} are listed",
                    "type": "too_many_errors",
                }
            )
        return items
    if isinstance(detail, dict):
        out = {k: bounded(v, paths) for k, v in detail.items() if k != "loc"}
        if "loc" in detail:
            out["loc"] = [
                clip(p, EXCERPT_CHARS) if isinstance(p, str) else p for p in detail["loc"]
            ]
        return out
    return detail


def answer(
    request: Request, status: int, detail: Any, headers: Mapping[str, str] | None = None
) -> Response:
    """The error answer: ``{"detail": ...}``, bounded and without server paths."""
    if not is_body_allowed_for_status_code(status):
        return Response(status_code=status, headers=headers)
    content = {"detail": jsonable_encoder(bounded(detail, _paths(request)))}
    return JSONResponse(status_code=status, content=content, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        # Only the errors listed are echoed; ``bounded`` counts the rest.
        return answer(request, 422, [_echo(e) for e in errors[:MAX_ERRORS]] + errors[MAX_ERRORS:])

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return answer(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(SpecError)
    async def _spec(request: Request, exc: SpecError) -> Response:
        detail = [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors]
        return answer(request, 422, detail)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return answer(request, 404, str(exc))

    @app.exception_handler(Gone)
    async def _gone(request: Request, exc: Gone) -> Response:
        return answer(request, 410, str(exc))

    @app.exception_handler(TooManyJobs)
    async def _too_many(request: Request, exc: TooManyJobs) -> Response:
        return answer(request, 429, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> Response:
        return answer(request, 409, str(exc))

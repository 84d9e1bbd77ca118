"""The job-status dashboard: one static page and its script, served by the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard; it reads everything else from the v1 API."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_NO_STORE)


@router.get("/dashboard/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=_NO_STORE)


# The page is small; always revalidating keeps it in step with the API after upgrades.
_NO_STORE = {"Cache-Control": "no-cache"}

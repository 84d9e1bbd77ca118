"""What an owner uploads (datasets, models): kept, listed, found and deleted alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from fastapi import HTTPException, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.tokens import Principal
from core.errors import NotFound
from core.settings import Settings
from models.tables import Dataset, UploadedModel
from storage.uploads import UploadError

Owned = TypeVar("Owned", Dataset, UploadedModel)
# What a store function returns: the new id, the file's size and SHA-256, its info.
Stored = tuple[str, int, str, dict[str, Any]]
FILE = ["body", "file"]


def wrong_file(msg: str) -> HTTPException:
    """422 for a file that is not of the kind the route takes (by its name)."""
    return HTTPException(422, [{"loc": FILE, "type": "value_error", "msg": msg}])


async def checked(
    store: Callable[[BinaryIO, Settings], Stored], file: UploadFile, settings: Settings
) -> Stored:
    """The upload, checked completely and stored by ``store`` (in the thread pool); its
    4xx names each problem, inside a model's config where it is one."""
    try:
        return await run_in_threadpool(store, file.file, settings)
    except UploadError as exc:
        items = [
            {"loc": [*FILE, "config.json", *p["loc"]], "msg": p["msg"], "type": p["type"]}
            for p in exc.problems
        ] or [{"loc": FILE, "msg": str(exc), "type": "upload"}]
        raise HTTPException(exc.status, items) from exc


def kept(session: Session, row: Owned, response: Response, location: str) -> Owned:
    """Stores a checked upload's row; the answer's ``Location`` is ``location``."""
    session.add(row)
    session.commit()
    response.headers["Location"] = location
    return row


def newest(
    session: Session, table: type[Owned], principal: Principal, limit: int
) -> Sequence[Owned]:
    """The owner's rows (every row, for an admin), newest first."""
    query = select(table)
    if not principal.admin:
        query = query.where(table.owner == principal.owner)
    return session.scalars(query.order_by(table.created_at.desc()).limit(limit)).all()


def visible(
    session: Session, table: type[Owned], row_id: str, principal: Principal, what: str
) -> Owned:
    """The row, if ``principal`` may see it; another owner's is "not found"."""
    row = session.get(table, row_id) if len(row_id) <= 32 else None
    if row is None or not principal.sees(row.owner):
        raise NotFound(what, row_id)
    return row


def delete_unused(session: Session, row: Owned, users: Sequence[str], what: str) -> None:
    """Deletes the row, unless queued or running jobs (``users``) need it: 409."""
    if users:
        raise HTTPException(
            409,
            f"{what} {row.id} is used by queued or running jobs {sorted(users)}; cancel "
            "them or wait for them to finish",
        )
    session.delete(row)
    session.commit()

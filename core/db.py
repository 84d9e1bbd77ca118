"""Engines and sessions for the configured database (SQLite with WAL, or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(
    url: str,
    pooled: bool = True,
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    Args:
        url: The SQLAlchemy URL.
        pooled: ``False`` keeps no connection open between uses: for a process that
            forks children (Celery's parent), whose open connections the children
            would inherit. Defaults to True.
        pool_size: Connections the pool keeps open. Defaults to SQLAlchemy's 5.
        max_overflow: Connections it may open beyond ``pool_size`` when all are in
            use; a caller that finds all ``pool_size + max_overflow`` taken waits up
            to 30 s, then fails. Size them for the process's concurrency (the API's
            are ``FITQ_DB_POOL_SIZE`` and ``FITQ_DB_MAX_OVERFLOW``). Defaults to
            SQLAlchemy's 10.
    """
    pool: dict[str, Any] = {"poolclass": NullPool}
    if pooled:
        sizes = {"pool_size": pool_size, "max_overflow": max_overflow}
        pool = {key: value for key, value in sizes.items() if value is not None}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        elif pooled:
            pool = {}  # one connection per thread, whatever the sizes
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A short unit of work: commits on success, rolls back on error."""
    with factory() as session, session.begin():
        yield session

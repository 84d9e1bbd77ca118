"""The FastAPI application: ``create_app()`` for uvicorn, tests and ``fitq api``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress

import anyio.to_thread
from fastapi import FastAPI

from api import changefeed, errors
from api.auth import AuthMiddleware
from api.body import BodyMiddleware
from api.metrics import RequestLatencyMiddleware
from api.routes import (
    artifacts,
    dashboard,
    datasets,
    events,
    health,
    jobs,
    metrics,
    models,
    runs,
    trained_model,
    workers,
)
from core.db import make_engine, make_session_factory
from core.settings import Settings, get_settings
from migrations.migrate import check_migrated
from queueing.broker import make_celery

log = logging.getLogger("fitq.api")
DESCRIPTION = """Submit a Keras `model.fit()` call as a job spec; Celery workers train it and
record every epoch's metrics and every checkpoint. Epochs are 1-based everywhere."""


def create_app(settings: Settings | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The API, wired to the configured database and broker.

    Refuses to start on a database that is not at the latest migration. Requires
    bearer tokens when ``FITQ_AUTH=on``, or when unset and ``host`` is not loopback.
    """
    settings = settings or get_settings()
    auth_enabled = settings.auth_enabled(host)
    app = FastAPI(
        title="fitq",
        version="1",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, auth_enabled),
        generate_unique_id_function=lambda route: route.name,  # operationId: the handler's name
    )
    _add_middleware(app, settings, auth_enabled)
    errors.install(app)
    routers = (
        health,
        jobs,
        trained_model,
        runs,
        events,
        datasets,
        models,
        dashboard,
        metrics,
        workers,
        artifacts,
    )
    for routes in routers:
        app.include_router(routes.router)
    return app


def _lifespan(
    settings: Settings, auth_enabled: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app opens at start-up and closes at shutdown: the database, the broker's
    client and the change feed of the event streams."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connections = _connections(settings)
        engine = make_engine(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        check_migrated(engine)
        # Sync routes run on anyio's threads (40 by default), a connection each: never
        # more threads than the pool has connections beside the change feed's, so that
        # a request does not wait for a connection (and fail after 30 s) under load.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = min(threads.total_tokens, connections - changefeed.CONNECTIONS)
        app.state.settings = settings
        app.state.auth_enabled = auth_enabled
        app.state.session_factory = make_session_factory(engine)
        app.state.celery = make_celery(settings, name="fitq-api")
        feed: changefeed.ChangeFeed[object] = changefeed.ChangeFeed(app.state.session_factory)
        app.state.change_feed = feed
        app.state.event_streams = events.EventStreams(settings.events_max_streams_per_owner)
        ticking = asyncio.create_task(feed.run())
        # What start-up built lives as long as the app: kept out of the collector's full
        # passes, which would otherwise walk all of it (100 ms and more on a busy
        # machine) in the middle of a request.
        gc.freeze()
        yield
        gc.unfreeze()
        ticking.cancel()
        with suppress(asyncio.CancelledError):
            await ticking
        engine.dispose()

    return lifespan


def _connections(settings: Settings) -> int:
    """The database pool's connections; raises ``ValueError`` when the change feed would
    leave none to serve requests."""
    connections = settings.db_pool_size + settings.db_max_overflow
    if connections <= changefeed.CONNECTIONS:
        raise ValueError(
            f"FITQ_DB_POOL_SIZE + FITQ_DB_MAX_OVERFLOW is {connections}; expected more "
            f"than the {changefeed.CONNECTIONS} connections the event streams' change feed "
            "uses (the rest serve requests)"
        )
    return connections


def _add_middleware(app: FastAPI, settings: Settings, auth_enabled: bool) -> None:
    app.add_middleware(
        BodyMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        max_depth=settings.max_body_depth,
        max_nodes=settings.max_body_nodes,
    )
    app.add_middleware(AuthMiddleware, enabled=auth_enabled)  # outside: before any body
    app.add_middleware(RequestLatencyMiddleware)


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory api.main:app_factory``."""
    return create_app()

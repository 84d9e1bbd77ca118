"""The change feed on a real database: a tick is one query however many streams follow
unchanged jobs, a changed job is read once for all its followers, and nobody holds a
connection between ticks; the API's request threads fit in its pool beside the feed's."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from api.changefeed import CONNECTIONS, ChangeFeed, Follower
from api.main import create_app
from api.routes.events import _Change, _Cursor, _JobReader, _read_all
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from models.tables import Job, utcnow
from tests.conftest import Backend
from tests.dispatcher.test_dispatch import add_job


class Statements:
    """The statements an engine runs, with their parameters."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.seen: list[tuple[str, Any]] = []
        event.listen(factory.kw["bind"], "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.seen.append((statement, params))

    def take(self) -> list[tuple[str, Any]]:
        out, self.seen = self.seen, []
        return out


async def follow(
    feed: ChangeFeed[_Change], factory: sessionmaker[Session], job_id: str
) -> Follower[_Change]:
    settings = Settings()
    cur = _Cursor(epoch=0)
    follower, _ = await feed.follow(
        job_id,
        partial(_JobReader, factory, settings, job_id),
        partial(_read_all, factory, settings, job_id, cur),
    )
    return follower


def touch(factory: sessionmaker[Session], job_id: str, step: int) -> None:
    with factory() as s, s.begin():
        s.execute(
            update(Job).where(Job.id == job_id).values(progress_step=step, updated_at=utcnow())
        )


def test_a_tick_is_one_query_however_many_follow_unchanged_jobs(
    migrated_backend: Backend,
) -> None:
    engine = make_engine(migrated_backend.database_url)
    assert isinstance(engine.pool, QueuePool)
    pool = engine.pool
    factory = make_session_factory(engine)
    jobs = [add_job(factory, "running") for _ in range(200)]
    statements = Statements(factory)

    async def scenario() -> dict[int, float]:
        feed: ChangeFeed[_Change] = ChangeFeed(factory)
        followers: list[Follower[_Change]] = []
        per_tick: dict[int, float] = {}
        for count in (1, 50, 200):
            new = [await follow(feed, factory, job) for job in jobs[len(followers) : count]]
            followers += new
            await feed.tick()  # a job newly followed is read once, for what came meanwhile
            await asyncio.gather(*(f.changes(10) for f in new))
            statements.take()
            for _ in range(5):
                await feed.tick()
                assert pool.checkedout() == 0  # no connection held between ticks
            per_tick[count] = len(statements.take()) / 5
            for follower in followers:
                assert await follower.changes(0) == []  # nothing changed
        for follower in followers:
            feed.leave(follower)
        assert feed.followed == 0
        return per_tick

    assert asyncio.run(scenario()) == {1: 1, 50: 1, 200: 1}
    engine.dispose()


def test_a_changed_job_is_read_once_for_all_its_followers(migrated_backend: Backend) -> None:
    engine = make_engine(migrated_backend.database_url)
    factory = make_session_factory(engine)
    changed, quiet = add_job(factory, "running"), add_job(factory, "running")
    statements = Statements(factory)

    async def reads_of_a_change(followers_of_changed: int) -> list[tuple[str, Any]]:
        feed: ChangeFeed[_Change] = ChangeFeed(factory)
        watching = [await follow(feed, factory, changed) for _ in range(followers_of_changed)]
        others = [await follow(feed, factory, quiet) for _ in range(50)]
        await feed.tick()
        await asyncio.gather(*(f.changes(10) for f in watching + others))
        await feed.tick()
        touch(factory, changed, followers_of_changed)
        statements.take()
        await feed.tick()
        got = await asyncio.gather(*(f.changes(10) for f in watching))
        read = statements.take()
        for changes in got:
            assert [event for event, _, _ in changes[0].items] == ["job"]
            assert changes[0].items[0][1].progress.step == followers_of_changed
        for follower in others:
            assert await follower.changes(0) == []
        for follower in watching + others:
            feed.leave(follower)
        return read

    one, fifty = asyncio.run(reads_of_a_change(1)), asyncio.run(reads_of_a_change(50))
    assert len(one) == len(fifty) > 1
    markers, *job_reads = fifty
    assert changed in str(markers[1]) and quiet in str(markers[1])  # one query for both
    assert all(changed in str(params) and quiet not in str(params) for _, params in job_reads)
    engine.dispose()


def test_queries_per_second_do_not_grow_with_followers(migrated_backend: Backend) -> None:
    engine = make_engine(migrated_backend.database_url)
    factory = make_session_factory(engine)
    jobs = [add_job(factory, "queued") for _ in range(200)]
    statements = Statements(factory)

    async def per_second(count: int) -> float:
        feed: ChangeFeed[_Change] = ChangeFeed(factory)
        followers = [await follow(feed, factory, jobs[i % len(jobs)]) for i in range(count)]
        ticking = asyncio.create_task(feed.run())
        # Each job's first read, for what came while it was joined.
        await asyncio.gather(*(f.changes(10) for f in followers))
        await asyncio.sleep(0.3)
        statements.take()
        started = time.monotonic()
        await asyncio.sleep(2)
        rate = len(statements.take()) / (time.monotonic() - started)
        ticking.cancel()
        for follower in followers:
            feed.leave(follower)
        return rate

    rates = {count: asyncio.run(per_second(count)) for count in (1, 50, 200)}
    print(f"{migrated_backend.name}: change feed queries per second by followers: {rates}")
    assert all(rate <= 1 / 0.25 + 1 for rate in rates.values()), rates
    engine.dispose()


def request_threads(settings: Settings) -> int:
    """The API's request threads once started on ``settings``."""
    with TestClient(create_app(settings)) as client:
        assert client.portal is not None
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        return int(limiter.total_tokens)


def test_the_api_runs_no_more_request_threads_than_its_pool_has_connections_for(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    assert request_threads(settings) == 40  # anyio's own number: 50 connections cover it
    small = settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 8})
    assert request_threads(small) == 10 - CONNECTIONS
    too_small = settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 3})
    with pytest.raises(ValueError, match=r"FITQ_DB_POOL_SIZE \+ FITQ_DB_MAX_OVERFLOW is 5"):
        request_threads(too_small)

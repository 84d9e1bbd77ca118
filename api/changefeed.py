"""The change feed behind the event streams: one query per tick for every followed job.

Each tick, one query reads the change markers of all the jobs anyone follows (their
``updated_at`` and a few small columns that every write of a job changes). Only a job
whose marker moved is read again, once, whatever the number of its followers, and
what that read found goes to each of them. A follower holds no database connection:
it waits on its own in-memory queue. Reads run on worker threads counted apart from the
requests' (a limiter of their own), so that however many streams are open, the feed
uses at most ``CONNECTIONS`` connections and leaves the request threads to requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.tables import Job

log = logging.getLogger("fitq.api.changefeed")

TICK_SECONDS = 0.25
READ_THREADS = 4  # jobs read (and followers caught up) at once
CONNECTIONS = READ_THREADS + 1  # those reads, and the markers' query
IDS_PER_QUERY = 500  # markers of more followed jobs than this take one query per 500
# Every write of a job row sets updated_at; the others make the marker move even for a
# write that forgot to (a cancel, a claim, progress).
MARKER_COLUMNS = (
    Job.updated_at,
    Job.status,
    Job.attempts,
    Job.cancel_requested,
    Job.progress_epoch,
    Job.progress_step,
)
_UNSEEN: Any = object()

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")


class Reader(Protocol[T_co]):
    """Reads what is new in one job, for all its followers at once.

    The feed calls ``baseline`` once, then ``read`` each time the job's marker moves,
    never two of them at once, each on a worker thread.
    """

    def baseline(self) -> None:
        """Notes where the job is now; what ``read`` returns later is what came after."""

    def read(self) -> T_co:
        """What changed since the baseline or the last read."""


class Follower(Generic[T]):
    """One stream's place in the feed: the changes of its job, in the order read."""

    def __init__(self, topic: _Topic[T]) -> None:
        self._topic = topic
        self._pending: list[T] = []
        self._wake = asyncio.Event()

    def _push(self, change: T) -> None:
        self._pending.append(change)
        self._wake.set()

    async def changes(self, timeout: float) -> list[T]:
        """The changes since the last call; waits up to ``timeout`` seconds for one."""
        if not self._pending:
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()
        out, self._pending = self._pending, []
        return out


@dataclass(eq=False)
class _Topic(Generic[T]):
    job_id: str
    reader: Reader[T]
    users: int = 0  # followers, and streams on their way to becoming one
    followers: set[Follower[T]] = field(default_factory=set)
    ready: bool = False  # the reader's baseline is taken
    marker: Any = _UNSEEN
    dirty: bool = False
    reading: asyncio.Task[None] | None = None
    # Held while the reader reads and while a new follower catches up, so that each
    # follower gets every change read after its own catch-up, and none read before.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ChangeFeed(Generic[T]):
    """The jobs followed in this process, and the task that watches them.

    Args:
        factory: Sessions on the job database.
        tick_seconds: Seconds between two reads of the markers. Defaults to 0.25.
    """

    def __init__(self, factory: sessionmaker[Session], tick_seconds: float = TICK_SECONDS):
        self._factory = factory
        self.tick_seconds = tick_seconds
        self._topics: dict[str, _Topic[T]] = {}
        self._reads = anyio.CapacityLimiter(READ_THREADS)
        self._markers_limiter = anyio.CapacityLimiter(1)
        self._failing = False

    @property
    def followed(self) -> int:
        """How many jobs are followed."""
        return len(self._topics)

    async def follow(
        self, job_id: str, reader: Callable[[], Reader[T]], catch_up: Callable[[], R]
    ) -> tuple[Follower[T], R]:
        """Follows a job: runs ``catch_up`` (a read of what the stream lacks so far, on a
        worker thread), then hands over every change read after it.

        ``reader`` makes the job's reader when nobody follows the job yet. Call
        ``leave`` with the follower when done, whatever happens.
        """
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = _Topic(job_id, reader())
        topic.users += 1
        try:
            async with topic.lock:
                if not topic.ready:
                    await anyio.to_thread.run_sync(topic.reader.baseline, limiter=self._reads)
                    topic.ready = True
                result = await anyio.to_thread.run_sync(catch_up, limiter=self._reads)
                follower = Follower(topic)
                topic.followers.add(follower)
        except BaseException:
            self._release(topic)
            raise
        return follower, result

    def leave(self, follower: Follower[T]) -> None:
        """Stops following; the job is forgotten once nobody follows it. Idempotent."""
        topic = follower._topic
        if follower in topic.followers:
            topic.followers.discard(follower)
            self._release(topic)

    def _release(self, topic: _Topic[T]) -> None:
        topic.users -= 1
        if topic.users == 0 and self._topics.get(topic.job_id) is topic:
            del self._topics[topic.job_id]

    async def run(self) -> None:
        """Ticks until cancelled; a tick that fails (the database away) is retried."""
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - logged once, retried every tick
                if not self._failing:
                    log.exception("reading the followed jobs' markers failed; retrying")
                self._failing = True
            else:
                if self._failing:
                    log.info("reading the followed jobs' markers works again")
                self._failing = False

    async def tick(self) -> None:
        """Reads the markers of all followed jobs; starts a read of each that moved."""
        ids = [job_id for job_id, topic in self._topics.items() if topic.ready]
        if not ids:
            return
        markers = await anyio.to_thread.run_sync(
            self._read_markers, ids, limiter=self._markers_limiter
        )
        for job_id in ids:
            topic = self._topics.get(job_id)
            marker = markers.get(job_id)  # None: the job is gone; its read says so
            if topic is not None and marker != topic.marker:
                topic.marker = marker
                self._kick(topic)

    def _read_markers(self, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        with self._factory() as session:
            for chunk in _chunks(ids, IDS_PER_QUERY):
                rows = session.execute(select(Job.id, *MARKER_COLUMNS).where(Job.id.in_(chunk)))
                for job_id, *marker in rows:
                    out[job_id] = tuple(marker)
        return out

    def _kick(self, topic: _Topic[T]) -> None:
        if topic.reading is not None:
            topic.dirty = True  # read again once the read under way is done
        else:
            topic.reading = asyncio.create_task(self._read(topic))

    async def _read(self, topic: _Topic[T]) -> None:
        try:
            while True:
                topic.dirty = False
                async with topic.lock:
                    change = await anyio.to_thread.run_sync(topic.reader.read, limiter=self._reads)
                    for follower in topic.followers:
                        follower._push(change)
                if not topic.dirty:
                    return
        except Exception:  # noqa: BLE001 - the next tick reads the job again
            log.exception("reading job %s for its followers failed; retrying", topic.job_id)
            topic.marker = _UNSEEN
        finally:
            topic.reading = None


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

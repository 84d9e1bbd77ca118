"""A worker's row in the ``workers`` table: its name, queues and devices, and that it lives.

The Celery parent process writes the row when the worker is ready, renews
``heartbeat_at`` from a thread every third of ``FITQ_LEASE_SECONDS`` and marks the
row stopped at a clean shutdown. It keeps no database connection open between
writes: its pool processes are forked from it and must not inherit one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory, transaction
from core.settings import Settings
from models.tables import Worker, utcnow
from queueing.devices import Devices

log = logging.getLogger("fitq.worker")
FORGET_AFTER = dt.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """Who a worker is: its Celery node name, the queues it consumes and its devices."""

    name: str
    queues: list[str]
    devices: Devices


class Registration:
    """Keeps one worker's row current until ``stop``.

    Args:
        settings: The worker's settings (database, lease).
        identity: What the row says.
    """

    def __init__(self, settings: Settings, identity: Identity) -> None:
        self.identity = identity
        self.interval = settings.lease_seconds / 3
        self.factory: sessionmaker[Session] = make_session_factory(
            make_engine(settings.resolved_database_url, pooled=False)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="fitq-registry", daemon=True)

    def start(self) -> None:
        """Writes the row (replacing an older one of the same name) and starts beating."""
        try:
            self._write(fresh=True)
        except Exception as exc:  # noqa: BLE001 - the next heartbeat writes it
            log.warning("could not register worker %s: %s", self.identity.name, exc)
        self._thread.start()

    def _write(self, fresh: bool) -> None:
        me = self.identity
        now = utcnow()
        with transaction(self.factory) as s:
            if not fresh:
                beat = s.execute(
                    update(Worker)
                    .where(Worker.name == me.name)
                    .values(heartbeat_at=now, stopped_at=None)
                )
                if beat.rowcount:  # type: ignore[attr-defined]
                    return
            s.execute(
                delete(Worker).where(
                    (Worker.name == me.name) | (Worker.heartbeat_at < now - FORGET_AFTER)
                )
            )
            s.add(
                Worker(
                    name=me.name,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    queues=me.queues,
                    device_kind=me.devices.kind,
                    devices=me.devices.count,
                    gpus=me.devices.gpus,
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write(fresh=False)
            except Exception as exc:  # noqa: BLE001 - the database may be down; beat again
                log.warning("worker heartbeat failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        """Stops beating and marks the row stopped."""
        self._stop.set()
        try:
            with transaction(self.factory) as s:
                s.execute(
                    update(Worker)
                    .where(Worker.name == self.identity.name)
                    .values(stopped_at=utcnow())
                )
        except Exception as exc:  # noqa: BLE001 - a stale heartbeat tells the same
            log.warning("could not mark worker %s stopped: %s", self.identity.name, exc)

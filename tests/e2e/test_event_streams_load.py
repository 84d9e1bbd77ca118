"""Open event streams cost no database connection: 50 of them leave another user's
requests answered at once, and an owner's streams are capped."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from api.tokens import create_token
from migrations.migrate import upgrade
from tests.conftest import Service, free_port, make_backend
from tests.factories import digits_spec

pytestmark = pytest.mark.e2e
STREAMS = 50
ON_THE_RUNNING_JOB = 10
LIST_WITHIN_S = 0.2


@dataclass
class Stream:
    """One client following ``path``, on a thread of its own."""

    base_url: str
    token: str
    path: str
    status: int | None = None
    body: str = ""
    events: list[tuple[str, Any]] = field(default_factory=list)
    error: str | None = None
    first_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with (
                httpx.Client(base_url=self.base_url, headers=headers, timeout=60) as client,
                client.stream("GET", self.path) as resp,
            ):
                self.status = resp.status_code
                if resp.status_code != 200:
                    self.body = resp.read().decode()
                    return
                event, data = "message", []
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.append((event, json.loads("\n".join(data))))
                        self.first_event.set()
                        event, data = "message", []
                    if self.stop.is_set():
                        return
        except Exception as exc:  # noqa: BLE001 - the test reports it
            self.error = repr(exc)
        finally:
            self.first_event.set()

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.path} still open after {timeout}s"

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def start_with_tokens(
    name: str, tmp: Path, extra_env: dict[str, str], worker: bool
) -> tuple[Service, dict[str, str]]:
    """A service with auth on (and a worker if asked), and tokens for alice and bob."""
    svc = Service(
        make_backend(name, tmp, "fitq_streams"),
        tmp,
        f"streams-{uuid.uuid4().hex[:6]}",
        extra_env={"FITQ_AUTH": "on", **extra_env},
    )
    svc.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(svc.backend.database_url)
    engine = create_engine(svc.backend.database_url)
    with Session(engine) as s:
        tokens = {name: create_token(s, name) for name in ("alice", "bob")}
    engine.dispose()
    if worker:
        svc.start()
        svc.client.headers["Authorization"] = f"Bearer {tokens['alice']}"
    else:
        svc.port = free_port()
        svc.base_url = f"http://127.0.0.1:{svc.port}"
        svc.client = httpx.Client(base_url=svc.base_url, timeout=30)
        svc.start_process("api", "api", "--port", str(svc.port))
        svc.wait_until(svc._ready, 60, "the API to answer /readyz")
    svc.client.headers["Authorization"] = f"Bearer {tokens['alice']}"
    return svc, tokens


def client_of(svc: Service, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=svc.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def submit(client: httpx.Client, spec: dict[str, Any], queue: str) -> str:
    resp = client.post("/v1/jobs", json={**spec, "queue": queue})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


@pytest.fixture(params=["sqlite", "postgres"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(backend_name: str, tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    svc, tokens = start_with_tokens(backend_name, tmp_path, {}, worker=True)
    yield svc, tokens
    svc.stop()


def test_fifty_open_streams_leave_another_users_list_answered_at_once(
    served: tuple[Service, dict[str, str]],
) -> None:
    svc, tokens = served
    alice, bob = client_of(svc, tokens["alice"]), client_of(svc, tokens["bob"])
    parked = f"parked-{uuid.uuid4().hex[:6]}"  # a queue no worker takes: the jobs wait
    running = submit(alice, digits_spec(**{"fit.epochs": 15}), svc.queue)
    waiting = [submit(alice, digits_spec(), parked) for _ in range(STREAMS - ON_THE_RUNNING_JOB)]
    submit(bob, digits_spec(name="bobs"), parked)
    assert bob.get("/v1/jobs").status_code == 200
    svc.wait_for(running, ("running",))

    streams = [
        Stream(svc.base_url, tokens["alice"], f"/v1/jobs/{running}/events?log_offset=0").start()
        for _ in range(ON_THE_RUNNING_JOB)
    ] + [Stream(svc.base_url, tokens["alice"], f"/v1/jobs/{j}/events").start() for j in waiting]
    try:
        deadline = time.monotonic() + 45
        for stream in streams:
            stream.first_event.wait(max(0.0, deadline - time.monotonic()))
        opened = sum(1 for s in streams if s.events)
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            resp = bob.get("/v1/jobs", timeout=60)
            latencies.append(time.monotonic() - started)
            assert resp.status_code == 200, resp.text
            assert [job["name"] for job in resp.json()["items"]] == ["bobs"]
            if latencies[-1] > 2:
                break  # slow enough to tell; the assertion below says how slow
            time.sleep(0.1)
        status = alice.get(f"/v1/jobs/{running}").json()["status"]
        print(
            f"{svc.backend.name}: {opened}/{STREAMS} streams open, job {status}; "
            f"GET /v1/jobs took {', '.join(f'{t * 1000:.0f}' for t in latencies)} ms"
        )
        assert opened == STREAMS, [(s.status, s.body or s.error) for s in streams if not s.events]
        assert max(latencies) < LIST_WITHIN_S, latencies

        for job_id in waiting:
            assert alice.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        final = svc.wait_for(running, timeout=180)
        for stream in streams:
            stream.join(60)
    finally:
        for stream in streams:
            stream.stop.set()
    epochs = [e["epoch"] for e in svc.metrics(running)]
    for stream in streams:
        assert stream.status == 200 and stream.error is None, (stream.status, stream.error)
        kinds = stream.kinds()
        assert "job" in kinds and kinds[-1] == "end", kinds
        jobs = [data for kind, data in stream.events if kind == "job"]
        if running in stream.path:
            got = [data["epoch"] for kind, data in stream.events if kind == "epoch"]
            assert got == epochs and jobs[-1] == final
            assert "log" in kinds
        else:
            assert kinds == ["job", "job", "end"] and jobs[-1]["status"] == "cancelled", kinds


@pytest.fixture
def capped(backend_name: str, tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    svc, tokens = start_with_tokens(
        backend_name, tmp_path, {"FITQ_EVENTS_MAX_STREAMS_PER_OWNER": "2"}, worker=False
    )
    yield svc, tokens
    svc.stop()


def open_stream(client: httpx.Client, path: str) -> tuple[ExitStack, httpx.Response, str]:
    """Opens a stream and reads up to its first event (its kind); close the stack to leave."""
    stack = ExitStack()
    resp = stack.enter_context(client.stream("GET", path))
    kind = ""
    if resp.status_code == 200:
        # Kept open with the stack: the stream closes when this iterator is dropped.
        lines = cast(Generator[str, None, None], resp.iter_lines())
        stack.callback(lines.close)
        kind = next(line for line in lines if line.startswith("event:"))[6:].strip()
    else:
        resp.read()
    return stack, resp, kind


def test_an_owners_stream_beyond_the_cap_is_429_until_one_closes(
    capped: tuple[Service, dict[str, str]],
) -> None:
    svc, tokens = capped
    alice, bob = client_of(svc, tokens["alice"]), client_of(svc, tokens["bob"])
    path = f"/v1/jobs/{submit(alice, digits_spec(), 'parked')}/events"
    bobs = f"/v1/jobs/{submit(bob, digits_spec(), 'parked')}/events"
    with ExitStack() as held:
        first, resp, kind = open_stream(alice, path)
        held.enter_context(first)
        assert (resp.status_code, kind) == (200, "job")
        stack, resp, kind = open_stream(alice, path)
        held.enter_context(stack)
        assert (resp.status_code, kind) == (200, "job")

        stack, refused, _ = open_stream(alice, path)
        stack.close()
        assert refused.status_code == 429, refused.status_code
        detail = refused.json()["detail"]
        assert "FITQ_EVENTS_MAX_STREAMS_PER_OWNER=2" in detail and "'alice'" in detail, detail
        assert refused.headers["retry-after"]
        stack, resp, kind = open_stream(bob, bobs)  # bob's streams are his own
        stack.close()
        assert (resp.status_code, kind) == (200, "job")

        first.close()  # alice leaves one stream: within moments, she may open another
        deadline = time.monotonic() + 10
        while True:
            stack, resp, kind = open_stream(alice, path)
            if resp.status_code == 200:
                held.enter_context(stack)
                assert kind == "job"
                break
            stack.close()
            assert resp.status_code == 429, resp.text
            assert time.monotonic() < deadline, "closing a stream never freed its slot"
            time.sleep(0.1)
        stack, resp, _ = open_stream(alice, path)
        stack.close()
        assert resp.status_code == 429, resp.text  # two open again: the cap holds


def test_the_client_follows_a_job_on_one_stream_and_asks_instead_when_refused(
    tmp_path: Path,
) -> None:
    from fitq.client import Client

    svc, tokens = start_with_tokens(
        "sqlite", tmp_path, {"FITQ_EVENTS_MAX_STREAMS_PER_OWNER": "1"}, worker=True
    )
    try:
        client = Client(svc.base_url, tokens["alice"])
        spec = digits_spec(**{"fit.epochs": 6})
        streamed = submit(svc.client, spec, svc.queue)
        rows = list(client.follow(streamed, timeout=180))
        assert [r["epoch"] for r in rows] == [m["epoch"] for m in svc.metrics(streamed)]
        assert [r["epoch"] for r in rows] == list(range(1, 7))
        log = svc.log_text("api")
        assert log.count(f'GET /v1/jobs/{streamed}/events?after_epoch=0 HTTP/1.1" 200') == 1
        assert f"/v1/jobs/{streamed}/metrics?after_epoch" not in log, "the client polled"

        # alice holds her one stream: the client's is refused (429), so it asks instead.
        parked = submit(svc.client, spec, "parked")
        with ExitStack() as held:
            stack, resp, _ = open_stream(
                client_of(svc, tokens["alice"]), f"/v1/jobs/{parked}/events"
            )
            held.enter_context(stack)
            assert resp.status_code == 200
            polled = submit(svc.client, spec, svc.queue)
            rows = list(client.follow(polled, timeout=180))
        assert [r["epoch"] for r in rows] == list(range(1, 7))
        log = svc.log_text("api")
        assert f'GET /v1/jobs/{polled}/events?after_epoch=0 HTTP/1.1" 429' in log
        assert f'GET /v1/jobs/{polled}/metrics?after_epoch=0 HTTP/1.1" 200' in log
    finally:
        svc.stop()

"""A real API with tokens on, flooded with hostile bodies from another process: the
health check and an authorised client keep their answers within 200 ms.

Within 200 ms all but one in twenty: on a two-core machine the scheduler may hold any
one request back for a moment, whatever the API does, while an API that the flood
stalls answers many probes late. None may take a second."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.tokens import create_token
from core.db import make_engine, make_session_factory
from tests.api.test_hostile_bodies import billion_laughs, flat_yaml_list
from tests.conftest import Service, free_port, make_backend

pytestmark = pytest.mark.e2e

MAX_LATENCY_S = 0.2
LATE_SHARE = 0.05
WORST_S = 1.0
FLOOD_S = 3.0

# A client in its own process, so that its work does not slow the one that measures:
# sends one body again and again (10 ms apart) for FLOOD_S seconds, printing each
# answer's status (or the error that ended it) and how long it took.
FLOODER = r"""
import socket, sys, time
port, path, body_file, seconds, token = sys.argv[1:6]
body = open(body_file, "rb").read()
head = (
    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
    + (f"Authorization: Bearer {token}\r\n" if token else "")
    + "\r\n"
).encode()
end = time.monotonic() + float(seconds)
PAUSE = 0.01
while time.monotonic() < end:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(port))) as s:
        try:
            s.sendall(head + body)
        except OSError:
            pass  # answered and closed before the body was all sent
        try:
            answer = s.recv(4096)
            status = answer.split(b" ", 2)[1].decode() if answer else "closed"
        except OSError as exc:
            status = type(exc).__name__
    print(status, time.monotonic() - start, flush=True)
    time.sleep(PAUSE)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    """Only the API, as ``fitq api`` runs it, with tokens on; and one token."""
    from migrations.migrate import upgrade

    backend = make_backend(request.param, tmp_path, "fitq_flood")
    svc = Service(backend, tmp_path / "svc", "flood", extra_env={"FITQ_AUTH": "on"})
    svc.data_dir.mkdir(parents=True)
    upgrade(backend.database_url)
    engine = make_engine(backend.database_url)
    with make_session_factory(engine)() as session:
        token = create_token(session, "alice")
    engine.dispose()
    svc.port = free_port()
    svc.base_url = f"http://127.0.0.1:{svc.port}"
    svc.client = httpx.Client(base_url=svc.base_url, timeout=30)
    svc.start_process("api", "api", "--port", str(svc.port))
    svc.wait_until(svc._ready, 60, "the API to answer /readyz")
    yield svc, token
    svc.stop()


def probe(svc: Service, token: str, seconds: float) -> list[float]:
    """Latencies of /healthz and an authorised GET /v1/jobs, asked in turn for ``seconds``.

    This process's garbage collector is off meanwhile (as timeit has it), so that a
    pause of its own, after the many tests that may have run in it, is not taken for
    the server's.
    """
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    gc.collect()
    gc.disable()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path in ("/healthz", "/v1/jobs"):
                start = time.perf_counter()
                resp = svc.client.get(path, headers=auth)
                latencies.append(time.perf_counter() - start)
                assert resp.status_code == 200, resp.text
            time.sleep(0.02)
    finally:
        gc.enable()
    return latencies


def flood(svc: Service, body: bytes, token: str, probe_token: str, tmp: Path) -> list[str]:
    """Probes the API while another process floods POST /v1/jobs with ``body``.

    Asserts that at most LATE_SHARE of the probes took MAX_LATENCY_S or more and none
    WORST_S; returns the flood's answers.
    """
    quiet = probe(svc, probe_token, 1.0)
    body_file = tmp / "body"
    body_file.write_bytes(body)
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(svc.port), "/v1/jobs", str(body_file), str(FLOOD_S)]
        + [token],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the flooder's interpreter starts
    flooded = probe(svc, probe_token, FLOOD_S - 1.0)
    out, _ = flooder.communicate(timeout=600)
    sent = [(line.split()[0], float(line.split()[1])) for line in out.splitlines()]
    print(
        f"\n{len(body)} bytes from {'a token holder' if token else 'no one'}: {len(sent)} "
        f"requests, answered {sorted({s for s, _ in sent})}, the slowest in "
        f"{max(t for _, t in sent):.3f}s; probes: slowest {max(flooded) * 1000:.1f} ms of "
        f"{len(flooded)} during, {max(quiet) * 1000:.1f} ms of {len(quiet)} before"
    )
    late = [t for t in flooded if t >= MAX_LATENCY_S]
    assert len(late) <= LATE_SHARE * len(flooded), sorted(flooded)[-5:]
    assert max(flooded) < WORST_S, sorted(flooded)[-5:]
    assert len(sent) >= 5 and len(flooded) >= 20, (sent, flooded)
    assert max(t for _, t in sent) < 1.0, "a hostile request took a second or more"
    return [status for status, _ in sent]


BODIES = {"laughs": billion_laughs, "flat-list": flat_yaml_list}


@pytest.mark.parametrize("what", BODIES)
def test_an_anonymous_flood_does_not_slow_the_api(
    api: tuple[Service, str], tmp_path: Path, what: str
) -> None:
    svc, token = api
    answers = flood(svc, BODIES[what](), "", token, tmp_path)
    # 401 from the headers; a sender still sending its body may see the reset instead.
    assert set(answers) <= {"401", "ConnectionResetError"}, answers
    assert "401" in answers
    auth = {"Authorization": f"Bearer {token}"}
    assert svc.client.get("/v1/jobs", headers=auth).json()["items"] == []


@pytest.mark.parametrize("what", BODIES)
def test_a_token_holders_flood_is_refused_fast(
    api: tuple[Service, str], tmp_path: Path, what: str
) -> None:
    svc, token = api
    answers = flood(svc, BODIES[what](), token, token, tmp_path)
    assert set(answers) == {"413"}, answers

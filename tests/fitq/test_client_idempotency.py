"""A submission retried after its answer was lost creates one job, not two.

Between the client and a real API sits a small TCP proxy. It forwards the first
``POST /v1/jobs`` to the API, which stores the job and answers 201; the proxy then
keeps that answer from the client: it drops the connection, answers 502 in its
place, or holds it until the client times out. The client retries, and the API must
find the job the first attempt created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fitq.client import Client
from tests.conftest import ROOT, Service
from tests.factories import digits_spec

BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.post_pending = False  # a POST /v1/jobs went up; its answer has not come back
        self.muted = False  # the answer is held back: nothing more reaches the client

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class LosingProxy:
    """Forwards everything to ``upstream_port``, except the answer to the first
    ``POST /v1/jobs``, which the client never gets: with ``mode`` ``drop`` the proxy
    closes the client's connection, with ``502`` it answers 502 Bad Gateway instead,
    with ``timeout`` it holds the answer until the client gives up.

    ``answers`` lists the status code the API gave each ``POST /v1/jobs``.
    """

    def __init__(self, upstream_port: int, mode: str) -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.armed = True
        self.answers: list[int] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            conn = _Connection(client, upstream)
            threading.Thread(target=self._up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._down, args=(conn,), daemon=True).start()

    def _up(self, conn: _Connection) -> None:
        try:
            while data := conn.client.recv(65536):
                if data.startswith(b"POST /v1/jobs "):
                    conn.post_pending = True
                conn.upstream.sendall(data)
        except OSError:
            pass
        conn.close()

    def _down(self, conn: _Connection) -> None:
        try:
            while data := conn.upstream.recv(65536):
                if conn.post_pending:
                    conn.post_pending = False
                    with self.lock:
                        self.answers.append(int(data.split(b" ", 2)[1]))
                        lose, self.armed = self.armed, False
                    if lose and self.mode == "drop":
                        break
                    if lose and self.mode == "502":
                        conn.client.sendall(BAD_GATEWAY)
                        break
                    conn.muted = conn.muted or lose
                if not conn.muted:
                    conn.client.sendall(data)
        except OSError:
            pass
        conn.close()


@pytest.fixture
def queue() -> str:
    return f"idem-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spec(queue: str) -> dict[str, Any]:
    return {**digits_spec(), "queue": queue}


@pytest.fixture(params=["drop", "502", "timeout"])
def proxy(request: pytest.FixtureRequest, api_only: Service) -> Iterator[LosingProxy]:
    losing = LosingProxy(api_only.port, request.param)
    yield losing
    losing.close()


def jobs_on(api: Service, queue: str) -> list[str]:
    resp = api.client.get("/v1/jobs", params={"queue": queue})
    assert resp.status_code == 200, resp.text
    return [job["id"] for job in resp.json()["items"]]


def test_the_client_retries_a_lost_answer_into_the_same_job(
    api_only: Service, proxy: LosingProxy, spec: dict[str, Any], queue: str
) -> None:
    client = Client(url=proxy.url, retries=3, timeout=5)
    job = client.submit(spec)
    # The first attempt created the job; the retry found it.
    assert proxy.answers == [201, 200]
    assert jobs_on(api_only, queue) == [job["id"]]


def fitq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fitq", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "FITQ_API_URL": url},
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("proxy", ["drop"], indirect=True)
def test_fitq_submit_retries_a_lost_answer_into_the_same_job(
    api_only: Service, proxy: LosingProxy, spec: dict[str, Any], queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = fitq(proxy.url, "submit", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert proxy.answers == [201, 200]
    assert jobs_on(api_only, queue) == [yaml.safe_load(out.stdout)["id"]]


@pytest.mark.parametrize("proxy", ["drop"], indirect=True)
def test_fitq_submit_retries_with_the_pipelines_own_key(
    api_only: Service, proxy: LosingProxy, spec: dict[str, Any], queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    key = f"pipeline-{uuid.uuid4().hex}"
    first = fitq(proxy.url, "submit", str(path), "--idempotency-key", key, "--json")
    assert first.returncode == 0, first.stderr
    assert proxy.answers == [201, 200]
    # A re-run of the pipeline step, straight to the API, finds the same job by the key.
    again = fitq(api_only.base_url, "submit", str(path), "--idempotency-key", key, "--json")
    assert again.returncode == 0, again.stderr
    job_id = yaml.safe_load(first.stdout)["id"]
    assert yaml.safe_load(again.stdout)["id"] == job_id
    assert jobs_on(api_only, queue) == [job_id]

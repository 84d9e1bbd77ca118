"""Fixtures: a migrated database per backend, and a real running service.

The ``service`` fixture starts the API (uvicorn) and a Celery worker as real
processes, on SQLite with the embedded broker and on PostgreSQL with Redis. Where
PostgreSQL or Redis do not answer, the tests that need them skip with the reason;
under ``CI=true`` they fail instead. ``s3_server`` starts a real S3-compatible
server (moto's server mode) as a process, for the artifact store; likewise it
fails under ``CI=true`` when it cannot start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "FITQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FITQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _one_database_per_xdist_worker() -> None:
    """Under pytest-xdist (``-n``), worker ``gwN`` gets its own PostgreSQL schemas (the
    suffix ``_gwN``) and Redis database (N below the run's own), so that the workers
    never share a queue, a table or a broker."""
    global REDIS_URL
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    index = int(worker[2:])
    os.environ["FITQ_TEST_SCHEMA_SUFFIX"] = (
        os.environ.get("FITQ_TEST_SCHEMA_SUFFIX", "") + f"_{worker}"
    )
    base, _, db = REDIS_URL.rpartition("/")
    if int(db) - index < 0:
        raise RuntimeError(f"{REDIS_URL}: too few Redis databases below it for {worker}")
    REDIS_URL = f"{base}/{int(db) - index}"


_one_database_per_xdist_worker()
FINISHED = ("succeeded", "failed", "cancelled")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    name: str
    database_url: str
    broker_url: str | None

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {
            "FITQ_DATA_DIR": str(data_dir),
            "FITQ_DATABASE_URL": self.database_url,
            "FITQ_PROGRESS_INTERVAL": "0.2",
        }
        if self.broker_url:
            env["FITQ_BROKER_URL"] = self.broker_url
        return env


def _postgres_problem() -> str | None:
    try:
        import psycopg
        import redis

        with psycopg.connect(
            POSTGRES_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
        ) as conn:
            conn.execute("SELECT 1")
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - the reason is reported
        return f"PostgreSQL ({POSTGRES_URL}) or Redis ({REDIS_URL}) unreachable: {exc}"
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)


def fresh_postgres_schema(schema: str) -> str:
    """An empty schema of the test database; returns a URL whose tables live in it.

    ``FITQ_TEST_SCHEMA_SUFFIX`` is appended to the name, so that two test runs can share
    one PostgreSQL server without dropping each other's tables.
    """
    import psycopg

    schema += os.environ.get("FITQ_TEST_SCHEMA_SUFFIX", "")

    with psycopg.connect(
        POSTGRES_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True
    ) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"


def make_backend(name: str, tmp: Path, schema: str) -> Backend:
    if name == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp / 'fitq.db'}", None)
    require_postgres()
    return Backend("postgres", fresh_postgres_schema(schema), REDIS_URL)


@dataclass
class S3Server:
    """A running S3-compatible server (moto's server mode) and the environment that
    points boto3 at it."""

    endpoint: str
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "fitq-test",
            "AWS_SECRET_ACCESS_KEY": "fitq-test-secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        ).client("s3", endpoint_url=self.endpoint)

    def new_bucket(self) -> str:
        """A new, empty bucket's name."""
        name = f"fitq-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def _start_s3_server(log: Path) -> S3Server:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=2)
            return S3Server(endpoint, proc)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"moto's server did not answer at {endpoint}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server, started once per session (``moto[server]``, in the
    dev extra)."""
    try:
        server = _start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    except (ImportError, RuntimeError, OSError) as exc:
        if IN_CI:
            pytest.fail(f"CI=true and the S3-compatible server cannot start: {exc}")
        pytest.skip(f"the S3-compatible server cannot start: {exc}")
    yield server
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """An empty database of each kind, migrated to the latest schema."""
    from migrations.migrate import upgrade

    backend = make_backend(request.param, tmp_path, "fitq_unit")
    upgrade(backend.database_url)
    return backend


@dataclass
class Service:
    """A running API and worker, and an HTTP client for them."""

    backend: Backend
    data_dir: Path
    queue: str
    extra_env: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    expected_alive: set[str] = field(default_factory=set)
    logs: dict[str, Path] = field(default_factory=dict)
    client: httpx.Client = field(init=False)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
        env.update(self.backend.env(self.data_dir))
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        return env

    def settings(self) -> Settings:
        """The settings the service's processes run with, for a test that acts as one."""
        from core.settings import Settings

        env = self.backend.env(self.data_dir)
        return Settings(
            data_dir=Path(env["FITQ_DATA_DIR"]),
            database_url=env["FITQ_DATABASE_URL"],
            broker_url=env.get("FITQ_BROKER_URL"),
        )

    def start_process(self, name: str, *args: str) -> None:
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        self.expected_alive.add(name)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "fitq", *args],
            cwd=self.data_dir,
            env=self.env(),
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        from migrations.migrate import upgrade

        self.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.backend.database_url)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.start_process("api", "api", "--port", str(self.port))
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        self.start_worker()
        self.wait_until(lambda: self._ready(), 60, "the API to answer /readyz")

    def restart_api(self, down_seconds: float = 2.0) -> None:
        """Stops the API and starts it again on the same port after ``down_seconds``."""
        self.kill("api", signal.SIGTERM, children_too=False)
        self.procs["api"].wait(timeout=20)
        time.sleep(down_seconds)
        self.start_process("api", "api", "--port", str(self.port))
        self.wait_until(lambda: self._ready(), 60, "the API to answer again")

    def start_worker(self, name: str = "worker") -> None:
        """Starts a worker and waits until it takes jobs."""
        self.start_process(name, "worker", "--queues", self.queue)
        self.wait_until(lambda: "ready." in self.log_text(name), 60, name)

    def start_dispatcher(self) -> None:
        self.start_process("dispatcher", "dispatcher")

    def pool_children(self, name: str = "worker") -> list[int]:
        """The pids of a worker's pool processes (where jobs train)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.procs[name].pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    def _ready(self) -> bool:
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if self.logs[name].exists() else ""

    def wait_until(self, check: Any, timeout: float, what: str, poll: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None and name in self.expected_alive:
                    raise AssertionError(
                        f"{name} exited ({proc.returncode}) while waiting for "
                        f"{what}:\n{self.log_text(name)[-3000:]}"
                    )
            time.sleep(poll)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}\n"
            f"worker log tail:\n{self.log_text('worker')[-3000:]}"
        )

    def submit(self, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
        spec = {**spec, "queue": self.queue}
        resp = self.client.post("/v1/jobs", json=spec, headers=headers)
        assert resp.status_code in (200, 201), resp.text
        body: dict[str, Any] = resp.json()
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        try:
            resp = self.client.get(f"/v1/jobs/{job_id}")
        except httpx.RemoteProtocolError:
            # The server closed this kept-alive connection as the request went out
            # (uvicorn closes one idle for 5 s; a loaded machine can stall a poll that
            # long): a GET is safe to send again, as fitq's own client does.
            resp = self.client.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_for(
        self, job_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 120
    ) -> dict[str, Any]:
        box: dict[str, Any] = {}

        def check() -> bool:
            box["job"] = self.job(job_id)
            return box["job"]["status"] in statuses

        self.wait_until(check, timeout, f"job {job_id} to reach {statuses}")
        return box["job"]

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
        return items

    def kill(self, name: str, sig: int = signal.SIGKILL, children_too: bool = True) -> None:
        """Sends ``sig`` to a process (and its pool children): a crash, a freeze."""
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.expected_alive.discard(name)
        pids = (self.pool_children(name) if children_too else []) + [self.procs[name].pid]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        if sig == signal.SIGKILL:
            self.procs[name].wait(timeout=10)

    def stop(self) -> None:
        orphans = [
            pid
            for name in self.procs
            if name.startswith("worker")
            for pid in self.pool_children(name)
        ]
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in orphans:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                continue
        self.client.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A real API and worker on each backend, shared by the tests of a session."""
    tmp = tmp_path_factory.mktemp(f"svc-{request.param}")
    svc = Service(make_backend(request.param, tmp, "fitq_e2e"), tmp, f"test-{uuid.uuid4().hex[:8]}")
    svc.start()
    yield svc
    svc.stop()

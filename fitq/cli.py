"""``fitq``: start the service on its embedded default, or its parts one by one.

fitq up [--host 127.0.0.1] [--port 8000]   migrate, then the API, one worker, the dispatcher
fitq api [--host] [--port]                 the API alone
fitq worker [--queues q1,q2] [--gpus all|0,1] [--gpus-per-worker N] [--events]
                                           Celery workers, concurrency 1: one per GPU
                                           (or N GPUs) with --gpus, else one
fitq dispatcher                            requeue jobs of dead workers, republish lost ones
fitq flower [--address] [--port 5555]      Flower, Celery's monitor, on the configured broker
fitq migrate                               bring the database to the latest schema
fitq token create --name NAME [--admin]    a bearer token (also: token list, token revoke)
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fitq.children import spawn, stay_with_parent
from fitq.groups import Declared, verbatim

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.settings import Settings

WORKER_STOP_SECONDS = 30
# On SIGTERM or Ctrl-C the API answers the requests under way for this long, then closes
# what is still open: the event streams, which never end by themselves while a job runs
# (their clients reconnect, from where they were, to the next API).
SHUTDOWN_GRACE_SECONDS = 5
F = TypeVar("F", bound=Callable[..., Any])


@click.group(
    "fitq",
    cls=Declared,
    help=verbatim(__doc__ or ""),
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    pass


def _server_options(func: F) -> F:
    func = click.option(
        "--port", type=int, default=8000, metavar="PORT", help="port to listen on (8000)"
    )(func)
    return click.option(
        "--host", default="127.0.0.1", metavar="HOST", help="address to listen on (127.0.0.1)"
    )(func)


def _migrate(settings: Settings) -> None:
    from migrations.migrate import upgrade

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    if settings.artifacts_url:
        from storage.artifacts import artifact_store

        artifact_store(settings).ensure_ready()


def _describe(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    db = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    broker = (
        f"embedded (files under {settings.broker_folder})"
        if settings.broker_is_embedded
        else settings.resolved_broker_url.split("@")[-1]
    )
    artifacts = str(settings.resolved_artifacts_dir)
    if settings.artifacts_url:
        artifacts = f"{settings.artifacts_url} (local cache {artifacts})"
    return f"database: {db}\nbroker:   {broker}\nartifacts: {artifacts}"


def _serve_api(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from api.main import create_app
    from core.db import make_engine
    from core.errors import DatabaseNotMigrated
    from migrations.migrate import check_migrated

    try:
        check_migrated(make_engine(settings.resolved_database_url))
    except DatabaseNotMigrated as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return 2
    if settings.auth_enabled(host):
        print(
            "fitq: auth is on: every request needs 'Authorization: Bearer <token>' "
            "(fitq token create --name NAME)",
            flush=True,
        )
    else:
        print(
            f"fitq: auth is off: the API at {host} is open to anyone who can reach it "
            "(FITQ_AUTH=on to require tokens)",
            flush=True,
        )
    uvicorn.run(
        create_app(settings, host=host),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    return 0


def _dispatcher_thread(settings: Settings) -> threading.Event:
    from core.db import make_engine, make_session_factory
    from dispatcher.dispatch import run_forever
    from queueing.broker import make_celery

    stop = threading.Event()
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    threading.Thread(
        target=run_forever,
        args=(factory, make_celery(settings, name="fitq-dispatcher"), settings, stop),
        name="fitq-dispatcher",
        daemon=True,
    ).start()
    return stop


@cli.command("up", short_help="migrate, then run the API and one worker")
@_server_options
@click.option(
    "--queues", default="default", metavar="QUEUES", help="queues the worker takes (default)"
)
def up(host: str, port: int, queues: str) -> int:
    """migrate, then run the API and one worker"""
    from core.settings import get_settings

    settings = get_settings()
    _migrate(settings)
    stop_dispatcher = _dispatcher_thread(settings)
    worker = spawn(
        ["worker", "--queues", queues],
        {**os.environ, "FITQ_DATA_DIR": str(settings.resolved_data_dir)},
    )

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(
        f"fitq: starting the API at http://{host}:{port}  (docs at "
        f"http://{host}:{port}/docs)\n"
        f"fitq: one worker on queues {queues!r} (pid {worker.pid}), and the dispatcher\n"
        f"{_describe(settings)}",
        flush=True,
    )
    try:
        return _serve_api(settings, host, port)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_dispatcher.set()
        if worker.poll() is None:
            worker.terminate()
            deadline = time.monotonic() + WORKER_STOP_SECONDS
            while worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if worker.poll() is None:
                worker.kill()


@cli.command("api", short_help="run the API")
@_server_options
def api(host: str, port: int) -> int:
    """run the API"""
    from core.settings import get_settings

    return _serve_api(get_settings(), host, port)


WORKER = "run Celery workers, concurrency 1: one per GPU with --gpus, else one"


@cli.command("worker", help=WORKER, short_help=WORKER)
@click.option(
    "--queues", default="default", metavar="QUEUES", help="comma-separated queues (default)"
)
@click.option(
    "--gpus",
    metavar="GPUS",
    help="'all' or GPU indices such as '0,1': one worker per GPU, each pinned with "
    "CUDA_VISIBLE_DEVICES; 'all' on a machine without GPUs: one CPU worker",
)
@click.option(
    "--gpus-per-worker",
    type=int,
    default=1,
    metavar="GPUS_PER_WORKER",
    help="GPUs each worker gets, for jobs with resources.gpus > 1 (1)",
)
@click.option("--events", is_flag=True, help="send task events, for Flower (fitq flower)")
@click.option("--loglevel", default="INFO", metavar="LOGLEVEL")
def worker(queues: str, gpus: str | None, gpus_per_worker: int, events: bool, loglevel: str) -> int:
    from core.settings import get_settings
    from queueing.devices import gpu_groups, queues_for, worker_devices

    settings = get_settings()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if gpus is not None:
        from fitq.workers import supervise

        try:
            groups = gpu_groups(gpus, gpus_per_worker)
        except ValueError as exc:
            print(f"fitq: {exc}", file=sys.stderr)
            return 2
        child = ["--queues", ",".join(names), "--loglevel", loglevel]
        return supervise(groups, child + (["--events"] if events else []))
    if gpus_per_worker != 1:
        print("fitq: --gpus-per-worker goes with --gpus", file=sys.stderr)
        return 2
    devices = worker_devices(os.environ, settings.logical_cpus)
    if devices.count > settings.max_gpus_per_worker:
        print(
            f"fitq: this worker has {devices.count} devices, but the API refuses jobs asking "
            f"for more than FITQ_MAX_GPUS_PER_WORKER={settings.max_gpus_per_worker}",
            file=sys.stderr,
            flush=True,
        )
    from worker.celery_app import run_worker

    tag = f"gpu{devices.gpus.replace(',', '_')}-" if devices.gpus else ""
    name = f"fitq-{tag}{os.getpid()}@{socket.gethostname()}"
    run_worker(name, queues_for(names, devices.count), devices, loglevel, events)
    return 0


DISPATCHER = "requeue the jobs of dead workers and republish lost messages"


@cli.command("dispatcher", help=DISPATCHER, short_help=DISPATCHER)
def dispatcher() -> int:
    import logging

    from core.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = _dispatcher_thread(get_settings())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        stop.set()
    return 0


FLOWER = "run Flower (pip install 'fitq[ops]'): what each worker runs, live"


@cli.command("flower", help=FLOWER, short_help=FLOWER)
@click.option("--address", default="127.0.0.1", metavar="ADDRESS", help="address to listen on")
@click.option("--port", type=int, default=5555, metavar="PORT", help="port to listen on (5555)")
def flower(address: str, port: int) -> int:
    from core.settings import get_settings
    from queueing.broker import make_celery

    app = make_celery(get_settings(), name="fitq-flower")
    # Flower reads its other options (FLOWER_BASIC_AUTH, ...) from the environment.
    code = app.start(["flower", f"--address={address}", f"--port={port}"])
    return int(code or 0)


@cli.group("token", cls=Declared, short_help="create, list and revoke API tokens")
def token() -> None:
    """create, list and revoke API tokens"""


def _with_tokens(action: Callable[[Session], None]) -> int:
    """Runs ``action`` in a session of the configured database; 2 if it is not
    migrated, 1 if the action is refused (a name taken, an unknown name)."""
    from core.db import make_engine, make_session_factory
    from core.errors import Conflict, DatabaseNotMigrated, NotFound
    from core.settings import get_settings
    from migrations.migrate import check_migrated

    engine = make_engine(get_settings().resolved_database_url)
    try:
        check_migrated(engine)
    except DatabaseNotMigrated as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return 2
    with make_session_factory(engine)() as session:
        try:
            action(session)
        except (Conflict, NotFound, ValueError) as exc:
            print(f"fitq: {exc}", file=sys.stderr)
            return 1
    return 0


@token.command("create", short_help="create a token and print it (once)")
@click.option("--name", required=True, metavar="NAME", help="the owner the token stands for")
@click.option("--admin", is_flag=True, help="sees and acts on every job")
def token_create(name: str, admin: bool) -> int:
    """create a token and print it (once)"""

    def create(session: Session) -> None:
        from api.tokens import create_token

        print(create_token(session, name, admin=admin))
        print(
            f"fitq: token for {name!r}{' (admin)' if admin else ''}; it is shown once, keep it",
            file=sys.stderr,
        )

    return _with_tokens(create)


@token.command("list", short_help="list tokens (never their values)")
def token_list() -> int:
    """list tokens (never their values)"""

    def show(session: Session) -> None:
        from api.tokens import list_tokens

        for row in list_tokens(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            print(
                f"{row.name}\t{'admin' if row.admin else 'user'}\t{state}\t"
                f"created {row.created_at:%Y-%m-%d %H:%M}"
            )

    return _with_tokens(show)


@token.command("revoke", short_help="revoke an owner's token")
@click.argument("name")
def token_revoke(name: str) -> int:
    """revoke an owner's token"""

    def revoke(session: Session) -> None:
        from api.tokens import revoke_token

        revoke_token(session, name)
        print(f"fitq: revoked the token of {name!r}")

    return _with_tokens(revoke)


# The client commands (fitq.commands) are imported only when one of them runs.
for _name in ("submit", "jobs", "datasets", "models"):
    cli.add_lazy(_name, f"fitq.commands:{_name}")


MIGRATE = "migrate the database to the latest schema"


@cli.command("migrate", help=MIGRATE, short_help=MIGRATE)
def migrate() -> int:
    from core.settings import get_settings

    settings = get_settings()
    _migrate(settings)
    print(f"fitq: database migrated to the latest schema\n{_describe(settings)}")
    return 0


def parse(argv: Sequence[str]) -> SimpleNamespace:
    """What ``fitq ARGV`` would run, checked as ``fitq`` checks it, without running it.

    Returns:
        ``command``, the first word (``worker``, ``token``...), and the parameters of
        the command that would run, by name (``queues``, ``gpus``...).

    Raises:
        click.UsageError: ``fitq`` would refuse these arguments.
    """
    command: click.Command = cli
    ctx = click.Context(cli, info_name="fitq")
    words = list(argv)
    path: list[str] = []
    while isinstance(command, click.Group):
        if not words:
            raise click.UsageError("Missing command.", ctx)
        name, *words = words
        found = command.get_command(ctx, name)
        if found is None:
            raise click.UsageError(f"No such command {name!r}.", ctx)
        path.append(name)
        if isinstance(found, click.Group):
            ctx = click.Context(found, info_name=name, parent=ctx)
        command = found
    leaf = command.make_context(path[-1], words, parent=ctx)
    return SimpleNamespace(command=path[0], **leaf.params)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``fitq ARGV`` (the process's own arguments by default); returns the exit code."""
    stay_with_parent()
    try:
        code = cli.main(
            args=None if argv is None else list(argv), prog_name="fitq", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise exc.__cause__ from None
        print("Aborted!", file=sys.stderr)
        return 1
    return int(code or 0)

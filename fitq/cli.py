"""``fitq``: start the service on its embedded default, or its parts one by one.

fitq up [--host 127.0.0.1] [--port 8000]   migrate, then the API, one worker, the dispatcher
fitq api [--host] [--port]                 the API alone
fitq worker [--queues q1,q2]               one Celery worker (concurrency 1)
fitq dispatcher                            requeue jobs of dead workers, republish lost ones
fitq migrate                               bring the database to the latest schema
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from models.errors import DatabaseNotMigrated
from models.settings import Settings, get_settings

WORKER_STOP_SECONDS = 30


def _migrate(settings: Settings) -> None:
    from models.migrate import upgrade

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)


def _describe(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    db = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    broker = (
        f"embedded (files under {settings.broker_folder})"
        if settings.broker_is_embedded
        else settings.resolved_broker_url.split("@")[-1]
    )
    return f"database: {db}\nbroker:   {broker}\nartifacts: {settings.resolved_artifacts_dir}"


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    _migrate(settings)
    print(f"fitq: database migrated to the latest schema\n{_describe(settings)}")
    return 0


def _serve_api(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from api.main import create_app
    from models.db import make_engine
    from models.migrate import check_migrated

    try:
        check_migrated(make_engine(settings.resolved_database_url))
    except DatabaseNotMigrated as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    return _serve_api(get_settings(), args.host, args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.celery_app import app

    name = f"fitq-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            "--queues",
            args.queues,
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--hostname",
            name,
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def _dispatcher_thread(settings: Settings) -> threading.Event:
    from models.db import make_engine, make_session_factory
    from models.dispatch import run_forever
    from models.queueing import make_celery

    stop = threading.Event()
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    threading.Thread(
        target=run_forever,
        args=(factory, make_celery(settings, name="fitq-dispatcher"), settings, stop),
        name="fitq-dispatcher",
        daemon=True,
    ).start()
    return stop


def cmd_dispatcher(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = _dispatcher_thread(get_settings())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    _migrate(settings)
    stop_dispatcher = _dispatcher_thread(settings)
    worker = subprocess.Popen(
        [sys.executable, "-m", "fitq", "worker", "--queues", args.queues],
        env={**os.environ, "FITQ_DATA_DIR": str(settings.resolved_data_dir)},
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(
        f"fitq: starting the API at http://{args.host}:{args.port}  (docs at "
        f"http://{args.host}:{args.port}/docs)\n"
        f"fitq: one worker on queues {args.queues!r} (pid {worker.pid}), and the dispatcher\n"
        f"{_describe(settings)}",
        flush=True,
    )
    try:
        return _serve_api(settings, args.host, args.port)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def server(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")

    up = sub.add_parser("up", help="migrate, then run the API and one worker")
    server(up)
    up.add_argument("--queues", default="default", help="queues the worker takes (default)")
    up.set_defaults(func=cmd_up)
    api = sub.add_parser("api", help="run the API")
    server(api)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="run one Celery worker, concurrency 1")
    worker.add_argument("--queues", default="default", help="comma-separated queues (default)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)
    dispatcher = sub.add_parser(
        "dispatcher", help="requeue the jobs of dead workers and republish lost messages"
    )
    dispatcher.set_defaults(func=cmd_dispatcher)
    migrate = sub.add_parser("migrate", help="migrate the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result

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

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from core.errors import DatabaseNotMigrated
from core.settings import Settings, get_settings

WORKER_STOP_SECONDS = 30


def _migrate(settings: Settings) -> None:
    from migrations.migrate import upgrade

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
    from core.db import make_engine
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
    uvicorn.run(create_app(settings, host=host), host=host, port=port, log_level="info")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    return _serve_api(get_settings(), args.host, args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from queueing.devices import gpu_groups, queues_for, worker_devices

    settings = get_settings()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if args.gpus is not None:
        from fitq.workers import supervise

        try:
            groups = gpu_groups(args.gpus, args.gpus_per_worker)
        except ValueError as exc:
            print(f"fitq: {exc}", file=sys.stderr)
            return 2
        child = ["--queues", ",".join(queues), "--loglevel", args.loglevel]
        return supervise(groups, child + (["--events"] if args.events else []))
    if args.gpus_per_worker != 1:
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
    run_worker(name, queues_for(queues, devices.count), devices, args.loglevel, args.events)
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


def cmd_flower(args: argparse.Namespace) -> int:
    from queueing.broker import make_celery

    app = make_celery(get_settings(), name="fitq-flower")
    # Flower reads its other options (FLOWER_BASIC_AUTH, ...) from the environment.
    code = app.start(["flower", f"--address={args.address}", f"--port={args.port}"])
    return int(code or 0)


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


def cmd_token(args: argparse.Namespace) -> int:
    from api.tokens import create_token, list_tokens, revoke_token
    from core.db import make_engine, make_session_factory
    from core.errors import Conflict, NotFound
    from migrations.migrate import check_migrated

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        check_migrated(engine)
    except DatabaseNotMigrated as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return 2
    with make_session_factory(engine)() as session:
        try:
            if args.token_command == "create":
                token = create_token(session, args.name, admin=args.admin)
                print(token)
                print(
                    f"fitq: token for {args.name!r}{' (admin)' if args.admin else ''}; it is "
                    "shown once, keep it",
                    file=sys.stderr,
                )
            elif args.token_command == "list":
                for row in list_tokens(session):
                    state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                    print(
                        f"{row.name}\t{'admin' if row.admin else 'user'}\t{state}\t"
                        f"created {row.created_at:%Y-%m-%d %H:%M}"
                    )
            else:
                revoke_token(session, args.name)
                print(f"fitq: revoked the token of {args.name!r}")
        except (Conflict, NotFound, ValueError) as exc:
            print(f"fitq: {exc}", file=sys.stderr)
            return 1
    return 0


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
    worker = sub.add_parser(
        "worker", help="run Celery workers, concurrency 1: one per GPU with --gpus, else one"
    )
    worker.add_argument("--queues", default="default", help="comma-separated queues (default)")
    worker.add_argument(
        "--gpus",
        help="'all' or GPU indices such as '0,1': one worker per GPU, each pinned with "
        "CUDA_VISIBLE_DEVICES; 'all' on a machine without GPUs: one CPU worker",
    )
    worker.add_argument(
        "--gpus-per-worker",
        type=int,
        default=1,
        help="GPUs each worker gets, for jobs with resources.gpus > 1 (1)",
    )
    worker.add_argument(
        "--events", action="store_true", help="send task events, for Flower (fitq flower)"
    )
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)
    dispatcher = sub.add_parser(
        "dispatcher", help="requeue the jobs of dead workers and republish lost messages"
    )
    dispatcher.set_defaults(func=cmd_dispatcher)
    flower = sub.add_parser(
        "flower", help="run Flower (pip install 'fitq[ops]'): what each worker runs, live"
    )
    flower.add_argument("--address", default="127.0.0.1", help="address to listen on")
    flower.add_argument("--port", type=int, default=5555, help="port to listen on (5555)")
    flower.set_defaults(func=cmd_flower)
    token = sub.add_parser("token", help="create, list and revoke API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--name", required=True, help="the owner the token stands for")
    create.add_argument("--admin", action="store_true", help="sees and acts on every job")
    token_sub.add_parser("list", help="list tokens (never their values)")
    revoke = token_sub.add_parser("revoke", help="revoke an owner's token")
    revoke.add_argument("name")
    token.set_defaults(func=cmd_token)
    from fitq.commands import add_parsers

    add_parsers(sub)
    migrate = sub.add_parser("migrate", help="migrate the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result

"""Where a steady epoch's time goes between the plain script and a job: arm by arm.

Every arm trains the digits fit of ``bench/digits.py`` (20 epochs; a run's figure is
the mean of its epochs 2 to 20, each timed from ``on_epoch_begin`` to ``on_epoch_end``)
in a fresh process, and the arms of a round run one after the other, in an order that
alternates between rounds, so that the machine's drift falls on all of them alike. Each
arm is compared with the plain script of the same round (the paired ratio).

Service arms (``--arms``, run on one embedded-default service, SQLite and the
filesystem broker, started once):

- ``plain``: ``bench/digits.py`` while the service sits idle beside it;
- ``job``: the same fit as a job (``bench.run.digits_job``), nobody watching it: the
  client sleeps, then reads the job once it has ended;
- ``followed``: the job with a client following its event stream, as the dashboard and
  ``fitq submit --follow`` do.

Process arms (``--contexts``, no service): the plain fit in a fresh process (``plain``),
after the pool child's warm-up fit (``warm``), in a process forked from one that
imported the worker's Celery app (``fork``), and through fitq's own runner with its
reporting callback and a ``JobWriter`` on SQLite (``runner``).

``--nice N`` runs the API and this client at niceness N (the worker and its pool
children keep theirs): on a machine with few cores, the CPU that serving a watched job
takes then yields to training.

Time slices (``--sliced``): the plain script and one long job through a real ``fitq up``
train at the same time, in turns (``SlicedRun``, ``take_turns``): epochs seconds apart
are compared, which cancels the drift that makes single runs spread by 10 to 25 % here.
``--against`` puts a process in the service's place (``processes_run``): a second plain
script, fitq's runner, the plain fit forked from a process that imported the worker's
app (from its main thread, ``pool``, or another thread, ``pool-thread``), fitq's runner
so forked (``pool-runner``), or the plain fit as a Celery task in a live worker's pool
process, called where the task runs (``celery``) or on a fresh thread (``celery-fresh``,
as fitq's worker trains: ``worker.fresh_stack``), or the plain fit on a fresh thread of
a plain process (``thread``). ``--hold`` keeps the API and the worker's parent stopped
while the job trains. Each sliced run also prints each side's CPU an epoch by thread
(``thread_cpu`` at every stop, ``thread_report``) and the machine's busy CPU an epoch
in each side's turns, with what was outside its own threads (``StopReadings``,
``machine_report``).

Stack depth (``--depth``): what an eager op costs called that many extra Python frames
deep, in one process, in turns, 5 rounds per ``--rounds`` (``depth_run``).

    python -m bench.epoch_gap [--rounds 6] [--arms plain,job,followed] [--nice 10]
    python -m bench.epoch_gap --contexts [--rounds 6] [--arms plain,warm,fork,runner]
    python -m bench.epoch_gap --sliced [--epochs 400] [--quantum 2] [--unwatched] [--hold]
    python -m bench.epoch_gap --sliced --against plain|runner|pool [--epochs 400]
    python -m bench.epoch_gap --sliced --against pool-thread|pool-runner|celery|celery-fresh|thread
    python -m bench.epoch_gap --depth 0,30,90 [--rounds 6]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import itertools
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    QUEUE,
    SMALL_JOB,
    BenchService,
    EmbeddedDefault,
    cpu_seconds,
    digits_job,
    parse_ts,
    run_plain,
    service_digits,
)
from core.settings import Settings  # noqa: E402
from models.file_names import FINAL_MODEL_FILE  # noqa: E402
from tests.conftest import FINISHED, free_port  # noqa: E402


def steady(epochs: list[float]) -> float:
    return statistics.fmean(epochs[1:])


# --------------------------------------------------------------------------- service


class ServiceArms:
    """The service arms, on one running service."""

    def __init__(self, work: Path, nice: int | None) -> None:
        data = work / "service"
        data.mkdir(parents=True)
        url = f"sqlite:///{data.resolve() / 'fitq.db'}"
        self.work = work
        self.svc = BenchService(EmbeddedDefault("sqlite", url, None), data, QUEUE)
        self.svc.start()
        warm = self.svc.submit(SMALL_JOB)
        self.svc.wait_finished(warm["id"])
        self.svc.wait_warm_child()
        if nice is not None:
            os.setpriority(os.PRIO_PROCESS, self.svc.procs["api"].pid, nice)
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        self.spec = digits_job()
        self.runs = 0

    def run(self, arm: str) -> float:
        self.runs += 1
        if arm == "plain":
            return steady(run_plain(self.work, self.runs)["epoch_s"])
        if arm == "followed":
            epochs = service_digits(self.svc, self.spec)["epoch_s"]
        elif arm == "job":
            job = self.svc.submit(self.spec)
            time.sleep(6.0)  # about the job's length: no request while it trains
            self.svc.wait_finished(job["id"])
            epochs = [row["duration_s"] for row in self.svc.metrics(job["id"])]
        else:
            raise ValueError(f"unknown service arm {arm!r}")
        self.svc.wait_warm_child()
        return steady(epochs)

    def close(self) -> None:
        self.svc.stop()


# --------------------------------------------------------------------------- contexts


def _warm() -> None:
    """What the pool child does before its first job (``worker.celery_app._warm_up``)."""
    from worker.devices import configure
    from worker.training.runner import warm_up

    configure(1)
    warm_up()


def _plain_fit(out: Path, warm: bool, epochs: int = 20) -> None:
    from bench.digits import SEED, EpochClock, digits_arrays, digits_model, fit_digits, seed

    if warm:
        _warm()
    seed(SEED)
    data, model, clock = digits_arrays(), digits_model(), EpochClock()
    with contextlib.redirect_stdout(io.StringIO()):
        fit_digits(model, data, [clock], epochs)
    out.write_text(json.dumps({"epoch_s": clock.spans, "epoch_end": clock.ends}))


def _runner_fit(out: Path, epochs: int) -> None:
    import datetime as dt

    from sqlalchemy import select

    from bench.run import CallbackBench
    from models.tables import EpochMetric
    from worker.training.runner import train

    work = out.parent / f"runner-{os.getpid()}"
    work.mkdir()
    bench = CallbackBench(work)
    bench.spec = bench.spec.model_copy(
        update={"fit": bench.spec.fit.model_copy(update={"epochs": epochs})}
    )
    writer = bench.writer(bench.claimed_store())
    with contextlib.redirect_stdout(io.StringIO()):
        train(bench.spec, work / "job", writer, bench.settings.progress_interval)
    writer.close()
    with bench.factory() as session:
        rows = session.execute(
            select(EpochMetric.duration_s, EpochMetric.recorded_at).order_by(EpochMetric.epoch)
        ).all()
    ends = [(t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() for _, t in rows]
    out.write_text(json.dumps({"epoch_s": [d for d, _ in rows], "epoch_end": ends}))


def context_child(arm: str, out: Path, epochs: int = 20) -> None:
    """One fit, in this fresh process, in the context ``arm`` names."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if arm in ("fork", "pool", "pool-runner", "pool-thread"):
        import worker.celery_app  # noqa: F401  what the worker's parent has imported

        def forked() -> None:
            pid = os.fork()
            if pid == 0:
                try:
                    if arm == "pool-runner":
                        _warm()
                        _runner_fit(out, epochs)
                    else:
                        _plain_fit(out, warm=arm != "fork", epochs=epochs)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)

        if arm == "pool-thread":  # forked from a thread other than the main one
            thread = threading.Thread(target=forked)
            thread.start()
            thread.join()
        else:
            forked()
    elif arm == "runner":
        _runner_fit(out, epochs)
    elif arm in ("celery", "celery-fresh"):
        with tempfile.TemporaryDirectory(prefix="fitq-celery-") as tmp:
            os.environ["FITQ_DATA_DIR"] = tmp  # before the worker's app reads its settings
            from bench import celery_fit

            celery_fit.run(out, epochs, fresh=arm == "celery-fresh")
    elif arm in ("plain", "warm"):
        _plain_fit(out, warm=arm == "warm", epochs=epochs)
    elif arm == "thread":  # the plain fit on a thread of its own, as fitq's worker trains
        from worker.fresh_stack import on_fresh_stack

        on_fresh_stack(_plain_fit, out, warm=False, epochs=epochs)
    else:
        raise ValueError(f"unknown context arm {arm!r}")


class ContextArms:
    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, arm: str) -> float:
        out = self.work / "epochs.json"
        out.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bench.epoch_gap", "--child", arm, str(out)],
            cwd=ROOT,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        return steady(json.loads(out.read_text())["epoch_s"])

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- time slices


def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants, as they are now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _send(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _roles(up: int, client: int | None) -> dict[int, str]:
    """What each process of the service's group is: ``fitq up`` (the API and the
    dispatcher's thread), the worker's parent, its pool child, the client."""
    roles = {up: "api+dispatcher"} | ({client: "client"} if client else {})
    for proc in _tree(up)[1:]:
        with contextlib.suppress(psutil.Error):
            roles[proc.pid] = "pool child" if proc.ppid() != up else "worker parent"
    return roles


def _busy(procs: list[psutil.Process]) -> float:
    return sum(cpu_seconds(proc.pid) or 0.0 for proc in procs)


def thread_cpu(side: str, procs: list[tuple[str, psutil.Process]]) -> dict[str, float]:
    """CPU seconds so far of each thread of ``procs`` (each with what it is), keyed
    ``side/process/thread/tid``: a thread by the name the kernel knows it by (``main``
    for a process's first thread; fitq's own are ``fitq-train`` and ``fitq-writer``,
    TensorFlow's ``tf_Compute`` and the like)."""
    out: dict[str, float] = {}
    for role, proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            for t in proc.threads():
                name = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
                name = "main" if t.id == proc.pid else name
                out[f"{side}/{role}/{name}/{t.id}"] = t.user_time + t.system_time
    return out


def _labelled(procs: list[psutil.Process]) -> list[tuple[str, psutil.Process]]:
    """A process and its descendants, as ``main`` and ``child``."""
    return [("child" if n else "main", proc) for n, proc in enumerate(procs)]


def thread_report(run: dict[str, Any], share: tuple[float, float] = (0.2, 0.9)) -> dict[str, Any]:
    """CPU milliseconds an epoch of each side, by thread, between two of the moments both
    sides were stopped (``run["threads"]``: at ``share`` of the way through them), over
    the epochs each side ended in between; threads of one name in a process are added up."""
    series = run.get("threads") or []
    if len(series) < 10:
        return {}
    (t0, first), (t1, last) = (series[int(len(series) * f)] for f in share)
    out: dict[str, Any] = {"window_s": t1 - t0}
    for side in ("service", "plain"):
        n = sum(1 for _, end in run[side] if t0 <= end <= t1)
        used: dict[str, float] = {}
        for key, seconds in last.items():
            if key.startswith(side + "/"):
                group = key.rsplit("/", 1)[0].split("/", 1)[1]
                used[group] = used.get(group, 0.0) + seconds - first.get(key, 0.0)
        ms = {k: v * 1000 / max(n, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        out[side] = {
            "epochs": n,
            "cpu_ms_per_epoch": sum(ms.values()),
            "by_thread_ms": {k: round(v, 3) for k, v in ms.items() if v >= 0.01},
        }
        print(
            f"{side}: {n} epochs, {out[side]['cpu_ms_per_epoch']:.2f} CPU-ms an epoch: "
            + ", ".join(f"{k} {v:.2f}" for k, v in out[side]["by_thread_ms"].items()),
            flush=True,
        )
    return out | machine_report(run, (t0, t1), out)


def machine_report(
    run: dict[str, Any], window: tuple[float, float], threads: dict[str, Any]
) -> dict[str, Any]:
    """The machine's busy CPU-ms an epoch in each side's turns within ``window``, and how
    much of it was outside that side's own threads (kernel threads, interrupts, other
    processes), with the CPU time the hypervisor took: what per-thread accounting misses,
    as the I/O a side causes. Each change between two readings goes to the side whose
    turn ended at the later one."""
    readings = run.get("machine") or []
    if not readings:
        return {}
    spent = {"service": [0.0, 0.0], "plain": [0.0, 0.0]}
    for (_, _, busy0, steal0), (at, ended, busy, steal) in itertools.pairwise(readings):
        if window[0] < at <= window[1] and ended in spent:
            spent[ended][0] += busy - busy0
            spent[ended][1] += steal - steal0
    out: dict[str, Any] = {}
    for side, (busy, steal) in spent.items():
        n = max(threads[side]["epochs"], 1)
        busy_ms = busy * 1000 / n
        out[side] = {
            "busy_ms_per_epoch": busy_ms,
            "outside_ms_per_epoch": busy_ms - threads[side]["cpu_ms_per_epoch"],
            "steal_ms_per_epoch": steal * 1000 / n,
        }
    print(
        "machine, CPU-ms an epoch (outside the side's threads; stolen): "
        + ", ".join(
            f"{side} {m['busy_ms_per_epoch']:.2f} ({m['outside_ms_per_epoch']:.2f}; "
            f"{m['steal_ms_per_epoch']:.2f})"
            for side, m in out.items()
        ),
        flush=True,
    )
    return {"machine": out}


class StopReadings:
    """What is read each time both sides are stopped: every thread's CPU time
    (``threads``, a ``thread_cpu`` reading of both sides) and the machine's: its busy CPU
    time since boot (user, nice, system, irq and softirq, every CPU, kernel threads and
    interrupts included) and the time the hypervisor took (steal), with the side whose
    turn just ended."""

    def __init__(self, threads: Callable[[], dict[str, float]]) -> None:
        self._read_threads = threads
        self.threads: list[tuple[float, dict[str, float]]] = []
        self.machine: list[tuple[float, str, float, float]] = []

    def __call__(self, ended: str) -> None:
        now, cpu = time.time(), psutil.cpu_times()
        busy = cpu.user + cpu.nice + cpu.system + getattr(cpu, "irq", 0.0)
        busy += getattr(cpu, "softirq", 0.0)
        self.machine.append((now, ended, busy, getattr(cpu, "steal", 0.0)))
        self.threads.append((now, self._read_threads()))


def take_turns(
    service: Callable[[], list[psutil.Process]],
    plain: Callable[[], list[psutil.Process]],
    done: Callable[[], bool],
    quantum: float,
    stopped: Callable[[str], None],
) -> list[tuple[float, str]]:
    """Runs the two groups in turns of ``quantum`` seconds, ``service`` first (``plain``
    must be stopped already), until ``done``; then continues both. Returns when each
    turn began and whose it was; ``stopped`` is called with the side whose turn ended,
    each time both sides are stopped."""
    turns: list[tuple[float, str]] = [(time.time(), "service")]
    while not done():
        time.sleep(quantum)
        if turns[-1][1] == "service":
            _send(service(), signal.SIGSTOP)
            stopped("service")
            _send(plain(), signal.SIGCONT)
            turns.append((time.time(), "plain"))
        else:
            _send(plain(), signal.SIGSTOP)
            stopped("plain")
            _send(service(), signal.SIGCONT)
            turns.append((time.time(), "service"))
    turns.append((time.time(), "both"))
    _send([*service(), *plain()], signal.SIGCONT)
    return turns


def processes_run(work: Path, epochs: int, quantum: float, against: str) -> dict[str, Any]:
    """The plain script against another process in the service's place: a second plain
    script (``plain``: the method checked on itself, whose ratio should be 1 within its
    interval), fitq's runner with its reporting callback and a ``JobWriter`` on SQLite,
    without Celery or the API (``runner``), or the other arms of ``context_child``: the
    plain fit forked from a process that imported the worker's Celery app, after the
    warm-up fit (``pool``; from another thread, ``pool-thread``), the runner so forked
    (``pool-runner``), the plain fit as a task of a live worker (``celery``; on a fresh
    thread, ``celery-fresh``)."""
    outs = [work / "a.json", work / "b.json"]
    plain = [sys.executable, str(ROOT / "bench" / "digits.py")]
    other = [sys.executable, "-m", "bench.epoch_gap", "--child", against]
    commands = [plain if against == "plain" else other, plain]
    procs = [
        subprocess.Popen(
            [*command, str(out), str(epochs)],
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for command, out in zip(commands, outs, strict=True)
    ]
    a, b = (proc.pid for proc in procs)
    _send(_tree(b), signal.SIGSTOP)
    readings = StopReadings(
        lambda: (
            thread_cpu("service", _labelled(_tree(a))) | thread_cpu("plain", _labelled(_tree(b)))
        )
    )
    turns = take_turns(  # a process and its children: fork and pool fit in a child
        lambda: _tree(a),
        lambda: _tree(b),
        lambda: any(p.poll() is not None for p in procs),
        quantum,
        readings,
    )
    for proc in procs:
        if proc.wait(timeout=3600) != 0:
            raise RuntimeError(f"{proc.args!r} failed")
    data = [json.loads(out.read_text()) for out in outs]
    return {
        "service_cpu_s": {},
        "turns": turns,
        "threads": readings.threads,
        "machine": readings.machine,
        **{
            side: list(zip(d["epoch_s"], d["epoch_end"], strict=True))
            for side, d in zip(("service", "plain"), data, strict=True)
        },
    }


class SlicedRun:
    """The plain script and a job through ``fitq up``, trained at the same time in turns.

    ``fitq up`` (API, worker, pool child, dispatcher) and the client that submitted the
    job form one group; the plain script the other. Every ``quantum`` seconds one group
    is stopped (SIGSTOP) and the other continued (SIGCONT), so that the two fits take
    turns on the machine, seconds apart, and a drift in the machine's speed falls on
    both alike. An epoch that a stop fell into lasts at least a quantum and is left out;
    every other epoch ran with its group alone on the machine.
    """

    def __init__(
        self,
        work: Path,
        epochs: int,
        quantum: float,
        follow: bool,
        hold: bool = False,
    ) -> None:
        self.work, self.epochs, self.quantum, self.follow = work, epochs, quantum, follow
        self.hold = hold
        self.data = data = work / "service"
        data.mkdir(parents=True)
        port = free_port()
        self.env = {
            **os.environ,
            "FITQ_DATA_DIR": str(data),
            "FITQ_API_URL": f"http://127.0.0.1:{port}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self.fitq = str(Path(sys.executable).with_name("fitq"))
        self.log = open(work / "service.log", "wb")  # noqa: SIM115 - closed in close()
        self.up = subprocess.Popen(
            [self.fitq, "up", "--port", str(port), "--queues", QUEUE],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=self.env["FITQ_API_URL"], timeout=30)
        self.client: subprocess.Popen[bytes] | None = None

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return
            time.sleep(0.25)
        raise RuntimeError(f"timed out waiting for {what}; see {self.work / 'service.log'}")

    def _status(self, job_id: str) -> str:
        return str(self.http.get(f"/v1/jobs/{job_id}").json()["status"])

    def _quiet(self, seconds: float = 2.0) -> None:
        """Waits until the service has used under 2 % of a core for ``seconds``."""
        last = _busy(_tree(self.up.pid))

        def check() -> bool:
            nonlocal last
            time.sleep(seconds)
            now = _busy(_tree(self.up.pid))
            quiet, last = now - last < 0.02 * seconds, now
            return quiet

        self._wait(check, 120, "the service to go idle")

    def warm(self) -> None:
        """Waits for the API, runs a small job, and waits for the fresh pool child."""
        self._wait(lambda: self.http.get("/readyz").status_code == 200, 120, "/readyz")
        warm = self.http.post("/v1/jobs", json=SMALL_JOB).json()["id"]
        self._wait(lambda: self._status(warm) in FINISHED, 180, "the warm-up job")
        self._quiet()

    def _submit(self) -> str:
        """Submits the long digits job, followed by ``fitq submit --follow`` or not;
        returns its id once it is queued."""
        spec = digits_job()
        spec["fit"]["epochs"] = self.epochs
        spec_file = self.work / "digits-job.json"
        spec_file.write_text(json.dumps(spec))
        if self.follow:  # as a person at the terminal, or a CI job, watches it
            self.client = subprocess.Popen(
                [self.fitq, "submit", str(spec_file), "--follow", "--timeout", "7200"],
                env=self.env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        else:
            self.http.post("/v1/jobs", json=spec).raise_for_status()
        box: dict[str, Any] = {}

        def queued() -> bool:
            box["job"] = self.http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
            return bool(box["job"]["name"] == spec["name"])

        self._wait(queued, 60, "the job")
        return str(box["job"]["id"])

    def _hold(self, job_id: str) -> list[psutil.Process]:
        """With ``hold``: once the job runs, stops the API and the worker's parent."""
        if not self.hold:
            return []
        self._wait(lambda: self._status(job_id) == "running", 120, "the job to start")
        roles = _roles(self.up.pid, None)
        held = [psutil.Process(pid) for pid, role in roles.items() if role != "pool child"]
        _send(held, signal.SIGSTOP)
        return held

    def run(self) -> dict[str, Any]:
        job_id = self._submit()
        held = self._hold(job_id)
        kept = {proc.pid for proc in held}
        out = self.work / "plain.json"
        plain = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "digits.py"), str(out), str(self.epochs)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        plain_group = [psutil.Process(plain.pid)]
        _send(plain_group, signal.SIGSTOP)
        # The job has trained once its model is saved: looked for while the service is
        # stopped, by this process alone.
        trained = Settings(data_dir=self.data).job_dir(job_id) / FINAL_MODEL_FILE
        cpu0 = self._cpu()
        cpu = dict(cpu0)
        readings = StopReadings(lambda: self._thread_cpu(plain_group))

        def stopped(ended: str) -> None:
            cpu.update(self._cpu())  # exact: nothing of the service runs
            readings(ended)

        turns = take_turns(
            lambda: [proc for proc in self._service() if proc.pid not in kept],
            lambda: plain_group,
            lambda: plain.poll() is not None or trained.exists(),
            self.quantum,
            stopped,
        )
        _send(held, signal.SIGCONT)
        plain.wait(timeout=3600)
        self._wait(lambda: self._status(job_id) in FINISHED, 600, "the job to end")
        if self.client is not None:
            self.client.wait(timeout=60)
        job = self.http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] != "succeeded" or plain.returncode != 0:
            raise RuntimeError(f"job {job['status']}, plain exit {plain.returncode}")
        rows = self.http.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        plain_data = json.loads(out.read_text())
        used: dict[str, float] = {}
        for key, seconds in cpu.items():
            role = key[1]
            used[role] = used.get(role, 0.0) + seconds - cpu0.get(key, 0.0)
        return {
            "service_cpu_s": used,
            "turns": turns,
            "threads": readings.threads,
            "machine": readings.machine,
            "service": [(r["duration_s"], parse_ts(r["recorded_at"]).timestamp()) for r in rows],
            "plain": list(zip(plain_data["epoch_s"], plain_data["epoch_end"], strict=True)),
        }

    def _thread_cpu(self, plain: list[psutil.Process]) -> dict[str, float]:
        """``thread_cpu`` of every process of the service and of ``plain``."""
        client = self.client.pid if self.client else None
        procs = []
        for pid, role in _roles(self.up.pid, client).items():
            with contextlib.suppress(psutil.Error):  # gone since _roles saw it
                procs.append((role, psutil.Process(pid)))
        return thread_cpu("service", procs) | thread_cpu("plain", _labelled(plain))

    def _service(self) -> list[psutil.Process]:
        return [*_tree(self.up.pid), *(_tree(self.client.pid) if self.client else [])]

    def _cpu(self) -> dict[tuple[int, str], float]:
        out = {}
        client = self.client.pid if self.client else None
        for pid, role in _roles(self.up.pid, client).items():
            used = cpu_seconds(pid)
            if used is not None:
                out[(pid, role)] = used
        return out

    def close(self) -> None:
        _send(_tree(self.up.pid), signal.SIGCONT)
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _send(_tree(self.up.pid), signal.SIGKILL)
        self.http.close()
        self.log.close()


def ratio_interval(logs: list[float]) -> tuple[float, float, float]:
    """The geometric-mean ratio of paired log ratios and its bootstrap 95 % interval."""
    rng = random.Random(0)
    boots = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(2000))
    return math.exp(statistics.fmean(logs)), math.exp(boots[50]), math.exp(boots[1949])


def _paired(
    per_cycle: dict[str, dict[int, list[float]]],
    cycles: list[int],
    of: Callable[[list[float]], float],
) -> list[float]:
    """Each cycle's log ratio (service over plain) of ``of`` its epochs."""
    return [math.log(of(per_cycle["service"][c]) / of(per_cycle["plain"][c])) for c in cycles]


def sliced_report(run: dict[str, Any], quantum: float) -> dict[str, Any]:
    """Each side's epochs that ran whole in one turn (the first epoch left out), paired by
    cycle (a service turn and the plain turn after it); the ratio of the two means, the
    median of the cycles' ratios, and a bootstrap 95 % interval over cycles."""
    starts = [t for t, who in run["turns"] if who == "service"]
    limit = quantum / 2
    per_cycle: dict[str, dict[int, list[float]]] = {"service": {}, "plain": {}}
    kept: dict[str, list[float]] = {"service": [], "plain": []}
    for side in ("service", "plain"):
        for span, end in run[side][1:]:
            if span >= limit:
                continue
            kept[side].append(span)
            cycle = bisect.bisect_right(starts, end) - 1
            per_cycle[side].setdefault(cycle, []).append(span)
    cycles = sorted(set(per_cycle["service"]) & set(per_cycle["plain"]))
    logs = _paired(per_cycle, cycles, statistics.fmean)
    by_means = ratio_interval(logs)
    by_medians = ratio_interval(_paired(per_cycle, cycles, statistics.median))
    service_turns = sum(
        b[0] - a[0]
        for a, b in zip(run["turns"], run["turns"][1:], strict=False)
        if a[1] == "service"
    )
    summary = {
        "quantum_s": quantum,
        "service_turns_s": service_turns,
        "service_cpu_s": run["service_cpu_s"],
        "epochs_kept": {side: len(v) for side, v in kept.items()},
        "epochs_total": {side: len(run[side]) for side in ("service", "plain")},
        "mean_ms": {side: statistics.fmean(v) * 1000 for side, v in kept.items()},
        "median_ms": {side: statistics.median(v) * 1000 for side, v in kept.items()},
        "ratio_of_means": statistics.fmean(kept["service"]) / statistics.fmean(kept["plain"]),
        "cycles": len(cycles),
        "cycle_ratio_median": math.exp(statistics.median(logs)),
        "cycle_ratio_geomean": by_means[0],
        "cycle_ratio_95": list(by_means[1:]),
        # Each cycle's median epochs compared instead: less moved by the slowest epochs.
        "cycle_median_ratio_geomean": by_medians[0],
        "cycle_median_ratio_95": list(by_medians[1:]),
    }
    print(
        f"kept epochs: service {len(kept['service'])}/{len(run['service'])}, plain "
        f"{len(kept['plain'])}/{len(run['plain'])}; mean service "
        f"{summary['mean_ms']['service']:.1f} ms, plain {summary['mean_ms']['plain']:.1f} ms: "
        f"ratio {summary['ratio_of_means']:.4f}; over {len(cycles)} cycles: geometric mean "
        f"{summary['cycle_ratio_geomean']:.4f} (95 % {summary['cycle_ratio_95'][0]:.4f} to "
        f"{summary['cycle_ratio_95'][1]:.4f}), median {summary['cycle_ratio_median']:.4f}; "
        f"of the cycles' median epochs: {summary['cycle_median_ratio_geomean']:.4f} (95 % "
        f"{summary['cycle_median_ratio_95'][0]:.4f} to {summary['cycle_median_ratio_95'][1]:.4f})",
        flush=True,
    )
    print(
        f"in {service_turns:.0f} s of the service's turns: "
        + ", ".join(f"{role} {used:.2f} CPU-s" for role, used in run["service_cpu_s"].items()),
        flush=True,
    )
    return summary


# --------------------------------------------------------------------------- stack depth


def _deeper(levels: int, fn: Callable[[], Any]) -> Any:
    return fn() if levels == 0 else _deeper(levels - 1, fn)


def depth_run(depths: list[int], n: int, ops: int = 2000) -> dict[str, Any]:
    """What an eager TensorFlow op costs called ``depths`` extra Python frames deep: in this
    one process, ``n`` rounds in which each depth in turn times ``ops`` additions of two
    small tensors; reports each depth's median time per op over rounds and its ratio to
    the first depth's, with a bootstrap 95 % interval of the rounds' paired ratios."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    a = b = tf.ones((4,))

    def timed() -> float:
        started = time.perf_counter()
        for _ in range(ops):
            tf.add(a, b)
        return (time.perf_counter() - started) / ops

    _deeper(0, timed)  # the first call's one-off costs
    per_op: dict[int, list[float]] = {d: [] for d in depths}
    for i in range(n):
        for d in depths if i % 2 == 0 else depths[::-1]:
            per_op[d].append(_deeper(d, timed))
    summary: dict[str, Any] = {"rounds": n, "ops": ops, "median_us": {}, "ratio": {}}
    for d in depths:
        summary["median_us"][d] = statistics.median(per_op[d]) * 1e6
        logs = [math.log(x / y) for x, y in zip(per_op[d], per_op[depths[0]], strict=True)]
        ratio = list(ratio_interval(logs))
        summary["ratio"][d] = ratio
        print(
            f"{d:4d} frames deeper: {summary['median_us'][d]:.2f} us an op; to {depths[0]}: "
            f"{ratio[0]:.4f} (95 % {ratio[1]:.4f} to {ratio[2]:.4f}) over {n} rounds",
            flush=True,
        )
    return summary


# --------------------------------------------------------------------------- report


def rounds(runner: Any, arms: list[str], n: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {arm: [] for arm in arms}
    for i in range(n):
        for arm in arms if i % 2 == 0 else arms[::-1]:
            results[arm].append(runner.run(arm))
        line = ", ".join(f"{arm} {results[arm][-1] * 1000:.1f}" for arm in arms)
        print(f"round {i + 1}/{n}: {line} ms", flush=True)
    return results


def report(results: dict[str, list[float]]) -> dict[str, Any]:
    arms = list(results)
    base = results[arms[0]]
    summary: dict[str, Any] = {}
    for arm in arms:
        ratios = sorted(b / a for a, b in zip(base, results[arm], strict=True))
        summary[arm] = {
            "median_ms": statistics.median(results[arm]) * 1000,
            "runs_ms": [x * 1000 for x in results[arm]],
            "paired_ratios": ratios,
            "median_ratio": statistics.median(ratios),
        }
        print(
            f"{arm:9s} median {summary[arm]['median_ms']:6.1f} ms; to {arms[0]}: median "
            f"{summary[arm]['median_ratio']:.3f} (range {ratios[0]:.3f} to {ratios[-1]:.3f})"
        )
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--arms", default=None, help="comma-separated; the first is the base")
    parser.add_argument("--contexts", action="store_true", help="the process arms")
    parser.add_argument("--nice", type=int, default=None, help="the API's and client's")
    parser.add_argument("--sliced", action="store_true", help="the two fits in turns")
    parser.add_argument("--epochs", type=int, default=400, help="with --sliced")
    parser.add_argument("--quantum", type=float, default=2.0, help="with --sliced: seconds a turn")
    parser.add_argument("--unwatched", action="store_true", help="with --sliced: nobody follows")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="with --sliced: the API and the worker's parent stopped while the job trains",
    )
    parser.add_argument(
        "--against",
        choices=(
            *("service", "plain", "runner", "pool", "pool-runner", "pool-thread"),
            *("celery", "celery-fresh", "thread"),
        ),
        default="service",
        help="with --sliced: what takes turns with the plain script",
    )
    parser.add_argument(
        "--depth", default=None, help="comma-separated extra frames under an eager op"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser


def _sliced(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fitq-gap-") as tmp:
        if args.against != "service":
            raw = processes_run(Path(tmp), args.epochs, args.quantum, args.against)
            return sliced_report(raw, args.quantum) | {"threads": thread_report(raw), "raw": raw}
        sliced = SlicedRun(Path(tmp), args.epochs, args.quantum, not args.unwatched, args.hold)
        try:
            sliced.warm()
            raw = sliced.run()
            return sliced_report(raw, args.quantum) | {"threads": thread_report(raw), "raw": raw}
        finally:
            sliced.close()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.child:
        context_child(args.child[0], Path(args.child[1]), *map(int, args.child[2:3]))
        return
    if args.depth:
        summary = depth_run([int(d) for d in args.depth.split(",")], args.rounds * 5)
    elif args.sliced:
        summary = _sliced(args)
    else:
        default = "plain,warm,fork,runner" if args.contexts else "plain,job,followed"
        arms = (args.arms or default).split(",")
        with tempfile.TemporaryDirectory(prefix="fitq-gap-") as tmp:
            work = Path(tmp)
            runner: Any = ContextArms(work) if args.contexts else ServiceArms(work, args.nice)
            try:
                summary = report(rounds(runner, arms, args.rounds))
            finally:
                runner.close()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""fitq's benchmark: queue latency, end-to-end overhead and the reporting callback's cost.

Run it from the repository root with the project's virtualenv:

    .venv/bin/python bench/run.py

It measures, in one run and against baselines measured in the same run:

1. Submit-to-start latency on an idle worker: ``started_at - created_at`` of small jobs
   submitted one at a time, each once the worker's fresh pool child has imported
   TensorFlow. Target: under 1 s.
2. End-to-end overhead of a 20-epoch digits job (``examples/digits.yaml`` with its
   callbacks removed) against the same fit in a plain script in a fresh process.
   Target: under 0.5 s.
3. The reporting callback's cost per epoch: the same fit in one process with and
   without ``ReportingCallback`` writing to a real SQLite job database. Target: under
   2 % added.

It prints a table and rewrites the marked section of ``docs/benchmarks.md`` (skip that
with ``--no-doc``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- bench:results:begin (written by bench/run.py; do not edit by hand) -->"
END_MARK = "<!-- bench:results:end -->"
QUEUE = "bench"
SEED = 42
POLL_S = 0.05
TARGET_LATENCY_S = 1.0
TARGET_OVERHEAD_S = 0.5
TARGET_CALLBACK_FRACTION = 0.02

# A small job for the latency series: one epoch of a tiny MLP on iris.
SMALL_JOB: dict[str, Any] = {
    "name": "bench-small", "queue": QUEUE, "seed": SEED,
    "model": {"builtin": "mlp", "params": {"hidden_units": [8]}},
    "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"]},
    "data": {"train": {"dataset": "builtin:iris", "split": "train"}},
    "fit": {"batch_size": 32, "epochs": 1},
}


def digits_job() -> dict[str, Any]:
    """``examples/digits.yaml`` with every callback removed, so all 20 epochs run."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    spec.update(name="bench-digits", queue=QUEUE, seed=SEED, callbacks=[])
    assert spec["fit"]["epochs"] == 20, spec["fit"]
    return spec


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_between(later: str, earlier: str) -> float:
    return (parse_ts(later) - parse_ts(earlier)).total_seconds()


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = subprocess.run(
        [sys.executable, "-c", "import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3';"
         "import tensorflow as tf, keras, celery, sqlalchemy;"
         "print(tf.__version__, keras.__version__, celery.__version__, sqlalchemy.__version__)"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.split()
    tf_v, keras_v, celery_v, sa_v = (versions + ["?"] * 4)[:4]
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow / keras": f"{tf_v} / {keras_v}",
        "celery / sqlalchemy": f"{celery_v} / {sa_v}",
    }


# --------------------------------------------------------------------------- /proc helpers


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def children_of(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                out.add(int(entry))
    return out


def cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[11]) + int(fields[12])  # utime + stime


def has_tensorflow(pid: int) -> bool:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# --------------------------------------------------------------------------- other load


def _in_tree(pid: int, procs: dict[int, tuple[int, int]], memo: dict[int, bool]) -> bool:
    """Whether ``pid`` descends from the root that ``memo`` starts with as True."""
    chain = []
    while pid not in memo:
        chain.append(pid)
        pid = procs[pid][0] if pid in procs else 0
    for p in chain:
        memo[p] = memo[pid]
    return memo[pid]


def monitor(out: Path, root: int, period: float = 0.5) -> None:
    """Appends ``time cpu_seconds`` lines: CPU used by processes outside ``root``'s tree.

    Runs as a separate process so that it costs the measured processes no GIL. A
    process seen for the first time counts all its CPU; one that exits between two
    samples loses its last interval, so the figure is a slight underestimate.
    """
    tick = os.sysconf("SC_CLK_TCK")
    prev: dict[int, int] | None = None
    total = 0
    with open(out, "a", buffering=1) as f:
        while os.getppid() == root:
            procs: dict[int, tuple[int, int]] = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    fields = _stat_fields(int(entry))
                    if fields is not None:
                        procs[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            memo: dict[int, bool] = {root: True, 0: False, 1: False}
            now = {pid: ticks for pid, (_, ticks) in procs.items()
                   if not _in_tree(pid, procs, memo)}
            if prev is not None:
                total += sum(max(0, t - prev.get(pid, 0)) for pid, t in now.items())
            prev = now
            f.write(f"{time.time():.3f} {total / tick:.2f}\n")
            time.sleep(period)


@dataclass
class LoadWatch:
    """Starts the monitor and answers how busy other processes kept the machine."""

    path: Path
    proc: subprocess.Popen[bytes] | None = None
    phases: list[tuple[str, float, float]] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--monitor", str(self.path),
                                      "--root", str(os.getpid())])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def cores(self, t0: float, t1: float) -> float | None:
        """Average CPUs used by other processes between two ``time.time()`` values."""
        try:
            rows = [tuple(map(float, line.split()))
                    for line in self.path.read_text().splitlines() if line.strip()]
        except OSError:
            return None
        inside = [r for r in rows if t0 <= r[0] <= t1]
        if len(inside) < 2:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    @contextlib.contextmanager
    def phase(self, name: str) -> Any:
        t0 = time.time()
        try:
            yield
        finally:
            self.phases.append((name, t0, time.time()))

    def wait_quiet(self, limit_s: float, max_cores: float = 0.15) -> float | None:
        """Waits (up to ``limit_s``) until other processes use under ``max_cores``."""
        deadline = time.monotonic() + limit_s
        while True:
            time.sleep(3)
            now = time.time()
            busy = self.cores(now - 3, now)
            if busy is not None and busy < max_cores:
                return busy
            if time.monotonic() > deadline:
                log(f"other processes still use {busy} CPUs; going on anyway")
                return busy
            log(f"other processes use {busy} CPUs; waiting for a quieter machine")


# --------------------------------------------------------------------------- the service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """The API and one worker as processes, on the embedded default (SQLite + files)."""

    data_dir: Path
    base_url: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    seen_children: set[int] = field(default_factory=set)
    client: Any = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FITQ_")}
        env.update(FITQ_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1",
                   TF_CPP_MIN_LOG_LEVEL="2")
        return env

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def log_text(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def spawn(self, name: str, *args: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "fitq", *args], cwd=self.data_dir, env=self.env(),
            stdout=open(self.log_path(name), "ab"), stderr=subprocess.STDOUT,
        )

    def start(self) -> dict[str, float]:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run([sys.executable, "-m", "fitq", "migrate"], cwd=self.data_dir,
                                 env=self.env(), capture_output=True, text=True)
        if migrate.returncode != 0:
            raise RuntimeError(f"fitq migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        self.spawn("api", "api", "--port", str(port))
        self.spawn("worker", "worker", "--queues", QUEUE)
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        self.wait_until(self._api_ready, 60, "the API to answer /readyz")
        api_ready = time.monotonic() - t0
        self.wait_until(lambda: "ready." in self.log_text("worker"), 90, "the worker's 'ready.'")
        worker_ready = time.monotonic() - t0
        self.wait_warm_child(timeout=90)
        child_warm = time.monotonic() - t0
        return {"api_ready_s": api_ready, "worker_ready_s": worker_ready,
                "first_child_warm_s": child_warm}

    def _api_ready(self) -> bool:
        import httpx

        try:
            return bool(self.client.get("/readyz").status_code == 200)
        except httpx.HTTPError:
            return False

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for "
                                       f"{what}:\n{self.log_text(name)[-3000:]}")
            time.sleep(POLL_S)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n"
                           f"worker log tail:\n{self.log_text('worker')[-3000:]}")

    def wait_warm_child(self, timeout: float = 60, quiet_s: float = 1.0,
                        margin_s: float = 0.5) -> tuple[int, float]:
        """Waits for a pool child not seen before that has imported TensorFlow and gone idle.

        Idle: its CPU time has not moved for ``quiet_s``. Returns its pid and the seconds
        waited. Every child seen is remembered, so the next call waits for a new one (the
        worker runs each job in a fresh child: ``worker_max_tasks_per_child=1``).
        """
        worker = self.procs["worker"].pid
        t0 = time.monotonic()
        last: tuple[int, int] | None = None
        quiet_since = 0.0
        box: dict[str, int] = {}

        def check() -> bool:
            nonlocal last, quiet_since
            fresh = sorted(children_of(worker) - self.seen_children)
            if len(fresh) != 1 or not has_tensorflow(fresh[0]):
                last = None
                return False
            pid = fresh[0]
            ticks = cpu_ticks(pid)
            if ticks is None:
                return False
            now = time.monotonic()
            if last is None or last[0] != pid or ticks - last[1] > 1:
                last, quiet_since = (pid, ticks), now
                return False
            if now - quiet_since < quiet_s:
                return False
            box["pid"] = pid
            return True

        self.wait_until(check, timeout, "a fresh pool child to import TensorFlow")
        self.seen_children.add(box["pid"])
        time.sleep(margin_s)
        return box["pid"], time.monotonic() - t0

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post("/v1/jobs", json=spec)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"POST /v1/jobs: {resp.status_code} {resp.text}")
        body: dict[str, Any] = resp.json()
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
        return body

    def wait_finished(self, job_id: str, timeout: float = 180) -> tuple[dict[str, Any], float]:
        """Polls every 50 ms; returns the job and ``time.time()`` when it was seen finished."""
        box: dict[str, Any] = {}

        def check() -> bool:
            # Children listed before the read: while the job is not finished, they are
            # the child that runs (or will run) it, never its replacement.
            kids = children_of(self.procs["worker"].pid)
            box["job"] = self.job(job_id)
            box["seen"] = time.time()
            if box["job"]["status"] in ("succeeded", "failed", "cancelled"):
                return True
            self.seen_children |= kids
            return False

        self.wait_until(check, timeout, f"job {job_id} to finish")
        job = box["job"]
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        return job, float(box["seen"])

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            self.client.get(f"/v1/jobs/{job_id}/metrics").json()["items"])
        return items

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.client is not None:
            self.client.close()

    def log_problems(self) -> list[str]:
        """Lines of the API's and worker's logs that look like trouble, deduplicated."""
        words = ("ERROR", "CRITICAL", "Traceback", "WARNING", "Exception", "E0000")
        counts: dict[str, int] = {}
        first: dict[str, str] = {}
        for name in ("api", "worker"):
            for line in self.log_text(name).splitlines():
                if any(w in line for w in words):
                    text = f"{name}: {re.sub(r'^[[][^]]*[]] ?', '', line.strip())[:240]}"
                    key = re.sub(r"[0-9a-f]{32}|\d+", "#", text)
                    counts[key] = counts.get(key, 0) + 1
                    first.setdefault(key, text)
        return [f"{counts[k]:3d} x {first[k]}" for k in counts]


# --------------------------------------------------------------------------- 1 and 2: service


def measure_service(work: Path, n_latency: int, n_e2e: int) -> dict[str, Any]:
    svc = Service(work / "service")
    log("starting the API and one worker (embedded SQLite + filesystem broker)")
    result: dict[str, Any] = {}
    try:
        result["startup"] = svc.start()
        log(f"startup: {result['startup']}")

        # Warm-up job: the first child's first job, then wait for its replacement.
        warm = svc.submit(SMALL_JOB)
        warm_job, _ = svc.wait_finished(warm["id"])
        result["warmup_latency_s"] = seconds_between(warm_job["started_at"],
                                                     warm_job["created_at"])
        _, waited = svc.wait_warm_child()
        refill = [waited]

        latencies = []
        for i in range(n_latency):
            job = svc.submit(SMALL_JOB)
            done, _ = svc.wait_finished(job["id"])
            latencies.append(seconds_between(done["started_at"], done["created_at"]))
            log(f"idle latency {i + 1}/{n_latency}: {latencies[-1] * 1000:.0f} ms")
            _, waited = svc.wait_warm_child()
            refill.append(waited)
        result["latency_s"] = latencies
        result["refill_s"] = refill

        # Extra: a job submitted the moment the previous one is seen finished, while
        # the worker's replacement child is still importing TensorFlow.
        first = svc.submit(SMALL_JOB)
        svc.wait_finished(first["id"])
        second = svc.submit(SMALL_JOB)
        done, _ = svc.wait_finished(second["id"])
        result["back_to_back_latency_s"] = seconds_between(done["started_at"],
                                                           done["created_at"])
        log(f"back-to-back latency: {result['back_to_back_latency_s']:.2f} s")
        svc.wait_warm_child()

        runs = []
        spec = digits_job()
        for i in range(n_e2e):
            pids = {name: proc.pid for name, proc in svc.procs.items()}
            ticks0 = {name: cpu_ticks(pid) or 0 for name, pid in pids.items()}
            posted = time.time()
            job = svc.submit(spec)
            done, seen = svc.wait_finished(job["id"])
            cpu = {name: ((cpu_ticks(pid) or 0) - ticks0[name]) / os.sysconf("SC_CLK_TCK")
                   for name, pid in pids.items()}
            rows = svc.metrics(job["id"])
            first_begin = parse_ts(rows[0]["recorded_at"]) - dt.timedelta(
                seconds=rows[0]["duration_s"])
            runs.append({
                "setup_s": (first_begin - parse_ts(done["started_at"])).total_seconds(),
                "training_s": (parse_ts(rows[-1]["recorded_at"]) - first_begin).total_seconds(),
                "tail_s": seconds_between(done["finished_at"], rows[-1]["recorded_at"]),
                "service_s": seconds_between(done["finished_at"], done["created_at"]),
                "queue_s": seconds_between(done["started_at"], done["created_at"]),
                "run_s": seconds_between(done["finished_at"], done["started_at"]),
                "wall_s": seen - posted,
                "api_cpu_s": cpu["api"],
                "worker_main_cpu_s": cpu["worker"],
                "epochs": len(rows),
                "epoch_sum_s": sum(r["duration_s"] for r in rows),
                "last": rows[-1]["metrics"] if rows else {},
                "test": done.get("test_metrics"),
            })
            log(f"service digits run {i + 1}/{n_e2e}: {runs[-1]['service_s']:.2f} s recorded, "
                f"{runs[-1]['wall_s']:.2f} s wall")
            svc.wait_warm_child()
        result["e2e"] = runs
    finally:
        svc.stop()
        result["log_problems"] = svc.log_problems()
    return result


# --------------------------------------------------------------------------- 2: plain script


def plain_fit(out: Path) -> None:
    """The digits fit as a careful plain script does it; run in a fresh process."""
    t_start = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from models.datasets import split_indices

    t_imported = time.time()
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    c0 = time.perf_counter()
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va, te = (split_indices(len(x), s) for s in ("train", "validation", "test"))
    c1 = time.perf_counter()
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ], name="mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x[tr], y[tr], batch_size=32, epochs=20, verbose=2, shuffle=True,
                        validation_data=(x[va], y[va]))
    c2 = time.perf_counter()
    t_fit_end = time.time()
    test = model.evaluate(x[te], y[te], batch_size=32, verbose=0, return_dict=True)
    c3 = time.perf_counter()
    out.write_text(json.dumps({
        "t_start": t_start, "import_s": t_imported - t_start, "load_s": c1 - c0,
        "fit_s": c2 - c1, "eval_s": c3 - c2, "t_fit_end": t_fit_end,
        "last": {k: float(v[-1]) for k, v in history.history.items()},
        "test": {k: float(v) for k, v in test.items()},
    }))


def measure_plain(work: Path, runs: int) -> list[dict[str, Any]]:
    out = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    for i in range(runs):
        result = work / f"plain-{i}.json"
        spawned = time.time()
        with open(work / f"plain-{i}.log", "wb") as logf:
            proc = subprocess.run([sys.executable, __file__, "--plain-fit", str(result)],
                                  cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"plain fit failed; see {work / f'plain-{i}.log'}")
        data = json.loads(result.read_text())
        data["with_process_s"] = data["t_fit_end"] - spawned
        out.append(data)
        log(f"plain digits run {i + 1}/{runs}: fit {data['fit_s']:.2f} s, "
            f"{data['with_process_s']:.2f} s from process start")
    return out


# --------------------------------------------------------------------------- 3: callback cost


def measure_callback(work: Path, pairs: int) -> dict[str, Any]:
    """Fits digits with and without ``ReportingCallback`` (writing to SQLite), alternating."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from api.jobs import create_job
    from models.db import make_engine, make_session_factory
    from models.migrate import upgrade
    from models.settings import Settings
    from models.spec import JobSpec
    from worker.execution import StoreSink
    from worker.jobstore import JobStore
    from worker.training.architectures import build_model
    from worker.training.data import load_job_data
    from worker.training.reporting import ReportingCallback
    from worker.training.runner import seed_everything

    db = work / "callback.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    settings = Settings(data_dir=work / "callback-data", database_url=url)
    factory = make_session_factory(make_engine(url))
    spec = JobSpec.model_validate(digits_job())
    data = load_job_data(spec.data)
    assert data.validation is not None

    class EpochTimer(keras.callbacks.Callback):
        """First in the list: from one epoch's begin to the next (or to train end), so
        each interval holds every callback's work for that epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.marks: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, logs: Any = None) -> None:
            self.marks.append(time.perf_counter())

        def epochs(self) -> list[float]:
            return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]

    class TimedSink(StoreSink):
        """The production sink, with the time spent in its database writes summed."""

        def __init__(self, store: JobStore) -> None:
            super().__init__(store)
            self.spent = 0.0
            self.calls = 0

        def progress(self, epoch: int, step: int | None, steps: int | None) -> bool:
            t = time.perf_counter()
            try:
                return super().progress(epoch, step, steps)
            finally:
                self.spent += time.perf_counter() - t
                self.calls += 1

        def record_epoch(self, *args: Any) -> bool:
            t = time.perf_counter()
            try:
                return super().record_epoch(*args)
            finally:
                self.spent += time.perf_counter() - t
                self.calls += 1

    def fit(with_reporter: bool) -> dict[str, Any]:
        keras.backend.clear_session()
        seed_everything(SEED)
        model = build_model("mlp", spec.model.params, None, tuple(data.train.x.shape[1:]),
                            data.n_classes, 1)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        timer = EpochTimer()
        callbacks: list[Any] = [timer]
        sink = None
        if with_reporter:
            with factory() as session:
                job, _ = create_job(session, spec, settings, None)
            store = JobStore(factory, job.id)
            assert store.claim("bench") is not None
            sink = TimedSink(store)
            callbacks.append(ReportingCallback(sink, work, [], ("val_loss", "min"),
                                               interval=settings.progress_interval))
        t = time.perf_counter()
        with open(work / "callback-fit.log", "a") as logf, contextlib.redirect_stdout(logf):
            history = model.fit(data.train.x, data.train.y, batch_size=32, epochs=20,
                                verbose=2, shuffle=True,
                                validation_data=(data.validation.x, data.validation.y),
                                callbacks=callbacks)
        total = time.perf_counter() - t
        epochs = timer.epochs()
        return {"fit_s": total, "epochs": epochs, "steady": statistics.fmean(epochs[1:]),
                "sink_s": sink.spent if sink else 0.0, "sink_calls": sink.calls if sink else 0,
                "last_loss": float(history.history["loss"][-1])}

    log("reporting callback: one discarded warm-up fit")
    fit(False)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "reporting": []}
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for with_reporter in order:
            r = fit(with_reporter)
            runs["reporting" if with_reporter else "plain"].append(r)
            log(f"  pair {i + 1}/{pairs} {'reporting' if with_reporter else 'plain':9s}: "
                f"steady epoch {r['steady'] * 1000:.1f} ms, fit {r['fit_s']:.2f} s")
    return runs


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def summarize(m: dict[str, str], svc: dict[str, Any], plain: list[dict[str, Any]],
              cb: dict[str, list[dict[str, Any]]], load: LoadWatch,
              quiet: float | None) -> tuple[str, dict[str, Any]]:
    med = statistics.median
    lat = svc["latency_s"]
    lat_med, lat_max = med(lat), max(lat)

    e2e = svc["e2e"]
    service_med = med(r["service_s"] for r in e2e)
    wall_med = med(r["wall_s"] for r in e2e)
    fit_med = med(p["fit_s"] for p in plain)
    work_med = med(p["load_s"] + p["fit_s"] + p["eval_s"] for p in plain)
    proc_med = med(p["with_process_s"] for p in plain)
    import_med = med(p["import_s"] for p in plain)
    overhead = service_med - fit_med
    overhead_wall = wall_med - fit_med
    same = all(abs(r["last"].get("loss", float("nan")) - p["last"]["loss"]) < 1e-6
               for r in e2e for p in plain)

    plain_epoch = med(r["steady"] for r in cb["plain"])
    rep_epoch = med(r["steady"] for r in cb["reporting"])
    pair_ratios = [r["steady"] / p["steady"] for p, r in zip(cb["plain"], cb["reporting"],
                                                              strict=True)]
    added = med(pair_ratios) - 1
    plain_fit = med(r["fit_s"] for r in cb["plain"])
    rep_fit = med(r["fit_s"] for r in cb["reporting"])
    sink_per_epoch = statistics.fmean(r["sink_s"] / len(r["epochs"]) for r in cb["reporting"])
    calls = statistics.fmean(r["sink_calls"] / len(r["epochs"]) for r in cb["reporting"])

    figures = {
        "latency_median_s": lat_med, "latency_max_s": lat_max, "overhead_s": overhead,
        "overhead_wall_s": overhead_wall, "callback_added": added,
    }

    def busy(name: str) -> str:
        for n, t0, t1 in load.phases:
            if n == name:
                cores = load.cores(t0, t1)
                return "unknown" if cores is None else f"{cores:.2f}"
        return "unknown"

    def e2e_line(r: dict[str, Any]) -> str:
        return (f"recorded {r['service_s']:.2f} s = queue {ms(r['queue_s'])} + setup "
                f"{ms(r['setup_s'])} + training {r['training_s']:.2f} s + tail "
                f"{ms(r['tail_s'])}; wall {r['wall_s']:.2f} s; {r['epochs']} epochs; CPU "
                f"meanwhile of the API {r['api_cpu_s']:.2f} s and of the worker's main "
                f"process {r['worker_main_cpu_s']:.2f} s")

    def plain_line(p: dict[str, Any]) -> str:
        return (f"build+fit {p['fit_s']:.2f} s, data load {ms(p['load_s'])}, test evaluate "
                f"{ms(p['eval_s'])}, import {p['import_s']:.2f} s, process spawn to fit "
                f"returned {p['with_process_s']:.2f} s")

    lines = [
        BEGIN_MARK, "",
        f"Run of {m['date']}: `.venv/bin/python bench/run.py`.", "",
        "| machine | |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in m.items()), "",
        "| measurement | result | target | verdict |", "|---|---|---|---|",
        f"| 1. submit-to-start on an idle, warm worker: median of {len(lat)} | {ms(lat_med)} | "
        f"< 1 s | {verdict(lat_med < TARGET_LATENCY_S)} |",
        f"| 1. submit-to-start on an idle, warm worker: max of {len(lat)} | {ms(lat_max)} | "
        f"< 1 s | {verdict(lat_max < TARGET_LATENCY_S)} |",
        f"| 2. end-to-end overhead, recorded: median(finished_at - created_at) - "
        f"median(plain build+fit), {len(e2e)} runs each | {ms(overhead)} | < 0.5 s | "
        f"{verdict(overhead < TARGET_OVERHEAD_S)} |",
        f"| 2. end-to-end overhead, client wall: median(POST to `succeeded` seen, polling "
        f"every 50 ms) - median(plain build+fit) | {ms(overhead_wall)} | < 0.5 s | "
        f"{verdict(overhead_wall < TARGET_OVERHEAD_S)} |",
        f"| 3. reporting callback, added steady-state epoch time: median of {len(pair_ratios)} "
        f"paired ratios - 1 | {added * 100:+.1f} % | < 2 % | "
        f"{verdict(added < TARGET_CALLBACK_FRACTION)} |",
        "",
        "Details:", "",
        f"- 1. Each idle job, submit to start: {', '.join(ms(x) for x in lat)}. The session's "
        f"first job (first child, warmed): {ms(svc['warmup_latency_s'])}.",
        f"- Start-up, from spawning both processes: API ready "
        f"{svc['startup']['api_ready_s']:.1f} s, worker logged `ready.` at "
        f"{svc['startup']['worker_ready_s']:.1f} s, first pool child done importing TensorFlow "
        f"at {svc['startup']['first_child_warm_s']:.1f} s.",
        f"- Fresh child per job (`worker_max_tasks_per_child=1`): after each job the "
        f"replacement child was idle and warm after "
        f"{', '.join(f'{x:.1f}' for x in svc['refill_s'])} s. A job submitted the moment the "
        f"previous one was seen finished waited {ms(svc['back_to_back_latency_s'])} to start "
        "(not a target; it is the cost of that fresh child).",
        "- 2. The job: `examples/digits.yaml` (MLP 64 units, dropout 0.2, adam, batch 32, 20 "
        "epochs, validation split, test split evaluated after fit) with all its callbacks "
        "removed (no EarlyStopping, ModelCheckpoint or TensorBoard), so every run trains 20 "
        "epochs. Setup = claim to first epoch's start (seed, data load, build, compile); tail "
        "= last epoch recorded to finished (test evaluate, outcome write).",
        "- 2. Service, per run: " + "; ".join(e2e_line(r) for r in e2e) + ".",
        "- 2. Plain script in a fresh process, per run: "
        + "; ".join(plain_line(p) for p in plain) + ".",
        f"- 2. Medians: service {service_med:.2f} s recorded, {wall_med:.2f} s wall; plain "
        f"build+fit {fit_med:.2f} s; plain load+build+fit+evaluate (all the work the runner's "
        f"`train()` does) {work_med:.2f} s, so beyond that work the service adds "
        f"{ms(service_med - work_med)}; plain from process spawn to fit returned "
        f"{proc_med:.2f} s (import {import_med:.2f} s).",
        f"- 2. Same training: the service's last-epoch loss "
        f"{'equals' if same else '**differs from**'} the plain script's (same seed, op "
        "determinism in both).",
        f"- 3. Same fit, one process, alternating order: plain steady-state epoch (epochs 2-20) "
        f"median {plain_epoch * 1000:.1f} ms, with ReportingCallback + StoreSink on SQLite "
        f"{rep_epoch * 1000:.1f} ms; whole fit {plain_fit:.2f} s vs {rep_fit:.2f} s. Paired "
        f"ratios: {', '.join(f'{x:.3f}' for x in pair_ratios)}. Per fit (ms), plain: "
        + ", ".join(f"{r['steady'] * 1000:.1f}" for r in cb["plain"]) + "; reporting: "
        + ", ".join(f"{r['steady'] * 1000:.1f}" for r in cb["reporting"]) + ".",
        f"- 3. Time inside the sink's database writes: {sink_per_epoch * 1000:.2f} ms per "
        f"epoch ({calls:.1f} writes per epoch at the default 0.5 s progress interval), "
        f"{sink_per_epoch / plain_epoch * 100:.1f} % of the plain epoch.",
        f"- Other processes' CPU use (cores, of {m['cpus (nproc)']}) before the run: "
        f"{'unknown' if quiet is None else f'{quiet:.2f}'}; during 1+2 (service): "
        f"{busy('service')}; plain fits: {busy('plain')}; 3: {busy('callback')}.",
    ]
    if svc["log_problems"]:
        lines += ["", "Warnings and errors in the API and worker logs (count x first "
                  "occurrence):", "", "```", *svc["log_problems"][:30], "```"]
    else:
        lines += ["", "No warnings or errors in the API and worker logs."]
    lines += ["", END_MARK]
    return "\n".join(lines), figures


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5, help="idle-latency jobs (5)")
    parser.add_argument("--e2e", type=int, default=3, help="service and plain digits runs (3)")
    parser.add_argument("--pairs", type=int, default=5,
                        help="plain/reporting fit pairs, alternating order (5)")
    parser.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                        help="wait up to S seconds for other processes to go quiet (120)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--plain-fit", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--monitor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_fit:
        plain_fit(args.plain_fit)
        return 0
    if args.monitor:
        monitor(args.monitor, args.root)
        return 0

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fitq-bench-"))
    log(f"work folder {work}")
    load = LoadWatch(work / "load.txt")
    load.start()
    try:
        m = machine()
        quiet = load.wait_quiet(args.wait_quiet)
        with load.phase("service"):
            svc = measure_service(work, args.jobs, args.e2e)
        with load.phase("plain"):
            plain = measure_plain(work, args.e2e)
        with load.phase("callback"):
            cb = measure_callback(work, args.pairs)
        section, figures = summarize(m, svc, plain, cb, load, quiet)
    finally:
        load.stop()
    print(section.replace(BEGIN_MARK, "").replace(END_MARK, "").strip())
    print(f"\n(total {time.monotonic() - started:.0f} s; work folder {work}"
          f"{'' if args.keep else ', removed'})")
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    missed = [k for k, ok in (
        ("latency", figures["latency_max_s"] < TARGET_LATENCY_S),
        ("overhead", figures["overhead_s"] < TARGET_OVERHEAD_S),
        ("callback", figures["callback_added"] < TARGET_CALLBACK_FRACTION),
    ) if not ok]
    if missed:
        log(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

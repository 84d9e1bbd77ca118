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

    python -m bench.epoch_gap [--rounds 6] [--arms plain,job,followed] [--nice 10]
    python -m bench.epoch_gap --contexts [--rounds 6] [--arms plain,warm,fork,runner]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    QUEUE,
    SMALL_JOB,
    BenchService,
    EmbeddedDefault,
    digits_job,
    run_plain,
    service_digits,
)


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


def _plain_fit(out: Path, warm: bool) -> None:
    from bench.digits import SEED, EpochClock, digits_arrays, digits_model, fit_digits, seed

    if warm:
        from worker.devices import configure
        from worker.training.runner import warm_up

        configure(1)
        warm_up()
    seed(SEED)
    data, model, clock = digits_arrays(), digits_model(), EpochClock()
    with contextlib.redirect_stdout(io.StringIO()):
        fit_digits(model, data, [clock])
    out.write_text(json.dumps(clock.spans))


def _runner_fit(out: Path) -> None:
    from sqlalchemy import select

    from bench.run import CallbackBench
    from models.tables import EpochMetric
    from worker.training.runner import train

    work = out.parent / f"runner-{os.getpid()}"
    work.mkdir()
    bench = CallbackBench(work)
    writer = bench.writer(bench.claimed_store())
    with contextlib.redirect_stdout(io.StringIO()):
        train(bench.spec, work / "job", writer, bench.settings.progress_interval)
    writer.close()
    with bench.factory() as session:
        rows = session.scalars(select(EpochMetric.duration_s).order_by(EpochMetric.epoch))
        out.write_text(json.dumps(list(rows)))


def context_child(arm: str, out: Path) -> None:
    """One fit, in this fresh process, in the context ``arm`` names."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if arm == "fork":
        import worker.celery_app  # noqa: F401  what the worker's parent has imported

        pid = os.fork()
        if pid == 0:
            try:
                _plain_fit(out, warm=False)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    elif arm == "runner":
        _runner_fit(out)
    elif arm in ("plain", "warm"):
        _plain_fit(out, warm=arm == "warm")
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
        return steady(json.loads(out.read_text()))

    def close(self) -> None:
        pass


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--arms", default=None, help="comma-separated; the first is the base")
    parser.add_argument("--contexts", action="store_true", help="the process arms")
    parser.add_argument("--nice", type=int, default=None, help="the API's and client's")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        context_child(args.child[0], Path(args.child[1]))
        return
    default = "plain,warm,fork,runner" if args.contexts else "plain,job,followed"
    arms = (args.arms or default).split(",")
    with tempfile.TemporaryDirectory(prefix="fitq-gap-") as tmp:
        runner: Any = ContextArms(Path(tmp)) if args.contexts else ServiceArms(Path(tmp), args.nice)
        try:
            summary = report(rounds(runner, arms, args.rounds))
        finally:
            runner.close()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""``fitq jobs evaluate`` and ``fitq jobs predict``: use a finished job's trained model.

Each queues a run (a job of its own, kind ``evaluate`` or ``predict``) and, with
``--wait`` (or ``-o`` for predict), waits for it: evaluate prints the metrics, predict
writes the predictions (``.npy``). Exit codes are those of ``fitq submit``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from fitq.client import Client
from fitq.commands import JOB_FAILED, OK, _emit, exit_code, json_option


def _array(path: str) -> list[Any]:
    """A ``.npy`` file, or the only array of a ``.npz``, as nested lists for the request."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read {path} as .npy or .npz: {exc}") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if len(loaded.files) != 1:
                raise click.UsageError(f"{path} holds {loaded.files}; expected one array")
            loaded = loaded[loaded.files[0]]
    result: list[Any] = np.asarray(loaded).tolist()
    return result


def _data(
    dataset: str | None, split: str | None, take: int | None, x: str | None, y: str | None
) -> dict[str, Any]:
    """The request's ``data``: a dataset (with split and take) or inline arrays from files."""
    if (dataset is None) == (x is None):
        raise click.UsageError("give --data (builtin:NAME or a dataset id) or --x FILE")
    if dataset is not None:
        data: dict[str, Any] = {"dataset": dataset}
        if split:
            data["split"] = split
    else:
        assert x is not None
        data = {"x": _array(x)}
        if y is not None:
            data["y"] = _array(y)
    if take is not None:
        data["take"] = take
    return data


def _data_options(func: Any) -> Any:
    for option in reversed(
        [
            click.argument("job_id", metavar="ID"),
            click.option(
                "--data", "dataset", metavar="DATASET", help="builtin:NAME or a dataset id"
            ),
            click.option(
                "--split",
                type=click.Choice(["train", "validation", "test", "all"]),
                help="which part of the dataset (all)",
            ),
            click.option("--take", type=int, metavar="N", help="only the first N samples"),
            click.option("--x", "x", metavar="FILE", help="inline inputs: a .npy file"),
            click.option("--batch-size", type=int, metavar="N", help="Keras' batch_size (32)"),
            click.option("--name", metavar="NAME"),
            click.option("--timeout", type=float, metavar="SECONDS", help="seconds to wait"),
            json_option,
        ]
    ):
        func = option(func)
    return func


def _queued(client: Client, kind: str, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    run: dict[str, Any] = getattr(client, kind)(job_id, **body)
    print(f"fitq: {kind} run {run['id']} of job {job_id} ({run['status']})", file=sys.stderr)
    return run


def _ended(client: Client, run: dict[str, Any], timeout: float | None) -> dict[str, Any] | None:
    """The run once it has ended; None (after saying why) unless it succeeded."""
    done = client.wait(run["id"], timeout=timeout)
    if done["status"] == "succeeded":
        return done
    error = done.get("error") or {}
    print(
        f"fitq: run {done['id']} {done['status']}"
        + (f": {error.get('type')}: {error.get('message')}" if error else ""),
        file=sys.stderr,
    )
    return None


@click.command("evaluate", short_help="evaluate a finished job's model on data")
@_data_options
@click.option("--y", "y", metavar="FILE", help="inline labels, with --x: a .npy file")
@click.option("--wait", is_flag=True, help="wait for the run and print its metrics")
def evaluate(
    job_id: str,
    dataset: str | None,
    split: str | None,
    take: int | None,
    x: str | None,
    y: str | None,
    batch_size: int | None,
    name: str | None,
    timeout: float | None,
    as_json: bool,
    wait: bool,
) -> int:
    """Queue model.evaluate() of job ID's trained model (a run of kind evaluate)."""
    body = {"data": _data(dataset, split, take, x, y), "batch_size": batch_size, "name": name}

    def action() -> int:
        client = Client()
        run = _queued(client, "evaluate", job_id, body)
        if not wait:
            _emit(as_json, run, run["id"])
            return OK
        done = _ended(client, run, timeout)
        if done is None:
            return JOB_FAILED
        metrics = done["test_metrics"] or {}
        _emit(as_json, done, "\n".join(f"{k}: {v}" for k, v in metrics.items()))
        return OK

    return exit_code(action)


@click.command("predict", short_help="predict with a finished job's model; -o writes .npy")
@_data_options
@click.option("--wait", is_flag=True, help="wait for the run to end")
@click.option(
    "-o", "--output", metavar="FILE", help="wait, then write the predictions to FILE (.npy)"
)
def predict(
    job_id: str,
    dataset: str | None,
    split: str | None,
    take: int | None,
    x: str | None,
    batch_size: int | None,
    name: str | None,
    timeout: float | None,
    as_json: bool,
    wait: bool,
    output: str | None,
) -> int:
    """Queue model.predict() of job ID's trained model (a run of kind predict)."""
    body = {"data": _data(dataset, split, take, x, None), "batch_size": batch_size, "name": name}

    def action() -> int:
        client = Client()
        run = _queued(client, "predict", job_id, body)
        if not (wait or output):
            _emit(as_json, run, run["id"])
            return OK
        done = _ended(client, run, timeout)
        if done is None:
            return JOB_FAILED
        if output:
            path = client.download_predictions(done["id"], Path(output))
            print(f"fitq: predictions written to {path}", file=sys.stderr)
        _emit(as_json, done, done["id"])
        return OK

    return exit_code(action)

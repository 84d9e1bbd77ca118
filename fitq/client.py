"""fitq's Python client: submit, read, wait for, follow and cancel jobs; evaluate and
predict with a trained job's model; datasets, models.

    from fitq.client import Client
    client = Client()                      # FITQ_API_URL, FITQ_TOKEN
    job = client.submit(spec)
    job = client.wait(job["id"], timeout=600)

Connection errors and 5xx answers are retried with backoff; a 4xx never is. A
submission carries an Idempotency-Key, the same on each of its retries, so that a
retry after a timeout, a dropped connection or a 5xx finds the job an earlier attempt
may have created instead of creating a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

FINISHED = ("succeeded", "failed", "cancelled")
CHUNK = 1 << 20
T = TypeVar("T")


class ApiError(Exception):
    """The service answered with a 4xx: the request itself is wrong."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {format_detail(detail)}")
        self.status = status
        self.detail = detail


class Unreachable(Exception):
    """The service did not answer (after retries)."""


class TimedOut(Exception):
    """A wait ran past its timeout; the job goes on."""


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "\n".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


class _Retryable(Exception):
    """An answer worth asking again for: a 5xx, a download that arrived damaged."""


class _StreamClosed(_Retryable):
    """The service closed a job's event stream before its end (a restart, its limit on
    a stream's length): reconnect."""


class _PastDeadline(Exception):
    """A follower's deadline passed while it read a stream."""


class _StreamRefused(Exception):
    """The service refused a job's event stream (429): ask for epochs instead."""


def _check(resp: httpx.Response) -> None:
    """Raises ``ApiError`` for a 4xx (with the service's detail), ``_Retryable`` for a 5xx."""
    if resp.status_code >= 500:
        raise _Retryable(f"answered {resp.status_code}: {resp.text[:500]}")
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text
        raise ApiError(resp.status_code, detail)


def _write(resp: httpx.Response, target: Path, sha256: str | None) -> Path:
    """Writes the response's body to ``target`` through a temporary file beside it."""
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "wb") as f:
            for chunk in resp.iter_bytes(CHUNK):
                digest.update(chunk)
                f.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise _Retryable(
                f"sent {target.name} with SHA-256 {digest.hexdigest()}, not its ETag {sha256}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


class Client:
    """A synchronous client of the fitq API.

    Args:
        url: The API's address. Defaults to ``FITQ_API_URL`` or http://127.0.0.1:8000.
        token: A bearer token. Defaults to ``FITQ_TOKEN`` (none when unset).
        retries: Attempts for a request that meets a connection error or a 5xx.
            Defaults to 5.
        timeout: Seconds for one request. Defaults to 30.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        retries: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self.url = (url or os.environ.get("FITQ_API_URL") or "http://127.0.0.1:8000").rstrip("/")
        token = token if token is not None else os.environ.get("FITQ_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.retries = retries

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors and 5xx; raises ``ApiError`` on a 4xx."""

        def once() -> httpx.Response:
            resp = self.http.request(method, path, **kwargs)
            _check(resp)
            return resp

        return self._retrying(once)

    def download(
        self, path: str, target: Path, params: dict[str, str] | None = None, sha256: bool = False
    ) -> Path:
        """Streams the body of ``GET path`` into the file ``target``, retried as a request is.

        The file appears whole or not at all (it is written beside ``target``, then
        renamed). With ``sha256``, the body must hash to the response's ``ETag``;
        a download that does not is retried.
        """

        def once() -> Path:
            with self.http.stream("GET", path, params=params) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _check(resp)
                expected = resp.headers.get("etag", "").strip('"') if sha256 else None
                return _write(resp, target, expected)

        return self._retrying(once)

    def _retrying(self, once: Callable[[], T]) -> T:
        delay = 0.5
        for attempt in range(self.retries):
            last = attempt == self.retries - 1
            try:
                return once()
            except httpx.TransportError as exc:
                if last:
                    raise Unreachable(f"{self.url} did not answer: {exc}") from exc
            except _Retryable as exc:
                if last:
                    raise Unreachable(f"{self.url} {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise Unreachable(self.url)

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submits ``spec``; returns the job (the one created, or the one found).

        Args:
            spec: The job spec.
            idempotency_key: Sent as ``Idempotency-Key`` on every attempt; a later
                submission with the same key and spec finds the same job (with another
                spec it is refused, 409). Defaults to a new random key (uuid4), which
                makes this call's own retries safe.
        """
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        result: dict[str, Any] = self.request("POST", "/v1/jobs", json=spec, headers=headers).json()
        return result

    def validate(self, spec: dict[str, Any]) -> list[str]:
        """The warnings a submission would get; raises ``ApiError`` (422) if refused."""
        warnings: list[str] = self.request("POST", "/v1/jobs/validate", json=spec).json()[
            "warnings"
        ]
        return warnings

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}").json()
        return result

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        items: list[dict[str, Any]] = self.request("GET", "/v1/jobs", params=params).json()["items"]
        return items

    def metrics(self, job_id: str, after_epoch: int = 0) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request(
            "GET", f"/v1/jobs/{job_id}/metrics", params={"after_epoch": after_epoch}
        ).json()["items"]
        return items

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", f"/v1/jobs/{job_id}/checkpoints").json()[
            "items"
        ]
        return items

    def logs(self, job_id: str) -> str:
        return self.request("GET", f"/v1/jobs/{job_id}/logs").text

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/jobs/{job_id}/cancel").json()
        return result

    def delete_artifacts(self, job_id: str) -> dict[str, Any]:
        """Removes a finished job's files but its log; the checkpoints marked and the
        bytes freed. ``ApiError`` 409 while the job is queued or running."""
        result: dict[str, Any] = self.request("DELETE", f"/v1/jobs/{job_id}/artifacts").json()
        return result

    def usage(self, owner: str | None = None) -> dict[str, Any]:
        """The bytes and count of the caller's (an admin: ``owner``'s, or everyone's)
        datasets, models, checkpoints and trained models."""
        params = {"owner": owner} if owner is not None else None
        result: dict[str, Any] = self.request("GET", "/v1/usage", params=params).json()
        return result

    def download_checkpoint(self, job_id: str, checkpoint: dict[str, Any], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(checkpoint["path"]).name
        return self.download(f"/v1/jobs/{job_id}/checkpoints/{checkpoint['id']}/file", target)

    def download_model(
        self, job_id: str, target: Path | None = None, model_format: str = "keras"
    ) -> Path:
        """Downloads the trained model a succeeded job saved; returns where it is.

        Args:
            job_id: The job.
            target: A file to write, or an existing folder to put the model in under
                its own name: ``model-<id>.keras``, or ``savedmodel-<id>.tar.gz``.
                Defaults to the current folder.
            model_format: ``keras`` (the job's ``model.keras``, checked against its
                SHA-256) or ``savedmodel`` (the SavedModel the spec's
                ``output.export`` asked for, as a .tar.gz). Defaults to ``keras``.

        Raises:
            ApiError: 404 when the job has no such model (it has not succeeded, or
                did not export one), with the reason.
        """
        target = target if target is not None else Path.cwd()
        if target.is_dir():
            name = "model-{}.keras" if model_format == "keras" else "savedmodel-{}.tar.gz"
            target = target / name.format(job_id)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        return self.download(
            f"/v1/jobs/{job_id}/model",
            target,
            params={"format": model_format},
            sha256=model_format == "keras",
        )

    def evaluate(
        self,
        job_id: str,
        data: dict[str, Any],
        batch_size: int | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Queues ``model.evaluate()`` of job ``job_id``'s trained model; returns the run.

        Args:
            job_id: A succeeded training job.
            data: As a job's ``data.test``: ``{"dataset": "builtin:digits", "split":
                "test"}``, an uploaded dataset's id, or inline ``{"x": ..., "y": ...}``.
            batch_size: evaluate()'s ``batch_size``. Defaults to None (Keras: 32).
            name: A label for the run. Optional.

        The run is a job; once it has succeeded its ``test_metrics`` hold the results.
        """
        return self._run(job_id, "evaluate", data, batch_size, name)

    def predict(
        self,
        job_id: str,
        data: dict[str, Any],
        batch_size: int | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Queues ``model.predict()`` of job ``job_id``'s trained model; returns the run.

        Args:
            job_id: A succeeded training job.
            data: A dataset (``{"dataset": ..., "split": ..., "take": ...}``) or inline
                inputs alone (``{"x": [...]}``).
            batch_size: predict()'s ``batch_size``. Defaults to None (Keras: 32).
            name: A label for the run. Optional.

        Once the run has succeeded, ``download_predictions`` fetches the array.
        """
        return self._run(job_id, "predict", data, batch_size, name)

    def _run(
        self,
        job_id: str,
        kind: str,
        data: dict[str, Any],
        batch_size: int | None,
        name: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"data": data}
        if batch_size is not None:
            body["batch_size"] = batch_size
        if name is not None:
            body["name"] = name
        # One key for this call's retries: a retry finds the run an earlier attempt made.
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        result: dict[str, Any] = self.request(
            "POST", f"/v1/jobs/{job_id}/{kind}", json=body, headers=headers
        ).json()
        return result

    def runs(self, job_id: str) -> list[dict[str, Any]]:
        """The evaluate and predict runs that used job ``job_id``'s model, newest first."""
        items: list[dict[str, Any]] = self.request("GET", f"/v1/jobs/{job_id}/runs").json()["items"]
        return items

    def download_predictions(self, run_id: str, target: Path) -> Path:
        """Writes a succeeded predict run's predictions (a ``.npy`` file) to ``target``."""
        resp = self.request("GET", f"/v1/jobs/{run_id}/predictions")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(resp.content)
        return target

    def upload_dataset(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Uploads an ``.npz`` (or a zip of image folders); returns the dataset."""
        return self._upload("/v1/datasets", path, name)

    def datasets(self) -> list[dict[str, Any]]:
        return self._items("/v1/datasets")

    def upload_model(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Uploads a ``.keras`` file as ``model.save()`` writes it; returns the model."""
        return self._upload("/v1/models", path, name)

    def models(self) -> list[dict[str, Any]]:
        return self._items("/v1/models")

    def _upload(self, collection: str, path: Path, name: str | None) -> dict[str, Any]:
        with open(path, "rb") as f:
            data = {"name": name} if name else {}
            result: dict[str, Any] = self.request(
                "POST", collection, files={"file": (path.name, f)}, data=data, timeout=600
            ).json()
        return result

    def _items(self, collection: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", collection).json()["items"]
        return items

    def follow(
        self, job_id: str, timeout: float | None = None, poll: float = 0.5
    ) -> Iterator[dict[str, Any]]:
        """Yields each epoch's row once, in order, until the job ends (then returns).

        Follows the job's event stream: one connection, on which the service pushes each
        epoch as it is recorded, so that watching a job costs the service (and the
        machine it trains on) next to nothing. Survives the service restarting or
        closing the stream: it reconnects after ``poll`` seconds, from the last epoch
        it saw. Where the stream is refused (429: the owner holds as many as it may),
        it asks for new epochs every ``poll`` seconds instead. Raises ``TimedOut`` past
        ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = [0]
        streaming = True
        while True:
            try:
                if streaming:
                    yield from self._streamed_epochs(job_id, last, deadline)
                    return
                if (yield from self._polled_epochs(job_id, last)):
                    return
            except _StreamRefused:
                streaming = False
                continue
            except (Unreachable, _Retryable, httpx.TransportError):
                pass  # the service is restarting, or closed the stream; ask again
            except _PastDeadline:
                pass
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"job {job_id} still running after {timeout:.0f}s")
            time.sleep(poll)

    def _streamed_epochs(
        self, job_id: str, last: list[int], deadline: float | None
    ) -> Iterator[dict[str, Any]]:
        """The epochs after ``last[0]`` from one connection to the job's event stream,
        until its ``end`` event; raises ``_StreamClosed`` where the service closes the
        stream first.

        A small reader of the stream's lines rather than an SSE library: the deadline
        is checked on every line, the service's keep-alive comments included.
        """
        read = 20.0 if deadline is None else max(0.1, min(20.0, deadline - time.monotonic()))
        with self.http.stream(
            "GET",
            f"/v1/jobs/{job_id}/events",
            params={"after_epoch": last[0]},
            timeout=httpx.Timeout(self.http.timeout.connect, read=read),
        ) as resp:
            if resp.status_code == 429:
                raise _StreamRefused()
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            event, data = "message", []
            for line in resp.iter_lines():
                if deadline is not None and time.monotonic() > deadline:
                    raise _PastDeadline()
                if line.startswith(":"):
                    continue
                if line:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
                    continue
                if event == "end":
                    return
                if event == "epoch" and data:
                    row: dict[str, Any] = json.loads("\n".join(data))
                    if int(row["epoch"]) > last[0]:
                        last[0] = int(row["epoch"])
                        yield row
                event, data = "message", []
        raise _StreamClosed()

    def _polled_epochs(self, job_id: str, last: list[int]) -> Generator[dict[str, Any], None, bool]:
        """One round of asking for new epochs; returns whether the job has ended."""
        for row in self.metrics(job_id, after_epoch=last[0]):
            last[0] = max(last[0], int(row["epoch"]))
            yield row
        if self.job(job_id)["status"] not in FINISHED:
            return False
        for row in self.metrics(job_id, after_epoch=last[0]):
            last[0] = max(last[0], int(row["epoch"]))
            yield row
        return True

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """The job once it has ended; raises ``TimedOut`` past ``timeout`` seconds."""
        for _ in self.follow(job_id, timeout=timeout, poll=poll):
            pass
        return self.job(job_id)

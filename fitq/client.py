"""fitq's Python client: submit, read, wait for, follow and cancel jobs; datasets.

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

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


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
        delay = 0.5
        for attempt in range(self.retries):
            try:
                resp = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries - 1:
                    raise Unreachable(f"{self.url} did not answer: {exc}") from exc
            else:
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        try:
                            detail = resp.json().get("detail")
                        except ValueError:
                            detail = resp.text
                        raise ApiError(resp.status_code, detail)
                    return resp
                if attempt == self.retries - 1:
                    raise Unreachable(f"{self.url} answered {resp.status_code}: {resp.text[:500]}")
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

    def download_checkpoint(self, job_id: str, checkpoint: dict[str, Any], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(checkpoint["path"]).name
        resp = self.request("GET", f"/v1/jobs/{job_id}/checkpoints/{checkpoint['id']}/file")
        target.write_bytes(resp.content)
        return target

    def upload_dataset(self, path: Path, name: str | None = None) -> dict[str, Any]:
        with open(path, "rb") as f:
            data = {"name": name} if name else {}
            result: dict[str, Any] = self.request(
                "POST", "/v1/datasets", files={"file": (path.name, f)}, data=data, timeout=600
            ).json()
        return result

    def datasets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", "/v1/datasets").json()["items"]
        return items

    def follow(
        self, job_id: str, timeout: float | None = None, poll: float = 0.5
    ) -> Iterator[dict[str, Any]]:
        """Yields each epoch's row once, in order, until the job ends (then returns).

        Survives the service restarting: it keeps asking from the last epoch it saw.
        Raises ``TimedOut`` past ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = 0
        while True:
            try:
                for row in self.metrics(job_id, after_epoch=last):
                    last = max(last, int(row["epoch"]))
                    yield row
                job = self.job(job_id)
                if job["status"] in FINISHED:
                    for row in self.metrics(job_id, after_epoch=last):
                        last = max(last, int(row["epoch"]))
                        yield row
                    return
            except Unreachable:
                pass  # the service is restarting; ask again
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"job {job_id} still running after {timeout:.0f}s")
            time.sleep(poll)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """The job once it has ended; raises ``TimedOut`` past ``timeout`` seconds."""
        for _ in self.follow(job_id, timeout=timeout, poll=poll):
            pass
        return self.job(job_id)

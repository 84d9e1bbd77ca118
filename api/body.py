"""ASGI middleware: caps request bodies, bounds what they unfold into, reads YAML.

It runs after ``api.auth.AuthMiddleware``: no body is read before the caller is known.
A body past its limit answers 413: at once when ``Content-Length`` says so, else as
soon as the bytes received pass it (uploads are counted as they stream, never held in
memory). FastAPI's own ``max_body_size`` would count the same bytes, but its 413 is a
``text/plain`` "Content Too Large" (sent in place of any answer once ``Content-Length``
is over), where every fitq error is ``{"detail": ...}`` naming the setting to change.
Limits: ``FITQ_MAX_UPLOAD_BYTES`` for ``POST /v1/datasets`` (plus room for the
multipart framing), ``FITQ_MAX_BODY_BYTES`` for everything else. A JSON body is
checked against ``FITQ_MAX_BODY_DEPTH`` and ``FITQ_MAX_BODY_NODES`` before FastAPI
parses it; a job spec sent as YAML (``Content-Type: application/yaml``, or no usable
type, as curl's ``--data-binary`` sends it) is checked the same way, aliases
expanded, then parsed and handed on as JSON (``api.bounded``). Both run in the
thread pool, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bounded import BodyRefused, Bounds, check_json, yaml_to_json

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
UNTYPED = ("", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream")
MULTIPART_SLACK = 1 << 20


async def _reply(send: Send, status: int, detail: Any) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        max_depth: int,
        max_nodes: int,
        upload_paths: tuple[str, ...] = ("/v1/datasets",),
        spec_paths: tuple[str, ...] = ("/v1/jobs", "/v1/jobs/validate"),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.upload_paths = upload_paths
        self.spec_paths = spec_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.upload_paths:
            limit, setting = self.max_upload_bytes + MULTIPART_SLACK, "FITQ_MAX_UPLOAD_BYTES"
        else:
            limit, setting = self.max_body_bytes, "FITQ_MAX_BODY_BYTES"
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply(
                send,
                413,
                f"request body of {int(declared)} bytes is over the limit "
                f"of {limit} bytes ({setting})",
            )
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        # curl's --data-binary says form-urlencoded unless told otherwise: a job spec
        # sent that way is read as YAML (of which JSON is a subset).
        guessed = content_type in UNTYPED and scope["path"] in self.spec_paths
        if content_type in YAML_TYPES or guessed:
            await self._parsed(scope, receive, send, limit, setting, "yaml")
        elif content_type == "application/json" or content_type.endswith("+json"):
            await self._parsed(scope, receive, send, limit, setting, "json")
        else:
            await self._counted(scope, receive, send, limit, setting)

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str
    ) -> None:
        """Streams the body through, answering 413 once it passes ``limit``."""
        state = {"size": 0, "over": False, "started": False}

        async def counting_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["size"] += len(message.get("body", b""))
                if state["size"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if state["over"]:
                    return
                state["started"] = True
            if state["over"] and not state["started"]:
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _reply(send, 413, f"request body is over the limit of {limit} bytes ({setting})")

    async def _read(self, receive: Receive, send: Send, limit: int, setting: str) -> bytes | None:
        """The whole body, or None once 413 is answered because it passed ``limit``."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(
                    send, 413, f"request body is over the limit of {limit} bytes ({setting})"
                )
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _parsed(
        self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str, kind: str
    ) -> None:
        """Reads the body, checks (JSON) or converts (YAML) it off the event loop."""
        raw = await self._read(receive, send, limit, setting)
        if raw is None:
            return
        bounds = Bounds(depth=self.max_depth, nodes=self.max_nodes, chars=self.max_body_bytes)
        try:
            if kind == "yaml":
                body = await run_in_threadpool(yaml_to_json, raw, bounds)
            else:
                await run_in_threadpool(check_json, raw, bounds)
                body = raw
        except BodyRefused as refused:
            await _reply(send, refused.status, refused.detail)
            return
        if kind == "yaml":
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
            ] + [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

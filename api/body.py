"""ASGI middleware: caps request bodies and lets job specs arrive as YAML.

Starlette caps neither; a body past ``max_body_bytes`` answers 413 before it is
read whole. A ``Content-Type: application/yaml`` body is parsed and handed on as
JSON, so ``curl --data-binary @examples/digits.yaml`` submits a spec as it is.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from starlette.types import ASGIApp, Message, Receive, Scope, Send

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
UNTYPED = ("", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream")


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
        exempt_prefixes: tuple[str, ...] = (),
        spec_paths: tuple[str, ...] = ("/v1/jobs",),
    ):
        self.app = app
        self.spec_paths = spec_paths
        self.max_body_bytes = max_body_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE")
            or scope["path"].startswith(self.exempt_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply(
                send,
                413,
                f"request body of {int(declared)} bytes is over the limit of "
                f"{limit} bytes (FITQ_MAX_BODY_BYTES)",
            )
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(
                    send,
                    413,
                    f"request body is over the limit of {limit} bytes (FITQ_MAX_BODY_BYTES)",
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        # curl's --data-binary says form-urlencoded unless told otherwise: a job spec
        # sent that way is read as YAML (of which JSON is a subset).
        guessed = content_type in UNTYPED and scope["path"] in self.spec_paths
        if content_type in YAML_TYPES or guessed:
            try:
                data = yaml.safe_load(body.decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                await _reply(
                    send,
                    422,
                    [
                        {
                            "loc": ["body"],
                            "type": "yaml_invalid",
                            "msg": f"the body is not valid YAML: {exc}",
                        }
                    ],
                )
                return
            try:
                body = json.dumps(data, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                await _reply(
                    send,
                    422,
                    [
                        {
                            "loc": ["body"],
                            "type": "yaml_invalid",
                            "msg": "the YAML holds a value JSON cannot (a date, "
                            f"binary data or NaN); expected numbers, strings, "
                            f"lists and maps: {exc}",
                        }
                    ],
                )
                return
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

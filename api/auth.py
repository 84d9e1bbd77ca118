"""Bearer tokens, checked from a request's headers before a byte of its body is read.

``AuthMiddleware`` sits outside the body middleware: with tokens on, a request to
``/v1`` without a valid ``Authorization: Bearer <token>`` is answered 401 from its
headers alone, so that an anonymous client can make the API neither parse nor spool
anything. The lookup (one indexed query on the token's hash) runs in the thread pool,
never on the event loop. It is not cached: a revoked token is refused from the next
request on. The caller it found is left in the request's state for
``api.deps.get_principal``.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.tokens import OPEN, Principal, authenticate

PROTECTED = "/v1"
MAX_TOKEN_CHARS = 256
UNAUTHORIZED = (
    "missing, unknown or revoked bearer token; create one with "
    "`fitq token create --name NAME` and send it as 'Authorization: Bearer <token>'"
)


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token


def _principal(sessions: sessionmaker[Session], token: str) -> Principal | None:
    with sessions() as session:
        return authenticate(session, token)


async def lookup(sessions: sessionmaker[Session], headers: Headers) -> Principal | None:
    """The caller that ``headers`` name, or None; the query runs in the thread pool."""
    token = bearer_token(headers.get("authorization", ""))
    if token is None:
        return None
    return await run_in_threadpool(_principal, sessions, token)


def is_protected(path: str) -> bool:
    return path == PROTECTED or path.startswith(PROTECTED + "/")


class AuthMiddleware:
    """Refuses ``/v1`` requests without a valid bearer token (401) when auth is on."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        principal: Principal | None = OPEN
        if self.enabled:
            principal = await lookup(scope["app"].state.session_factory, Headers(scope=scope))
        if principal is None:
            body = json.dumps({"detail": UNAUTHORIZED}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

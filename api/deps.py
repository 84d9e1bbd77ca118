"""Typed dependencies of the route handlers.

Those that only read the application's state are ``async``: FastAPI runs a plain
function dependency in the thread pool, a hop that costs more than the read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from api.auth import UNAUTHORIZED, lookup
from api.tokens import OPEN, Principal
from core.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


async def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


async def get_principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; everyone is admin with auth off.

    ``api.auth.AuthMiddleware`` has already found it for every ``/v1`` request, before
    the body was read; a route elsewhere has it looked up here.
    """
    found: Principal | None = request.scope.get("state", {}).get("principal")
    if found is not None:
        return found
    if not request.app.state.auth_enabled:
        return OPEN
    principal = await lookup(request.app.state.session_factory, request.headers)
    if principal is None:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

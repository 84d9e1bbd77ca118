"""Typed dependencies of the route handlers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from api.tokens import OPEN, Principal, authenticate
from core.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


def get_principal(request: Request, session: Annotated[Session, Depends(get_session)]) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; everyone is admin with auth off."""
    if not request.app.state.auth_enabled:
        return OPEN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise HTTPException(
            401,
            "missing, unknown or revoked bearer token; create one with "
            "`fitq token create --name NAME` and send it as "
            "'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

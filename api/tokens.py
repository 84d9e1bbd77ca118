"""API tokens: created and shown once, stored as SHA-256, listed, revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound
from models.tables import ApiToken, utcnow

PREFIX = "fitq_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's owner (None while auth is off) and whether an admin."""

    owner: str | None
    admin: bool

    def sees(self, owner: str | None) -> bool:
        return self.admin or self.owner == owner


OPEN = Principal(owner=None, admin=True)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, admin: bool = False) -> str:
    """Creates a token for owner ``name`` and returns it; only its hash is stored."""
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists already; revoke it or pick another name")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=digest(token), admin=admin, created_at=utcnow()))
    session.commit()
    return token


def authenticate(session: Session, token: str) -> Principal | None:
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None))
    )
    return Principal(owner=row.name, admin=row.admin) if row is not None else None


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> None:
    row = session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if row is None:
        raise NotFound("token", name)
    row.revoked_at = utcnow()
    session.commit()

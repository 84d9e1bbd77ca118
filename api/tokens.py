"""API tokens: created and shown once, stored as SHA-256, listed, revoked, reissued."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound
from models.tables import ApiToken, utcnow

PREFIX = "fitq_"
MAX_NAME = 100


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
    """Creates a token for owner ``name`` and returns it; only its hash is stored.

    A name has one token at a time: raises ``Conflict`` while it has one that is not
    revoked. A revoked name can be given a new token, which sees the name's jobs and
    datasets. Raises ``ValueError`` for a name that is empty, longer than
    ``MAX_NAME`` characters, or holds control characters.
    """
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise ValueError(
            f"received token name {name[: MAX_NAME + 20]!r}; expected 1 to {MAX_NAME} "
            "printable characters"
        )
    taken = Conflict(
        f"a token named {name!r} is active already; revoke it first to issue a new one "
        "for the same owner, or pick another name"
    )
    if _active(session, name) is not None:
        raise taken
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=digest(token), admin=admin, created_at=utcnow()))
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise taken from exc
    return token


def _active(session: Session, name: str) -> ApiToken | None:
    return session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )


def authenticate(session: Session, token: str) -> Principal | None:
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None))
    )
    return Principal(owner=row.name, admin=row.admin) if row is not None else None


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token ever created, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> None:
    """Revokes the token of owner ``name``; the row stays, and so do the name's jobs."""
    row = _active(session, name)
    if row is None:
        raise NotFound("token", name)
    row.revoked_at = utcnow()
    session.commit()

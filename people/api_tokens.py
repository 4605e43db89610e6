"""API tokens of agencies: made and revoked by an operator or by the agency itself.

A token is shown once, when it is made; only its SHA-256 is kept (a token is 256 random
bits, so a plain hash is enough at rest). A token acts for its agency only: every batch it
creates, reads or cancels is that agency's. Each token has a webhook secret of its own,
shown with it, which signs the webhooks of the batches it created (HMAC-SHA256).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select

from kerani.core.errors import BadInputError, ForbiddenError, NotFoundError
from kerani.core.text import storable
from kerani.storage import schema
from kerani.storage.database import utcnow

TOKEN_PREFIX = "kt_"  # noqa: S105 (a prefix, not a secret)
SECRET_PREFIX = "whsec_"  # noqa: S105
SHOWN_LENGTH = 10
# last_used_at is written at most this often per token: not one write per request.
USE_RECORDED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    """A token just made: the only time its value is known."""

    id: int
    agency_id: int
    label: str
    token: str
    webhook_secret: str


@dataclass(frozen=True)
class TokenHolder:
    """Who a presented token acts for."""

    token_id: int
    agency_id: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Engine, agency_id: int, label: str, by: int | None = None) -> NewToken:
    """Make an API token for an agency user; its value and webhook secret are returned once."""
    label = storable(label.strip())
    if not label or len(label) > 100 or any(ord(c) < 32 for c in label):
        raise BadInputError("label: give 1 to 100 printable characters (what it is for)")
    w = schema.workers
    with db.begin() as conn:
        role = conn.execute(select(w.c.role).where(w.c.id == agency_id)).scalar()
        if role != "agency":
            raise NotFoundError(f"no agency user {agency_id}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        secret = SECRET_PREFIX + secrets.token_urlsafe(24)
        token_id = conn.execute(
            insert(schema.api_tokens)
            .values(
                agency_id=agency_id,
                label=label,
                token_hash=_digest(token),
                shown=token[:SHOWN_LENGTH],
                webhook_secret=secret,
                created_at=utcnow(),
                created_by=by,
            )
            .returning(schema.api_tokens.c.id)
        ).scalar_one()
    return NewToken(int(token_id), agency_id, label, token, secret)


def list_tokens(db: Engine, agency_id: int | None = None) -> list[dict[str, Any]]:
    """Tokens (of one agency, if given), newest first: never their value or secret."""
    t, w = schema.api_tokens, schema.workers
    query = (
        select(
            t.c.id,
            t.c.label,
            t.c.shown,
            t.c.created_at,
            t.c.revoked_at,
            t.c.last_used_at,
            w.c.name.label("agency"),
        )
        .join(w, w.c.id == t.c.agency_id)
        .order_by(t.c.id.desc())
    )
    if agency_id is not None:
        query = query.where(t.c.agency_id == agency_id)
    with db.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def revoke_token(db: Engine, token_id: int, agency_id: int | None = None) -> bool:
    """Revoke a token (of this agency, if given) at once; False when it was revoked already.

    NotFoundError when there is no such token, or it is another agency's: the same answer.
    """
    t = schema.api_tokens
    with db.begin() as conn:
        query = select(t.c.revoked_at).where(t.c.id == token_id)
        if agency_id is not None:
            query = query.where(t.c.agency_id == agency_id)
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"no token {token_id}")
        if row.revoked_at is not None:
            return False
        conn.execute(t.update().where(t.c.id == token_id).values(revoked_at=utcnow()))
    return True


def token_holder(db: Engine, token: str) -> TokenHolder:
    """Who this token acts for; ForbiddenError when it is unknown or revoked (one answer)."""
    if not token.startswith(TOKEN_PREFIX):
        raise ForbiddenError("unknown or revoked API token")
    t = schema.api_tokens
    with db.connect() as conn:
        row = conn.execute(
            select(t.c.id, t.c.agency_id, t.c.revoked_at, t.c.last_used_at).where(
                t.c.token_hash == _digest(token)
            )
        ).first()
    if row is None or row.revoked_at is not None:
        raise ForbiddenError("unknown or revoked API token")
    _note_use(db, int(row.id), row.last_used_at)
    return TokenHolder(int(row.id), int(row.agency_id))


def _note_use(db: Engine, token_id: int, last: datetime | None) -> None:
    now = utcnow()
    if last is not None:
        if last.tzinfo is None:  # SQLite gives naive UTC datetimes back
            last = last.replace(tzinfo=now.tzinfo)
        if now - last < USE_RECORDED_EVERY:
            return
    t = schema.api_tokens
    with db.begin() as conn:
        conn.execute(t.update().where(t.c.id == token_id).values(last_used_at=now))


def webhook_secret(db: Engine, token_id: int) -> str | None:
    """The secret that signs the webhooks of the batches this token made."""
    t = schema.api_tokens
    with db.connect() as conn:
        secret = conn.execute(select(t.c.webhook_secret).where(t.c.id == token_id)).scalar()
    return str(secret) if secret is not None else None

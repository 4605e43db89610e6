"""Workers, operators and agencies: access codes, sign-in sessions, roles."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, insert, select

from kerani.exceptions import BadInputError, ConflictError, ForbiddenError
from storage import schema
from storage.database import as_utc, utcnow

ROLES = ("worker", "operator", "agency")


@dataclass(frozen=True)
class Person:
    """Someone signed in: their id, name and role."""

    id: int
    name: str
    role: str


def _digest(secret: str) -> str:
    # Access codes and session ids are 128+ random bits, so a plain hash is enough at rest.
    return hashlib.sha256(secret.encode()).hexdigest()


def add_person(
    db: Engine, name: str, role: str, *, trusted: bool = False, cleared: bool = False
) -> str:
    """Create a worker, operator or agency user and return their access code (shown once).

    `trusted` workers arbitrate disputed fields; `cleared` ones may see restricted fields.
    """
    if role not in ROLES:
        raise BadInputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    name = name.strip()
    if not name or len(name) > 100:
        raise BadInputError("name must be 1 to 100 characters")
    code = secrets.token_urlsafe(18)
    with db.begin() as conn:
        if conn.execute(select(schema.workers.c.id).where(schema.workers.c.name == name)).first():
            raise ConflictError(f"a person called {name!r} exists already")
        conn.execute(
            insert(schema.workers).values(
                name=name,
                role=role,
                token_hash=_digest(code),
                created_at=utcnow(),
                trusted=trusted,
                cleared=cleared,
            )
        )
    return code


def person_by_code(db: Engine, code: str) -> Person:
    """The person whose access code this is; ForbiddenError otherwise."""
    with db.connect() as conn:
        row = conn.execute(
            select(schema.workers).where(schema.workers.c.token_hash == _digest(code))
        ).first()
    if row is None:
        raise ForbiddenError("unknown access code")
    return Person(row.id, row.name, row.role)


def start_session(db: Engine, person_id: int, hours: int) -> tuple[str, str]:
    """Open a session; return (cookie value, CSRF token)."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    with db.begin() as conn:
        conn.execute(
            insert(schema.sessions).values(
                id=_digest(cookie),
                worker_id=person_id,
                csrf_token=csrf,
                expires_at=utcnow() + timedelta(hours=hours),
            )
        )
    return cookie, csrf


def session_person(db: Engine, cookie: str) -> tuple[Person, str]:
    """The person and CSRF token behind a session cookie; ForbiddenError when expired or unknown."""
    s, w = schema.sessions, schema.workers
    with db.connect() as conn:
        row = conn.execute(
            select(s.c.csrf_token, s.c.expires_at, w.c.id, w.c.name, w.c.role)
            .join(w, w.c.id == s.c.worker_id)
            .where(s.c.id == _digest(cookie))
        ).first()
    if row is None or as_utc(row.expires_at) <= utcnow():
        raise ForbiddenError("please sign in")
    return Person(row.id, row.name, row.role), row.csrf_token


def end_session(db: Engine, cookie: str) -> None:
    """Close a session."""
    with db.begin() as conn:
        conn.execute(delete(schema.sessions).where(schema.sessions.c.id == _digest(cookie)))

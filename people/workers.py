"""Workers, operators and agencies: access codes, invites and PINs, sign-in sessions, roles.

Operators and agency users sign in with a long access code. Workers, who may have no email,
get an invite code from the operator, choose a 6-digit PIN when they join, and then sign in
with their worker number and PIN (throttled: see people/rate_limits.py).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, or_, select, update

from kerani.core.errors import BadInputError, ConflictError, ForbiddenError, NotFoundError
from kerani.core.vocabulary import AuditAction, Language, Role
from kerani.storage import schema
from kerani.storage.database import as_utc, reading, utcnow
from kerani.storage.statements import run

ROLES = tuple(Role)
LANGUAGES = tuple(Language)
# Invite codes are read aloud and typed on phones: no 0/O, 1/I/L look-alikes.
INVITE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
INVITE_LENGTH = 8
PIN_PATTERN = re.compile(r"[0-9]{6}")
# scrypt's cost: about 50 ms per check, which with the sign-in throttle makes guessing a PIN
# from a stolen database slow too.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Person:
    """Someone signed in: their id, name and role."""

    id: int
    name: str
    role: Role
    language: Language = Language.ENGLISH


def _person(row: Any) -> Person:
    # `row`: a row with the workers table's id, name, role and language.
    return Person(row.id, row.name, Role(row.role), Language(row.language))


def _digest(secret: str) -> str:
    # Access codes and session ids are 128+ random bits, so a plain hash is enough at rest.
    return hashlib.sha256(secret.encode()).hexdigest()


def add_person(
    db: Engine,
    name: str,
    role: Role | str,
    *,
    trusted: bool = False,
    cleared: bool = False,
    proven: bool = False,
    practised: bool = False,
) -> str:
    """Create a worker, operator or agency user and return their access code (shown once).

    `trusted` workers arbitrate disputed fields; `cleared` ones may see restricted fields;
    `proven` ones skip probation (the operator vouches for them, e.g. the agency's own staff):
    their answers count as votes before they have passed any gold. A new worker gets paid
    work only once they pass the practice round (microtasks.practice); `practised` is for
    simulated workers and tests, which stand for people who have: operators never set it.
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
                role=Role(role),
                token_hash=_digest(code),
                created_at=utcnow(),
                trusted=trusted,
                cleared=cleared,
                proven=proven or trusted,
                practice_passed_at=utcnow() if practised else None,
            )
        )
    return code


def _person_query(_dialect: str) -> Any:
    w = schema.workers
    return select(w.c.id, w.c.name, w.c.role, w.c.language).where(
        w.c.token_hash == bindparam("digest")
    )


def person_by_code(db: Engine, code: str) -> Person:
    """The person whose access code this is; ForbiddenError otherwise."""
    # Every API request starts here: one read of one round trip (storage.reading), with a
    # statement built once (storage.statements) rather than on every request.
    with reading(db) as conn:
        rows = run(conn, _person_query, {"digest": _digest(code)})
    if not rows:
        raise ForbiddenError("unknown access code")
    return _person(rows[0])


def person_named(db: Engine, name: str, role: Role, label: str) -> int:
    """The id of the person with this `role` called `name`; BadInputError naming the fix
    otherwise (`label` is how the role reads: "agency user", "operator")."""
    w = schema.workers
    with db.connect() as conn:
        found = conn.execute(
            select(w.c.id).where(w.c.name == name.strip(), w.c.role == role)
        ).scalar()
    if found is None:
        raise BadInputError(
            f"no {label} called {name!r}: add one with `kerani people add NAME --role {role}`"
        )
    return int(found)


def agency_named(db: Engine, name: str) -> int:
    """The id of the agency user called `name`; BadInputError naming the fix otherwise."""
    return person_named(db, name, Role.AGENCY, "agency user")


@dataclass(frozen=True)
class InviteCode:
    """A one-time code for /join, as printed for people (ABCD-EFGH), and when it lapses."""

    worker_id: int
    name: str
    code: str
    expires_at: datetime


def _new_invite_code() -> str:
    return "".join(secrets.choice(INVITE_ALPHABET) for _ in range(INVITE_LENGTH))


def format_invite_code(code: str) -> str:
    """An invite code as printed for people: two groups of four, ABCD-EFGH."""
    return f"{code[:4]}-{code[4:]}"


def normalise_invite_code(typed: str) -> str:
    """What a person typed as an invite code, upper-cased, without spaces or dashes."""
    return re.sub(r"[^0-9A-Za-z]", "", typed).upper()


def invite_worker(
    db: Engine,
    name: str,
    days: int,
    *,
    trusted: bool = False,
    cleared: bool = False,
    language: Language | str = Language.ENGLISH,
) -> tuple[int, str]:
    """Create a worker who joins with an invite code; return (worker number, invite code)."""
    invite = _invite(db, name, days, trusted=trusted, cleared=cleared, language=language)
    return invite.worker_id, invite.code


def _invite(
    db: Engine, name: str, days: int, *, trusted: bool, cleared: bool, language: Language | str
) -> InviteCode:
    if language not in LANGUAGES:
        raise BadInputError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    add_person(db, name, Role.WORKER, trusted=trusted, cleared=cleared)
    w = schema.workers
    with db.begin() as conn:
        row = conn.execute(select(w.c.id, w.c.name).where(w.c.name == name.strip())).one()
        return _give_code(conn, row, days, language=Language(language))


def audit_account(conn: Connection, operator_id: int | None, worker_id: int, what: str) -> None:
    """Log what an operator changed about a worker's account or standing: who acted (None:
    the server's command line, which the log says), the worker by number and what was done;
    never a code or PIN itself."""
    conn.execute(
        insert(schema.audit_log).values(
            at=utcnow(),
            worker_id=operator_id,
            action=AuditAction.STANDING,
            detail=f"worker {worker_id}: {what}" + ("" if operator_id else " (command line)"),
        )
    )


def _revoked(conn: Connection, worker_id: int) -> bool:
    # Revoking leaves no flag of its own, only its audit row (microtasks.standing.revoke).
    log = schema.audit_log
    details = [f"worker {worker_id}: revoked", f"worker {worker_id}: revoked (command line)"]
    found = conn.execute(
        select(log.c.id).where(log.c.action == AuditAction.STANDING, log.c.detail.in_(details))
    ).first()
    return found is not None


def _account(conn: Connection, worker_id: int) -> Any:
    """The worker's row for an account change; refused for staff and revoked workers."""
    w = schema.workers
    row = conn.execute(
        select(w.c.id, w.c.name, w.c.role, w.c.pin_hash).where(w.c.id == worker_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no worker with number {worker_id}")
    if row.role != Role.WORKER:
        raise BadInputError(
            f"{row.name} (number {worker_id}) is an {row.role}, not a worker: staff have no "
            "PIN and sign in with their access code"
        )
    if _revoked(conn, worker_id):
        raise BadInputError(f"worker {worker_id} ({row.name}) was revoked for good")
    return row


def _give_code(conn: Connection, row: Any, days: int, **also: Any) -> InviteCode:
    # Stored hashed like an invite: whoever reads the database cannot use it.
    code = _new_invite_code()
    expires = utcnow() + timedelta(days=days)
    conn.execute(
        update(schema.workers)
        .where(schema.workers.c.id == row.id)
        .values(invite_hash=_digest(code), invite_expires_at=expires, **also)
    )
    return InviteCode(int(row.id), str(row.name), format_invite_code(code), expires)


def reset_pin(db: Engine, worker_id: int, days: int, operator_id: int | None = None) -> InviteCode:
    """Give a worker who forgot their PIN a new one-time code for /join (shown once).

    Their PIN stops working and every session of theirs ends at once; the code sets a new
    PIN, as an invite does. `operator_id` is who asked (None: the server's command line).
    """
    with db.begin() as conn:
        row = _account(conn, worker_id)
        code = _give_code(conn, row, days, pin_hash=None)
        conn.execute(delete(schema.sessions).where(schema.sessions.c.worker_id == worker_id))
        audit_account(conn, operator_id, worker_id, "PIN reset, new one-time code")
    return code


def reinvite(db: Engine, worker_id: int, days: int, operator_id: int | None = None) -> InviteCode:
    """A fresh invite code for a worker who has not joined yet (or whose invite lapsed).

    A worker who has joined keeps their PIN: ConflictError, use `reset_pin`.
    """
    with db.begin() as conn:
        row = _account(conn, worker_id)
        if row.pin_hash is not None:
            raise ConflictError(
                f"worker {worker_id} ({row.name}) has joined already: reset their PIN instead"
            )
        code = _give_code(conn, row, days)
        audit_account(conn, operator_id, worker_id, "invited again")
    return code


def invite_or_reinvite(
    db: Engine,
    name: str,
    days: int,
    *,
    trusted: bool = False,
    cleared: bool = False,
    language: Language | str = Language.ENGLISH,
) -> tuple[InviteCode, bool]:
    """Invite a new worker, or re-invite the one of that name who has not joined yet;
    return the code and whether it is a re-invite (their standing is left as it was).

    ConflictError for a worker of that name who has joined (their PIN is reset instead),
    or for staff of that name.
    """
    w = schema.workers
    with db.connect() as conn:
        found = conn.execute(
            select(w.c.id, w.c.role, w.c.pin_hash).where(w.c.name == name.strip())
        ).first()
    if found is None:
        return _invite(db, name, days, trusted=trusted, cleared=cleared, language=language), False
    if found.role != Role.WORKER:
        raise ConflictError(f"a person called {name!r} exists already ({found.role})")
    if found.pin_hash is not None:
        raise ConflictError(
            f"worker {name!r} (number {found.id}) has joined already: "
            f"use `kerani people reset-pin {found.id}` for a new one-time code"
        )
    return reinvite(db, int(found.id), days), True


def set_worker_language(
    db: Engine, worker_id: int, language: Language | str, operator_id: int | None = None
) -> bool:
    """An operator's change of a worker's page language; False when it was that already."""
    if language not in LANGUAGES:
        raise BadInputError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    w = schema.workers
    with db.begin() as conn:
        _account(conn, worker_id)
        changed = conn.execute(
            update(w)
            .where(w.c.id == worker_id, w.c.language != Language(language))
            .values(language=Language(language))
        ).rowcount
        if changed:
            audit_account(conn, operator_id, worker_id, f"language {language}")
    return bool(changed)


def change_pin(db: Engine, worker_id: int, current: str, pin: str, again: str, keep: str) -> None:
    """A worker's new PIN in place of `current`; their sessions but `keep` (the session
    cookie of the page they asked on) end.

    BadInputError (a message key: pin_digits, pin_easy, pin_mismatch) for a new PIN that
    will not do, checked first; ForbiddenError("pin_current_wrong") for a wrong current PIN.
    The caller throttles the tries (people/rate_limits.py), as for sign-in.
    """
    check_new_pin(pin, again)
    w = schema.workers
    with db.connect() as conn:
        stored = conn.execute(
            select(w.c.pin_hash).where(w.c.id == worker_id, w.c.role == Role.WORKER)
        ).scalar()
    if not pin_matches(current, stored):
        raise ForbiddenError("pin_current_wrong")
    # Hashed before the transaction: 50 ms of scrypt must not hold SQLite's write lock.
    new_hash = hash_pin(pin)
    s = schema.sessions
    with db.begin() as conn:
        # Only if the PIN is still the one checked: two changes at once, one wins.
        updated = conn.execute(
            update(w).where(w.c.id == worker_id, w.c.pin_hash == stored).values(pin_hash=new_hash)
        ).rowcount
        if not updated:
            raise ForbiddenError("pin_current_wrong")
        # A phone left signed in elsewhere (or someone who learnt the old PIN) is out.
        conn.execute(delete(s).where(s.c.worker_id == worker_id, s.c.id != _digest(keep)))


def check_new_pin(pin: str, again: str) -> None:
    """Refuse a PIN that is not 6 digits, is too easy to guess, or was not typed twice alike."""
    if not PIN_PATTERN.fullmatch(pin):
        raise BadInputError("pin_digits")
    digits = [int(c) for c in pin]
    steps = {b - a for a, b in itertools.pairwise(digits)}
    if len(set(digits)) == 1 or steps in ({1}, {-1}):
        raise BadInputError("pin_easy")
    if not secrets.compare_digest(pin, again):
        raise BadInputError("pin_mismatch")


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of a PIN, with its parameters, for storing."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str | None) -> bool:
    """Whether `pin` is the one behind a stored hash (False when none was ever set)."""
    if not stored:
        # Spend the same time as a real check, so timing does not tell who has a PIN.
        hashlib.scrypt(pin.encode(), salt=b"0" * 16, dklen=32, **_SCRYPT)
        return False
    _scheme, n, r, p, salt, digest = stored.split("$")
    again = hashlib.scrypt(
        pin.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p)
    )
    return secrets.compare_digest(again.hex(), digest)


def join_with_invite(db: Engine, code: str, pin: str, again: str) -> Person:
    """Use an invite code once: set the worker's PIN and return them.

    Raises ForbiddenError for an unknown, used or expired code; BadInputError (whose message
    is a message key: pin_digits, pin_easy, pin_mismatch) for a PIN that will not do.
    """
    check_new_pin(pin, again)
    w = schema.workers
    invite_hash = _digest(normalise_invite_code(code))
    with db.connect() as conn:
        known = conn.execute(select(w.c.id).where(w.c.invite_hash == invite_hash)).first()
    if known is None:
        raise ForbiddenError("invite_unknown")
    # Hashed before the transaction: 50 ms of scrypt must not hold SQLite's write lock.
    pin_hash = hash_pin(pin)
    with db.begin() as conn:
        # Used only if still unused and unexpired: two joins with one code, one wins.
        row = conn.execute(
            update(w)
            .where(w.c.invite_hash == invite_hash, w.c.invite_expires_at > utcnow())
            .values(pin_hash=pin_hash, invite_hash=None, invite_expires_at=None)
            .returning(w.c.id, w.c.name, w.c.role, w.c.language)
        ).first()
    if row is None:
        raise ForbiddenError("invite_unknown")
    return _person(row)


def person_by_pin(db: Engine, number: int, pin: str) -> Person:
    """The worker with this number and PIN; ForbiddenError otherwise (same error either way)."""
    with db.connect() as conn:
        row = conn.execute(select(schema.workers).where(schema.workers.c.id == number)).first()
    ok = pin_matches(pin, row.pin_hash if row is not None else None)
    if row is None or not ok or row.role != Role.WORKER:
        raise ForbiddenError("signin_wrong")
    return _person(row)


def set_language(db: Engine, person_id: int, language: Language | str) -> None:
    """Remember the language a person chose for every page."""
    if language not in LANGUAGES:
        raise BadInputError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    with db.begin() as conn:
        conn.execute(
            update(schema.workers)
            .where(schema.workers.c.id == person_id)
            .values(language=Language(language))
        )


def start_session(
    db: Engine, person_id: int, hours: int, idle_minutes: int = 0, now: datetime | None = None
) -> tuple[str, str]:
    """Open a session, ending the person's others; return (cookie value, CSRF token).

    One live session per person: signing in on one device (a shared PC) ends the session
    left open on another. Sessions past their end, or idle longer than `idle_minutes`
    (0: no idle limit), are purged on the way.
    """
    now = now or utcnow()
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    s = schema.sessions
    stale = or_(s.c.worker_id == person_id, s.c.expires_at <= now)
    if idle_minutes:
        stale = or_(stale, s.c.last_seen_at < now - timedelta(minutes=idle_minutes))
    with db.begin() as conn:
        conn.execute(delete(s).where(stale))
        conn.execute(
            insert(s).values(
                id=_digest(cookie),
                worker_id=person_id,
                csrf_token=csrf,
                expires_at=now + timedelta(hours=hours),
                last_seen_at=now,
            )
        )
    return cookie, csrf


def _session_query(_dialect: str) -> Any:
    s, w = schema.sessions, schema.workers
    return (
        select(
            s.c.csrf_token,
            s.c.expires_at,
            s.c.last_seen_at,
            w.c.id,
            w.c.name,
            w.c.role,
            w.c.language,
        )
        .join(w, w.c.id == s.c.worker_id)
        .where(s.c.id == bindparam("sid"))
    )


def session_person(
    db: Engine, cookie: str, idle_minutes: int = 0, now: datetime | None = None
) -> tuple[Person, str]:
    """The person and CSRF token behind a session cookie.

    ForbiddenError when unknown, past its end, or left idle longer than `idle_minutes`
    (0: no idle limit). Each use keeps the session alive (written at most once a minute).
    """
    s = schema.sessions
    now = now or utcnow()
    with reading(db) as conn:  # every page request starts here: one round trip
        rows = run(conn, _session_query, {"sid": _digest(cookie)})
    row = rows[0] if rows else None
    if row is None or as_utc(row.expires_at) <= now:
        raise ForbiddenError("please sign in")
    last_seen = as_utc(row.last_seen_at) if row.last_seen_at is not None else now
    if idle_minutes and now - last_seen > timedelta(minutes=idle_minutes):
        end_session(db, cookie)
        raise ForbiddenError("please sign in")
    if now - last_seen > timedelta(minutes=1):
        with db.begin() as conn:
            conn.execute(update(s).where(s.c.id == _digest(cookie)).values(last_seen_at=now))
    return _person(row), row.csrf_token


def end_session(db: Engine, cookie: str) -> None:
    """Close a session."""
    with db.begin() as conn:
        conn.execute(delete(schema.sessions).where(schema.sessions.c.id == _digest(cookie)))


def end_sessions(db: Engine, person_id: int) -> None:
    """Close every session of a person (signing out signs out everywhere)."""
    with db.begin() as conn:
        conn.execute(delete(schema.sessions).where(schema.sessions.c.worker_id == person_id))


def workers_on_probation(db: Engine) -> int:
    """Active workers whose answers do not count yet (not proven on gold, not vouched for)."""
    w = schema.workers
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    w.c.role == Role.WORKER,
                    w.c.proven.is_(False),
                    w.c.trusted.is_(False),
                    w.c.quarantined.is_(False),
                )
            ).scalar_one()
        )

"""Sign-in throttling: after too many failures a worker number or address is locked a while.

Counts live in the database (table signin_failures), so every server process sees them.
A key is "worker:<number>" (guessing one worker's PIN), "ip:<address>" (trying many
workers from one place) or "invite:<address>" (guessing invite codes). Failures count
within a window as long as the lock.

An attempt is reserved before its PIN or code is checked (`reserve_attempt`): one atomic
increment per key, refused once the count would pass the key's limit. So parallel guesses
cannot all slip past a check made before any of them failed. The count is failures plus
attempts in flight: a failure keeps its reservation (`attempt_failed`), a success gives it
back (`attempt_succeeded`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, case, delete, null, or_, select, update

from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.statements import dialect_insert


class _Refused(Exception):
    """A key is at its limit: undo the reservations made so far (raised to roll back)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def minutes_locked(db: Engine, keys: list[str], now: datetime | None = None) -> int:
    """How many more minutes the first locked key among `keys` stays locked (0: none is)."""
    now = now or utcnow()
    f = schema.signin_failures
    with db.connect() as conn:
        rows = conn.execute(select(f.c.locked_until).where(f.c.key.in_(keys))).all()
    ends = [as_utc(r.locked_until) for r in rows if r.locked_until is not None]
    ends = [e for e in ends if e > now]
    if not ends:
        return 0
    return max(1, math.ceil((max(ends) - now).total_seconds() / 60))


def reserve_attempt(
    db: Engine, limits: dict[str, int], lock_minutes: int, now: datetime | None = None
) -> int:
    """Count one sign-in attempt against each key before it is checked.

    0 when the attempt may go ahead; otherwise the minutes to wait, and nothing is counted.
    """
    now = now or utcnow()
    window = timedelta(minutes=lock_minutes)
    f = schema.signin_failures
    # A key starts afresh once its lock has ended, or its window passed without a lock.
    fresh = or_(
        and_(f.c.locked_until.is_not(None), f.c.locked_until <= now),
        and_(f.c.locked_until.is_(None), f.c.window_started <= now - window),
    )
    try:
        with db.begin() as conn:
            # Keys in one order: two attempts never wait on each other's rows crosswise.
            for key in sorted(limits):
                # One statement inserts the key's first count or bumps the row's, so that
                # concurrent attempts queue on the row (PostgreSQL re-checks the WHERE on
                # the row as the one before left it; SQLite has one writer): at most
                # `limit` of them ever get a place.
                reserved = conn.execute(
                    dialect_insert(conn.dialect.name)(f)
                    .values(key=key, failures=1, window_started=now)
                    .on_conflict_do_update(
                        index_elements=[f.c.key],
                        set_={
                            "failures": case((fresh, 1), else_=f.c.failures + 1),
                            "window_started": case((fresh, now), else_=f.c.window_started),
                            "locked_until": case((fresh, null()), else_=f.c.locked_until),
                        },
                        where=or_(
                            fresh, and_(f.c.locked_until.is_(None), f.c.failures < limits[key])
                        ),
                    )
                    .returning(f.c.key)
                ).first()
                if reserved is None:
                    raise _Refused(key)
    except _Refused as refused:
        # Locked, or the limit is taken by attempts still being checked (whose failure
        # will lock the key for the full time).
        return minutes_locked(db, [refused.key], now) or lock_minutes
    return 0


def attempt_failed(
    db: Engine, limits: dict[str, int], lock_minutes: int, now: datetime | None = None
) -> None:
    """A reserved attempt failed: it stays counted; lock each key that reached its limit
    (attempts still in flight count too: their places are taken)."""
    now = now or utcnow()
    f = schema.signin_failures
    with db.begin() as conn:
        for key in sorted(limits):
            conn.execute(
                update(f)
                .where(f.c.key == key, f.c.failures >= limits[key], f.c.locked_until.is_(None))
                .values(locked_until=now + timedelta(minutes=lock_minutes))
            )


def attempt_succeeded(db: Engine, keys: list[str], clear: str | None = None) -> None:
    """A reserved attempt succeeded: give its place back, and forget `clear`'s failures."""
    f = schema.signin_failures
    with db.begin() as conn:
        if clear is not None:
            conn.execute(delete(f).where(f.c.key == clear))
        for key in sorted(set(keys) - {clear}):
            conn.execute(
                update(f).where(f.c.key == key, f.c.failures > 0).values(failures=f.c.failures - 1)
            )
            # Nothing left against the key: no row kept for every address that signed in.
            conn.execute(
                delete(f).where(f.c.key == key, f.c.failures == 0, f.c.locked_until.is_(None))
            )

"""Sign-in throttling: after too many failures a worker number or address is locked a while.

Counts live in the database (table signin_failures), so every server process sees them.
A key is "worker:<number>" (guessing one worker's PIN) or "ip:<address>" (trying many
workers from one place). Failures count within a window as long as the lock.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update

from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.statements import dialect_insert


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


def record_failure(
    db: Engine, limits: dict[str, int], lock_minutes: int, now: datetime | None = None
) -> None:
    """Count one failed sign-in against each key; lock a key that reaches its limit."""
    now = now or utcnow()
    window = timedelta(minutes=lock_minutes)
    f = schema.signin_failures
    with db.begin() as conn:
        for key, limit in limits.items():
            # Two failures at once must not collide on the first row: insert-or-nothing.
            first = conn.execute(
                dialect_insert(conn.dialect.name)(f)
                .values(key=key, failures=1, window_started=now)
                .on_conflict_do_nothing()
                .returning(f.c.key)
            ).first()
            row = (
                None if first is not None else conn.execute(select(f).where(f.c.key == key)).first()
            )
            if row is None:
                failures = 1
            elif now - as_utc(row.window_started) > window:
                failures = 1
                conn.execute(
                    update(f)
                    .where(f.c.key == key)
                    .values(failures=1, window_started=now, locked_until=None)
                )
            else:
                failures = row.failures + 1
                conn.execute(update(f).where(f.c.key == key).values(failures=failures))
            if failures >= limit:
                conn.execute(update(f).where(f.c.key == key).values(locked_until=now + window))


def clear_failures(db: Engine, key: str) -> None:
    """Forget a key's failures (after a successful sign-in)."""
    with db.begin() as conn:
        conn.execute(delete(schema.signin_failures).where(schema.signin_failures.c.key == key))

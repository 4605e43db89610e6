"""What an operator may change about a worker: pause and unpause, arbiter, cleared for
restricted fields, and revoking their access. Each change is one transaction with its row in
the audit log, naming the operator who made it.

Pausing is the same act as the automatic pause on failed gold (settling.quarantine): the
worker's leases go back to the queue and fields that settled only on their votes reopen.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, select, update

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import Role
from kerani.microtasks.holds import restore_voided, vouch
from kerani.microtasks.settling import quarantine
from kerani.people.workers import audit_account
from kerani.storage import schema


@dataclass(frozen=True)
class StandingChange:
    """What one operator action changed."""

    worker_id: int
    name: str
    changed: tuple[str, ...]  # e.g. ("paused", "fields reopened: 3"); empty: already so
    reopened: int = 0


def _worker(conn: Connection, worker_id: int) -> tuple[str, bool, bool, bool]:
    w = schema.workers
    row = conn.execute(
        select(w.c.name, w.c.role, w.c.quarantined, w.c.trusted, w.c.cleared).where(
            w.c.id == worker_id
        )
    ).first()
    if row is None or row.role != Role.WORKER:
        raise NotFoundError(f"no worker with id {worker_id}")
    return str(row.name), bool(row.quarantined), bool(row.trusted), bool(row.cleared)


def set_standing(
    db: Engine,
    operator_id: int | None,
    worker_id: int,
    rules: CrowdSettings,
    *,
    paused: bool | None = None,
    trusted: bool | None = None,
    cleared: bool | None = None,
) -> StandingChange:
    """Pause or unpause a worker, make them an arbiter or not, cleared or not (None: as is).

    `operator_id` is who asked (None: the server's command line, which the log says).
    """
    if paused is None and trusted is None and cleared is None:
        raise BadInputError("say what to change: paused, trusted or cleared")
    w = schema.workers
    changed: list[str] = []
    reopened = 0
    with db.begin() as conn:
        name, was_paused, was_trusted, was_cleared = _worker(conn, worker_id)
        if paused is True and not was_paused:
            reopened = quarantine(conn, worker_id, rules)
            changed.append("paused")
        elif paused is False and was_paused:
            # Back to work with their record as it was: the next failed gold may pause
            # them again, which is the automatic rule's to decide.
            conn.execute(update(w).where(w.c.id == worker_id).values(quarantined=False))
            changed.append("unpaused")
            # The operator overrules the checks that paused them: what those voided is owed.
            if restore_voided(conn, worker_id):
                changed.append("voided pay restored")
        for flag, wanted, was in (
            ("trusted", trusted, was_trusted),
            ("cleared", cleared, was_cleared),
        ):
            if wanted is not None and wanted != was:
                conn.execute(update(w).where(w.c.id == worker_id).values({flag: wanted}))
                changed.append(flag if wanted else f"not {flag}")
        for what in changed:
            audit_account(conn, operator_id, worker_id, what)
        if reopened:
            changed.append(f"fields reopened: {reopened}")
    return StandingChange(worker_id, name, tuple(changed), reopened)


def revoke(
    db: Engine, operator_id: int | None, worker_id: int, rules: CrowdSettings
) -> StandingChange:
    """End a worker's access for good: sessions closed, access code, PIN and invite void,
    and paused (their answers stay on record, and paid)."""
    w = schema.workers
    with db.begin() as conn:
        name, was_paused, _trusted, _cleared = _worker(conn, worker_id)
        reopened = 0 if was_paused else quarantine(conn, worker_id, rules)
        vouch(conn, worker_id, None)  # ending access is no finding against their work
        conn.execute(delete(schema.sessions).where(schema.sessions.c.worker_id == worker_id))
        # A hash of a secret nobody holds: the old access code matches nothing any more.
        void = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
        conn.execute(
            update(w)
            .where(w.c.id == worker_id)
            .values(
                token_hash=void,
                pin_hash=None,
                invite_hash=None,
                invite_expires_at=None,
                trusted=False,
                cleared=False,
            )
        )
        audit_account(conn, operator_id, worker_id, "revoked")
    return StandingChange(worker_id, name, ("revoked",), reopened)

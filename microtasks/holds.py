"""Held pay: an answer's payment waits for a check on the worker's work before it is owed.

Every payment is recorded `held`. A passed gold answer vouches for the worker's answers up to
it (credited, `check_passed`) once the worker is past probation and not paused: an honest
mistake on a field, or one failed check, is still paid. A worker paused by the automatic rule
on failed gold is not paid for what was held (voided, `paused_on_checks`); an operator who
lifts that pause has it paid after all (`unpaused`). With no check within
CrowdSettings.pay_hold_days, a payment of a worker who is neither paused nor under suspicion
is paid on trust (`hold_ended`): gold may be rare, or off.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import PaymentStatus, PayReason
from kerani.storage import schema
from kerani.storage.database import utcnow


def vouch(conn: Connection, worker_id: int, up_to_answer_id: int | None) -> int:
    """Credit a worker's held payments for answers up to a passed check (None: all of them,
    as when an operator ends a worker's access); returns how many."""
    led = schema.ledger
    query = update(led).where(led.c.worker_id == worker_id, led.c.status == PaymentStatus.HELD)
    if up_to_answer_id is not None:
        query = query.where(led.c.answer_id <= up_to_answer_id)
    reason = PayReason.CHECK_PASSED if up_to_answer_id is not None else PayReason.HOLD_ENDED
    return conn.execute(
        query.values(status=PaymentStatus.CREDITED, reason=reason, settled_at=utcnow())
    ).rowcount


def void_held(conn: Connection, worker_id: int) -> int:
    """Void a worker's held payments: paused on failed checks. Returns how many."""
    led = schema.ledger
    return conn.execute(
        update(led)
        .where(led.c.worker_id == worker_id, led.c.status == PaymentStatus.HELD)
        .values(status=PaymentStatus.VOIDED, reason=PayReason.PAUSED_ON_CHECKS, settled_at=utcnow())
    ).rowcount


def restore_voided(conn: Connection, worker_id: int) -> int:
    """Pay what a pause on failed checks voided: an operator lifted it. Returns how many."""
    led = schema.ledger
    return conn.execute(
        update(led)
        .where(
            led.c.worker_id == worker_id,
            led.c.status == PaymentStatus.VOIDED,
            led.c.reason == PayReason.PAUSED_ON_CHECKS,
        )
        .values(status=PaymentStatus.CREDITED, reason=PayReason.UNPAUSED, settled_at=utcnow())
    ).rowcount


def release_due(
    conn: Connection,
    rules: CrowdSettings,
    worker_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Pay on trust what was held longer than the hold, for workers neither paused nor
    under suspicion (all workers, or one). Returns how many payments were credited."""
    led, w = schema.ledger, schema.workers
    now = now or utcnow()
    in_good_standing = select(w.c.id).where(w.c.quarantined.is_(False), w.c.suspect.is_(False))
    if worker_id is not None:
        in_good_standing = in_good_standing.where(w.c.id == worker_id)
    return conn.execute(
        update(led)
        .where(
            led.c.status == PaymentStatus.HELD,
            led.c.created_at < now - timedelta(days=rules.pay_hold_days),
            led.c.worker_id.in_(in_good_standing),
        )
        .values(status=PaymentStatus.CREDITED, reason=PayReason.HOLD_ENDED, settled_at=now)
    ).rowcount

"""Leases a phone kept offline, renewed when the line comes back (both databases): the ones
still the worker's, lapsed or not, run again in the phone's order; the others are gone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from kerani.core.errors import ForbiddenError
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_tasks, renew_saved_leases
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_queue import RULES, worker

LINES = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(8)]


def expiries(stores: Stores, ids: list[str]) -> dict[str, tuple[int | None, datetime | None]]:
    t = schema.tasks
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.lease_worker_id, t.c.lease_expires_at).where(t.c.id.in_(ids))
        ).all()
    return {
        r.id: (r.lease_worker_id, r.lease_expires_at and as_utc(r.lease_expires_at)) for r in rows
    }


def test_saved_leases_are_renewed_and_the_lost_ones_named(stores: Stores) -> None:
    seed_page(stores, LINES, template="receipt")
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    held = [task.task_id for task in claim_tasks(stores.db, ana, RULES, count=6)]
    lapsed, taken, answered = held[1], held[2], held[3]
    t = schema.tasks
    past = utcnow() - timedelta(seconds=60)
    with stores.db.begin() as conn:  # the phone was offline for longer than a lease
        conn.execute(update(t).where(t.c.id.in_(held[1:3])).values(lease_expires_at=past))
    # Ben took one of the lapsed tasks (as his claim would); Ana answered another meanwhile.
    with stores.db.begin() as conn:
        conn.execute(
            update(t)
            .where(t.c.id == taken)
            .values(lease_worker_id=ben, lease_expires_at=utcnow() + timedelta(seconds=300))
        )
    submit_answer(stores.db, answered, ana, "value", "TOTAL 3.00", "k-answered", RULES)
    unknown = "no-such-task-id-0000000"
    # The phone sends them in its order (its last one first): it gets back what is still
    # Ana's, the lapsed one included, and which are gone.
    order = [held[5], lapsed, taken, answered, held[0], unknown]
    now = utcnow()
    renewed, gone = renew_saved_leases(stores.db, ana, order, RULES, now=now)
    assert renewed == [held[5], lapsed, held[0]]
    assert gone == [taken, answered, unknown]
    after = expiries(stores, held)
    until = now + timedelta(seconds=RULES.lease_seconds)
    assert after[held[5]] == (ana, until)  # a full lease, a microsecond apart in order
    assert after[lapsed] == (ana, until + timedelta(microseconds=1))
    assert after[held[0]] == (ana, until + timedelta(microseconds=2))
    # Her live lease the phone did not name comes after, still hers.
    assert after[held[4]] == (ana, until + timedelta(microseconds=3))
    assert after[taken][0] == ben
    # A reload shows the tasks in the phone's order.
    again = [task.task_id for task in claim_tasks(stores.db, ana, RULES, count=4)]
    assert again == [held[5], lapsed, held[0], held[4]]


def test_a_paused_or_unpractised_worker_renews_nothing(stores: Stores) -> None:
    seed_page(stores, LINES, template="receipt")
    ana = worker(stores, "ana")
    held = [task.task_id for task in claim_tasks(stores.db, ana, RULES, count=2)]
    w = schema.workers
    with stores.db.begin() as conn:
        conn.execute(update(w).values(quarantined=True))
    with pytest.raises(ForbiddenError) as paused:
        renew_saved_leases(stores.db, ana, held, RULES)
    assert paused.value.key == "account_paused"
    with stores.db.begin() as conn:  # as if she had never passed practice
        conn.execute(update(w).values(quarantined=False, practice_passed_at=None))
    with pytest.raises(ForbiddenError) as unpractised:
        renew_saved_leases(stores.db, ana, held, RULES)
    assert unpractised.value.key == "practice_first"

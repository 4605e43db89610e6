"""The task queue on SQLite and PostgreSQL: leases, exactly-once answers, settling, refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from kerani.exceptions import BadInputError, ForbiddenError
from microtasks.queue import claim_next, leased_task, queue_depth, submit_answer
from microtasks.workers import add_person, person_by_code
from records.assembly import assemble_record
from storage import schema
from storage.database import utcnow
from storage.stores import Stores
from tests.factories import seed_page

GUESSES = [
    ("full_name", "text", "SITI AMINAH", 99.0),  # auto-accepted
    ("postcode", "postcode", "4O100", 99.0),  # fails its validator: to people
    ("city", "text", "SHAH ALAM", 40.0),  # low confidence: to people
]


def worker(stores: Stores, name: str) -> int:
    return person_by_code(stores.db, add_person(stores.db, name, "worker")).id


def test_routing_accepts_only_valid_confident_fields(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    with stores.db.connect() as conn:
        status = dict(conn.execute(select(schema.fields.c.name, schema.fields.c.status)).all())
    assert status == {"full_name": "auto_accepted", "postcode": "in_review", "city": "in_review"}
    assert queue_depth(stores.db) == 2


def test_a_claim_is_a_lease_that_expires(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    t1 = claim_next(stores.db, ana, lease_seconds=60)
    assert t1 is not None
    # Asking again (a reload) gives the same lease, not a second task.
    assert claim_next(stores.db, ana, 60) == t1
    t2 = claim_next(stores.db, ben, 60)
    assert t2 is not None and t2.task_id != t1.task_id
    # Nothing left for a third worker while both leases run ...
    cat = worker(stores, "cat")
    assert claim_next(stores.db, cat, 60) is None
    # ... but once Ana's lease has expired, her task goes back to the queue.
    later = utcnow() + timedelta(seconds=61)
    t3 = claim_next(stores.db, cat, 60, now=later)
    assert t3 is not None and t3.task_id == t1.task_id


def test_answers_are_recorded_once_and_settle_the_field(stores: Stores) -> None:
    page_id = seed_page(stores, GUESSES)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    task = claim_next(stores.db, ana, 60)
    assert task is not None and task.field_name == "postcode"
    first = submit_answer(stores.db, task.task_id, ana, "value", "40100", "key-1", 4)
    assert first.recorded and not first.settled  # disagrees with the OCR's 4O100
    again = submit_answer(stores.db, task.task_id, ana, "value", "40100", "key-1", 4)
    assert not again.recorded  # a retried submit changes nothing
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.answers)).scalar_one() == 1
    # Ana cannot take the same task again; Ben gets it and agrees with her.
    assert claim_next(stores.db, ana, 60).field_name == "city"  # type: ignore[union-attr]
    again_task = claim_next(stores.db, ben, 60)
    assert again_task is not None and again_task.task_id == task.task_id
    done = submit_answer(stores.db, task.task_id, ben, "value", "40100", "key-2", 4)
    assert done.settled and done.completed_page_id is None  # city is still open
    city = leased_task(stores.db, claim_next(stores.db, ana, 60).task_id, ana)  # type: ignore[union-attr]
    last = submit_answer(stores.db, city.task_id, ana, "value", "SHAH ALAM", "key-3", 4)
    assert last.settled and last.completed_page_id == page_id
    assert assemble_record(stores.db, page_id)
    with stores.db.connect() as conn:
        fields = {r.name: r for r in conn.execute(select(schema.fields)).all()}
    assert fields["postcode"].value == "40100" and fields["postcode"].source == "human"
    assert fields["full_name"].source == "ocr"
    assert fields["city"].agreement == 1.0


def test_another_workers_task_is_refused(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana, eve = worker(stores, "ana"), worker(stores, "eve")
    task = claim_next(stores.db, ana, 60)
    assert task is not None
    with pytest.raises(ForbiddenError):
        leased_task(stores.db, task.task_id, eve)
    with pytest.raises(ForbiddenError):
        submit_answer(stores.db, task.task_id, eve, "value", "x", "eve-1", 4)
    with pytest.raises(ForbiddenError):
        leased_task(stores.db, "no-such-task", eve)


def test_bad_answers_are_refused_clearly(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, 60)
    assert task is not None
    with pytest.raises(BadInputError, match="answer kind"):
        submit_answer(stores.db, task.task_id, ana, "maybe", "x", "k", 4)
    with pytest.raises(BadInputError, match="longer than"):
        submit_answer(stores.db, task.task_id, ana, "value", "x" * 5000, "k", 4)


def test_skip_gives_the_task_to_someone_else(stores: Stores) -> None:
    seed_page(stores, GUESSES[:2])
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    task = claim_next(stores.db, ana, 60)
    assert task is not None
    outcome = submit_answer(stores.db, task.task_id, ana, "skip", "", "s-1", 4)
    assert outcome.recorded and not outcome.settled
    assert claim_next(stores.db, ana, 60) is None  # not offered to Ana again
    assert claim_next(stores.db, ben, 60).task_id == task.task_id  # type: ignore[union-attr]

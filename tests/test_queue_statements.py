"""The queue's combined statements (one per step on PostgreSQL) record everything exactly once.

Each test runs on SQLite (one statement per row written) and PostgreSQL (data-modifying
CTEs: claim + view + audit; answer + audit + payment; settle + evidence + page check).
"""

from __future__ import annotations

from sqlalchemy import func, select

from kerani.core.settings import CrowdSettings
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.microtasks.tasks import task_priority
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page
from tests.test_queue import worker

CITY = [("city", "text", "SHAH ALAM", 40.0)]  # low confidence: one task for people


def _count(stores: Stores, table: object, *where: object) -> int:
    with stores.db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
            ).scalar_one()
        )


def test_a_retried_submit_records_audits_and_pays_exactly_once(stores: Stores) -> None:
    page_id = seed_page(stores, CITY)
    rules = CrowdSettings(gold_every=0, blind_share=1.0, target_posterior=0.98)
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    log = schema.audit_log
    assert _count(stores, log, log.c.action == "claim", log.c.task_id == task.task_id) == 1
    views = schema.worker_page_views
    assert _count(stores, views, views.c.worker_id == ana, views.c.fields_seen == 1) == 1
    first = submit_answer(stores.db, task.task_id, ana, "value", "SHAH ALAM", "k-1", rules)
    assert first.recorded and first.settled and first.completed_page_id == page_id
    # The same key again, and a new key for the same task: neither records anything.
    for key in ("k-1", "k-1", "k-2"):
        retry = submit_answer(stores.db, task.task_id, ana, "value", "SHAH ALAM", key, rules)
        assert not retry.recorded and not retry.settled
    assert _count(stores, schema.answers, schema.answers.c.task_id == task.task_id) == 1
    answer_rows = [log.c.action == "answer", log.c.task_id == task.task_id]
    assert _count(stores, log, *answer_rows, log.c.field_id == task.field_id) == 1
    with stores.db.connect() as conn:
        paid = conn.execute(select(schema.ledger)).all()
    assert [(p.worker_id, p.task_kind, p.amount_sen) for p in paid] == [
        (ana, "field", rules.rate_sen_field)
    ]
    assert paid[0].batch_id == batch_of(stores, page_id)
    assert _answers_done(stores, ana) == 1  # what decides when gold is due, and My work


def _answers_done(stores: Stores, worker_id: int) -> int:
    with stores.db.connect() as conn:
        w = schema.workers
        return int(conn.execute(select(w.c.answers_done).where(w.c.id == worker_id)).scalar_one())


def test_a_skip_is_not_counted_among_a_workers_answers(stores: Stores) -> None:
    seed_page(stores, [*CITY, ("town", "text", "KLANG", 40.0)])
    rules = CrowdSettings(gold_every=0, blind_share=1.0, target_posterior=0.98)
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    assert submit_answer(stores.db, task.task_id, ana, "skip", "", "s-1", rules).recorded
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    submit_answer(stores.db, task.task_id, ana, "unreadable", "", "u-1", rules)
    submit_answer(stores.db, task.task_id, ana, "unreadable", "", "u-1", rules)  # a retry
    assert _answers_done(stores, ana) == 1


def test_a_settle_counts_each_voter_and_the_ocr_once(stores: Stores) -> None:
    seed_page(stores, CITY)
    # Two people at most: the second answer settles on the likeliest answer.
    rules = CrowdSettings(gold_every=0, blind_share=1.0, target_posterior=0.999, max_answers=2)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    wrong = submit_answer(stores.db, task.task_id, ana, "value", "SHAH ALAN", "a-1", rules)
    assert wrong.recorded and not wrong.settled
    assert claim_next(stores.db, ben, rules).task_id == task.task_id  # type: ignore[union-attr]
    right = submit_answer(stores.db, task.task_id, ben, "value", "SHAH ALAM", "b-1", rules)
    assert right.settled and right.consensus is not None
    assert right.consensus.value == "SHAH ALAM"
    with stores.db.connect() as conn:
        quality = {
            r.worker_id: (r.agree_seen, r.agree_correct)
            for r in conn.execute(select(schema.worker_quality)).all()
        }
        ocr = conn.execute(
            select(func.sum(schema.ocr_quality.c.seen), func.sum(schema.ocr_quality.c.correct))
        ).one()
        field = conn.execute(select(schema.fields)).one()
    assert quality == {ana: (1, 0), ben: (1, 1)}
    assert tuple(ocr) == (1, 1)
    assert (field.status, field.value, field.answer_count) == ("settled", "SHAH ALAM", 2)


def test_an_answer_that_does_not_settle_counts_the_vote_and_frees_the_task(
    stores: Stores,
) -> None:
    seed_page(stores, CITY)
    rules = CrowdSettings(gold_every=0, blind_share=1.0, escalate_after=1)
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    # Disagreeing with the OCR: not settled; the vote is counted, the task goes back to the
    # queue, escalated (escalate_after=1) and first in the claim order.
    outcome = submit_answer(stores.db, task.task_id, ana, "value", "SHAH ALAM 2", "k-1", rules)
    assert outcome.recorded and not outcome.settled
    t, f = schema.tasks, schema.fields
    with stores.db.connect() as conn:
        row = conn.execute(
            select(t.c.lease_worker_id, t.c.escalated, t.c.priority, f.c.answer_count)
            .join(f, f.c.id == t.c.field_id)
            .where(t.c.id == task.task_id)
        ).one()
    assert row.lease_worker_id is None and row.escalated
    assert row.priority == task_priority(1, True) and row.answer_count == 1

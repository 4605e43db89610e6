"""Settling: the votes on a field, consensus, and what follows from it.

A field settles as soon as enough independent votes agree (see consensus); otherwise its
task goes back to the queue, escalated to arbiters after enough disagreement. A gold answer
measures the worker instead, and ends their probation once they have passed enough of it.
Answers of workers still on probation (or paused) are kept but are no votes. Settling
writes one statement on PostgreSQL (`_settled_postgresql`: field, task, workers' and OCR's
evidence, and whether the page is complete) and one per step on SQLite (`_settled_sqlite`).
Also here: releasing a skipped task, quarantining a worker (reopening what settled only
thanks to them) and reopening a field for arbitration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
)

from kerani.core.errors import NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import GoldOrigin
from kerani.microtasks import quality
from kerani.microtasks.consensus import Vote, answer_key, reach_consensus
from kerani.microtasks.holds import void_held, vouch
from kerani.microtasks.tasks import (
    AnswerVote,
    SubmitOutcome,
    SubmittedTask,
    new_task_id,
    task_priority,
)
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.outbox import record_settled
from kerani.storage.statements import prepared, run


def _votes_query(_dialect: str) -> Any:
    a, w, q = schema.answers, schema.workers, schema.worker_quality
    # One read: each answer with its worker's flags and quality counters (one row per
    # counter row), beside the OCR's counters, outer-joined so the OCR row comes anyway.
    ocr = quality.ocr_counts().subquery()
    answered = (
        select(
            a.c.id,
            a.c.kind,
            a.c.value,
            a.c.worker_id,
            a.c.blind,
            w.c.trusted,
            q.c.field_type,
            *(q.c[c] for c in quality.COUNTERS),
        )
        .join(w, w.c.id == a.c.worker_id)
        .outerjoin(q, q.c.worker_id == a.c.worker_id)
        .where(a.c.task_id == bindparam("tid"), a.c.kind != "skip", *counted_voter(w))
        .subquery()
    )
    return (
        select(ocr, answered).select_from(ocr.outerjoin(answered, true())).order_by(answered.c.id)
    )


def counted_voter(w: Any) -> list[Any]:
    """Conditions on a workers row whose answers are votes: not paused, and past probation
    (proven on gold) or named an arbiter by the operator."""
    return [w.c.quarantined.is_(False), or_(w.c.proven.is_(True), w.c.trusted.is_(True))]


def _votes(
    conn: Connection, task_id: str, ocr_text: str, field_type: str, ocr_group: str
) -> tuple[list[Vote], list[int]]:
    """The evidence on a field: the OCR's guess (weighed by its group's record) and each
    counted person's answer."""
    rows = conn.execute(
        prepared(conn, _votes_query), {"tid": task_id, "ocr_group": ocr_group}
    ).all()
    answered = [AnswerVote.from_mapping(r._mapping) for r in rows if r.id is not None]
    return _votes_from(answered, rows[0].ocr_seen, rows[0].ocr_right, ocr_text, field_type)


def _votes_from(
    rows: Sequence[AnswerVote], ocr_seen: int, ocr_right: int, ocr_text: str, field_type: str
) -> tuple[list[Vote], list[int]]:
    """Votes from answer rows (one per answer and counter row, in answer order)."""
    by_answer: dict[int, list[AnswerVote]] = {}
    for r in rows:
        by_answer.setdefault(r.id, []).append(r)
    votes = []
    if ocr_text.strip():
        votes.append(Vote("value", ocr_text, "ocr", quality.ocr_estimate(ocr_seen, ocr_right)))
    voters = []
    for mine in by_answer.values():
        first = mine[0]
        counters = [r for r in mine if r.field_type is not None]
        est = quality.estimate_from(
            counters, field_type, trusted=bool(first.trusted), quarantined=False
        )
        # An answer from before blindness was recorded was given with the guess pre-filled.
        anchored = first.blind is not True
        votes.append(
            Vote(
                first.kind,
                first.value,
                "human",
                est.accuracy,
                est.trusted,
                anchored=anchored,
                accepts_wrong=est.accepts_wrong,
            )
        )
        voters.append(first.worker_id)
    return votes, voters


def _open_fields_query(_dialect: str) -> Any:
    f = schema.fields
    return (
        select(func.count())
        .select_from(f)
        # Two comparisons rather than IN: a constant list would be rendered per call.
        .where(
            f.c.page_id == bindparam("page"),
            or_(f.c.status == "pending", f.c.status == "in_review"),
        )
    )


def _page_complete(conn: Connection, page_id: int) -> bool:
    return conn.execute(prepared(conn, _open_fields_query), {"page": page_id}).scalar_one() == 0


def _release_update(_dialect: str) -> Any:
    t = schema.tasks
    return (
        t.update()
        .where(t.c.id == bindparam("tid"))
        .values(lease_worker_id=None, lease_expires_at=None)
    )


def release(conn: Connection, task_id: str) -> None:
    """Give a task back to the queue (a skip): its lease ends, nothing else changes."""
    conn.execute(prepared(conn, _release_update), {"tid": task_id})


def settle_gold(
    conn: Connection,
    task: SubmittedTask,
    worker_id: int,
    kind: str,
    value: str,
    rules: CrowdSettings,
) -> SubmitOutcome:
    """Mark a gold answer right or wrong, and pause or trust the worker on their record."""
    field_type = task.field_type
    gold_value = str(task.gold_value)
    given = answer_key(kind, value, field_type)
    gold_key = answer_key("value", gold_value, field_type)
    correct = given == gold_key
    guess_key = answer_key("value", task.ocr_text, field_type) if task.ocr_text.strip() else None
    # Shown a pre-filled guess that the gold proves wrong: did they let it through?
    anchor_seen = not task.blind and guess_key is not None and guess_key != gold_key
    outcome = quality.Outcome(correct, anchor_seen, anchor_seen and given == guess_key)
    quality.record_evidence(conn, worker_id, field_type, gold=True, correct=outcome)
    conn.execute(prepared(conn, _task_settled), {"tid": task.id, "now": utcnow()})
    est = quality.estimates(conn, [worker_id], "*")[worker_id]
    w = schema.workers
    changes: dict[str, Any] = {"suspect": not correct}  # gold comes more often after a miss
    paused = quality.should_quarantine(est, rules.quarantine_min_gold, rules.quarantine_below)
    if paused:
        quarantine(conn, worker_id, rules)
        void_held(conn, worker_id)  # found out on checks: what waited for one is not paid
    elif not est.proven and passed_probation(est, rules):
        changes["proven"] = True  # their answers count as votes from now on
    elif (
        not est.trusted
        and est.gold_seen >= rules.trusted_min_gold
        and est.accuracy >= rules.trusted_min_accuracy
    ):
        # Proven on gold: may now arbitrate disputes. (Checked here, not on every claim.)
        changes["trusted"] = True
    conn.execute(w.update().where(w.c.id == worker_id).values(**changes))
    vouched = est.proven or est.trusted or changes.get("proven", False)
    if correct and vouched and not paused and task.answer_id is not None:
        vouch(conn, worker_id, task.answer_id)  # a passed check: what came before is owed
    completed: tuple[int, ...] = ()
    if changes.get("proven"):
        completed = _reweigh_answered(conn, worker_id, rules)
    return SubmitOutcome(True, False, None, None, gold_correct=correct, also_completed=completed)


def _reweigh_answered(conn: Connection, worker_id: int, rules: CrowdSettings) -> tuple[int, ...]:
    """Weigh again the open fields a worker answered while on probation, now that their
    answers are votes: each settles if it now has the evidence. Returns the pages this
    completed. Fields leased to someone else right now are left for their answer."""
    t, a, f = schema.tasks, schema.answers, schema.fields
    now = utcnow()
    rows = conn.execute(
        select(
            t.c.id,
            t.c.kind,
            t.c.escalated,
            t.c.note,
            t.c.gold_value,
            f.c.id.label("field_id"),
            f.c.kind.label("field_type"),
            f.c.ocr_text,
            func.coalesce(f.c.ocr_group, f.c.kind).label("ocr_group"),
            f.c.page_id,
            a.c.id.label("answer_id"),
            a.c.blind.label("lease_blind"),  # what their answer was shown
        )
        .join(a, a.c.task_id == t.c.id)
        .join(f, f.c.id == t.c.field_id)
        .where(
            a.c.worker_id == worker_id,
            a.c.kind != "skip",
            t.c.kind == "field",
            t.c.status == "open",
            or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now),
        )
        .order_by(t.c.id)
    ).all()
    completed = []
    for row in rows:
        task = SubmittedTask.from_row(row, row.answer_id)
        outcome = settle_field(conn, task, worker_id, rules)
        if outcome.completed_page_id is not None:
            completed.append(outcome.completed_page_id)
    return tuple(completed)


def passed_probation(est: quality.Estimate, rules: CrowdSettings) -> bool:
    """Whether a worker's gold record ends their probation: enough gold, mostly right."""
    return (
        est.gold_seen >= rules.probation_min_gold
        and est.gold_correct >= rules.probation_min_accuracy * est.gold_seen
    )


def settle_field(
    conn: Connection, task: SubmittedTask, worker_id: int, rules: CrowdSettings
) -> SubmitOutcome:
    """Weigh the field's votes after an answer: settle it, or give its task back."""
    postgres = conn.dialect.name == "postgresql"
    escalated = task.escalated
    ftype = task.field_type
    if task.votes is not None:  # PostgreSQL: read with the answer
        ocr_seen, ocr_right = int(task.ocr_seen or 0), int(task.ocr_right or 0)
        votes, voters = _votes_from(task.votes, ocr_seen, ocr_right, task.ocr_text, ftype)
    else:
        votes, voters = _votes(conn, task.id, task.ocr_text, ftype, task.ocr_group)
    result = reach_consensus(
        votes,
        rules.max_answers,
        field_type=ftype,
        target=rules.target_posterior,
        arbitration=escalated,
        arbiter_alone=bool(task.note),
    )
    if not result.settled:
        escalate = escalated or result.human_votes >= rules.escalate_after
        params: dict[str, Any] = {
            "fid": task.field_id,
            "tid": task.id,
            "count": result.human_votes,
            "escalate": escalate,
            "prio": task_priority(result.human_votes, escalate),
        }
        if postgres:
            _returned_postgresql(conn, params)
        else:
            _returned_sqlite(conn, params)
        return SubmitOutcome(True, False, None, result)
    winning = set(result.voters_for)
    human_offset = len(votes) - len(voters)
    outcomes = _voter_outcomes(votes, voters, human_offset, result.voters_for, ftype)
    ocr_right_now = (0 in winning) if human_offset else None  # None: the OCR did not vote
    params = {
        "fid": task.field_id,
        "tid": task.id,
        "page": task.page_id,
        "svalue": result.value,
        "svk": _value_kind(result.kind),
        "ssource": "arbitrated" if "arbitrated" in result.reason else "human",
        "sagree": result.agreement,
        "sposterior": result.posterior,
        "count": result.human_votes,
        "now": utcnow(),
        "field_type": ftype,  # the workers' counters, by type (the OCR's are by group)
        **quality.ocr_params(task.ocr_group, ocr_right_now, worker_id),
    }
    if postgres:
        complete = _settled_postgresql(conn, params, outcomes)
    else:
        complete = _settled_sqlite(conn, params, ftype, outcomes, ocr_right_now is not None)
    if complete:  # in the settle's transaction: no settled document without its outbox row
        record_settled(conn, task.page_id)
    return SubmitOutcome(True, True, task.page_id if complete else None, result)


def _voter_outcomes(
    votes: Sequence[Vote],
    voters: Sequence[int],
    human_offset: int,
    winners: Sequence[int],
    field_type: str,
) -> dict[int, quality.Outcome]:
    """What a settled field shows of each voter: agreed with the value or not, and, if
    they were shown the OCR's guess and it proved wrong, whether they accepted it."""
    keys = [answer_key(v.kind, v.value, field_type) for v in votes]
    winning_key = keys[winners[0]]
    ocr_key = keys[0] if human_offset else None
    outcomes = {}
    for i, worker_id in enumerate(voters):
        vote, key = votes[i + human_offset], keys[i + human_offset]
        misled = vote.anchored and ocr_key is not None and ocr_key != winning_key
        outcomes[worker_id] = quality.Outcome(key == winning_key, misled, key == ocr_key)
    return outcomes


# A field not settled: its votes are counted and its task goes back to the queue.


def _returned_postgresql(conn: Connection, params: dict[str, Any]) -> None:
    """PostgreSQL: one statement (_returned_cte)."""
    run(conn, _returned_cte, params)


def _returned_sqlite(conn: Connection, params: dict[str, Any]) -> None:
    """SQLite: the field's count, then the task."""
    conn.execute(prepared(conn, _field_counted), params)
    conn.execute(prepared(conn, _task_returned), params)


# A field settled: field and task written, each voter's and the OCR's evidence counted.
# Each returns whether the field's page is now complete (no field left open).


def _settled_postgresql(
    conn: Connection, params: dict[str, Any], outcomes: dict[int, quality.Outcome]
) -> bool:
    """PostgreSQL: one statement (_settle_cte); the OCR's counters move only when it
    voted, which its parameters say (quality.ocr_params)."""
    arrays = quality.outcome_arrays(outcomes)  # in worker order: one lock order
    return bool(run(conn, _settle_cte, params | arrays)[0].still_open == 0)


def _settled_sqlite(
    conn: Connection,
    params: dict[str, Any],
    field_type: str,
    outcomes: dict[int, quality.Outcome],
    ocr_voted: bool,
) -> bool:
    """SQLite: field, task, each voter's counters, the OCR's, then the page check."""
    conn.execute(prepared(conn, _field_settled), params)
    conn.execute(prepared(conn, _task_settled), params)
    quality.record_outcomes(conn, field_type, outcomes)
    if ocr_voted:  # the OCR voted: learn how far its doubted guesses hold
        conn.execute(prepared(conn, quality.ocr_evidence_upsert), params)
    return _page_complete(conn, params["page"])


def _field_counted(_dialect: str) -> Any:
    f = schema.fields
    return f.update().where(f.c.id == bindparam("fid")).values(answer_count=bindparam("count"))


def _task_returned(_dialect: str) -> Any:
    t = schema.tasks
    return (
        t.update()
        .where(t.c.id == bindparam("tid"))
        .values(
            lease_worker_id=None,
            lease_expires_at=None,
            escalated=bindparam("escalate"),
            priority=bindparam("prio"),
        )
    )


def _returned_cte(dialect: str) -> Any:
    """PostgreSQL: count the field's votes and give the task back to the queue, in one go."""
    counted = _field_counted(dialect).returning(schema.fields.c.id).cte("counted")
    return _task_returned(dialect).add_cte(counted)


def _field_settled(_dialect: str) -> Any:
    f = schema.fields
    return (
        f.update()
        .where(f.c.id == bindparam("fid"))
        .values(
            status="settled",
            value=bindparam("svalue"),
            value_kind=bindparam("svk"),
            source=bindparam("ssource"),
            agreement=bindparam("sagree"),
            posterior=bindparam("sposterior"),
            answer_count=bindparam("count"),
        )
    )


def _task_settled(_dialect: str) -> Any:
    t = schema.tasks
    return (
        t.update()
        .where(t.c.id == bindparam("tid"))
        .values(
            status="settled",
            settled_at=bindparam("now"),
            lease_worker_id=None,
            lease_expires_at=None,
        )
    )


def _settle_cte(dialect: str) -> Any:
    """PostgreSQL: settle the field and count the evidence in one statement.

    Returns how many other fields of the page are still open. The sub-statements all see
    the snapshot from before the statement, hence "other" fields: this one still reads
    as open.
    """
    f, t = schema.fields, schema.tasks
    field = _field_settled(dialect).returning(f.c.id).cte("settled_field")
    task = _task_settled(dialect).returning(t.c.id).cte("settled_task")
    counted = quality.agreement_upsert_from_arrays().returning(literal(1)).cte("counted")
    ocr = quality.ocr_evidence_upsert(dialect).returning(literal(1)).cte("ocr_counted")
    # Referenced in this order, so every settle takes the counter rows' locks in one order.
    return select(
        select(func.count()).select_from(counted).scalar_subquery().label("counted"),
        select(func.count()).select_from(ocr).scalar_subquery().label("ocr_counted"),
        _open_fields_query(dialect)
        .where(f.c.id != bindparam("fid"))
        .scalar_subquery()
        .label("still_open"),
    ).add_cte(field, task)


def quarantine(conn: Connection, worker_id: int, rules: CrowdSettings) -> int:
    """Stop giving a worker tasks, and reopen fields that settled only thanks to their votes.

    Returns how many fields were reopened. Their answers stay on record, but no longer count
    as evidence; their held pay stays held (settle_gold voids it when checks paused them).
    """
    t, a, f = schema.tasks, schema.answers, schema.fields
    conn.execute(
        schema.workers.update().where(schema.workers.c.id == worker_id).values(quarantined=True)
    )
    conn.execute(
        t.update()
        .where(t.c.lease_worker_id == worker_id)
        .values(lease_worker_id=None, lease_expires_at=None)
    )
    settled = conn.execute(
        select(
            t.c.id,
            t.c.escalated,
            t.c.note,
            f.c.id.label("field_id"),
            f.c.kind,
            f.c.ocr_text,
            func.coalesce(f.c.ocr_group, f.c.kind).label("ocr_group"),
            f.c.page_id,
        )
        .join(a, a.c.task_id == t.c.id)
        .join(f, f.c.id == t.c.field_id)
        .where(a.c.worker_id == worker_id, t.c.status == "settled", t.c.kind == "field")
    ).all()
    # Gold harvested from the crowd that this worker's answers helped back is gold no more.
    answered_fields = (
        select(t.c.field_id)
        .join(a, a.c.task_id == t.c.id)
        .where(a.c.worker_id == worker_id, t.c.kind == "field")
    )
    conn.execute(
        f.update()
        .where(f.c.gold_origin == GoldOrigin.CROWD, f.c.id.in_(answered_fields))
        .values(gold_value=None, gold_origin=None)
    )
    reopened = 0
    for row in settled:
        votes, _ = _votes(conn, row.id, row.ocr_text, row.kind, row.ocr_group)
        again = reach_consensus(
            votes,
            rules.max_answers,
            field_type=row.kind,
            target=rules.target_posterior,
            arbitration=row.escalated,
            arbiter_alone=bool(row.note),
        )
        if not again.settled:
            conn.execute(t.update().where(t.c.id == row.id).values(status="open", settled_at=None))
            conn.execute(
                f.update()
                .where(f.c.id == row.field_id)
                .values(
                    status="in_review",
                    value=None,
                    value_kind=None,
                    source=None,
                    agreement=None,
                    posterior=None,
                )
            )
            conn.execute(
                schema.pages.update()
                .where(schema.pages.c.id == row.page_id)
                .values(status="routed")
            )
            # Its record no longer stands: it is rebuilt when the field settles again.
            conn.execute(delete(schema.records).where(schema.records.c.page_id == row.page_id))
            reopened += 1
    return reopened


def _value_kind(kind: str | None) -> str:
    return "text" if kind == "value" else str(kind)


def reopen_field(db: Engine, field_id: int, note: str) -> str:
    """Send a settled field back to people for arbitration, showing them `note` (the rule).

    The field's earlier answers stay on record; the task reopens as escalated, so a trusted
    worker settles it, and its page returns from `complete` to `routed` until then.
    """
    t, f = schema.tasks, schema.fields
    with db.begin() as conn:
        field = conn.execute(select(f).where(f.c.id == field_id)).first()
        if field is None:
            raise NotFoundError(f"no field {field_id}")
        task_id = conn.execute(select(t.c.id).where(t.c.field_id == field_id)).scalar()
        values = {
            "status": "open",
            "escalated": True,
            "priority": task_priority(0, True),
            "note": note,
            "lease_worker_id": None,
            "lease_expires_at": None,
            "settled_at": None,
        }
        if task_id is None:
            task_id = new_task_id()
            conn.execute(
                insert(t).values(id=task_id, field_id=field_id, created_at=utcnow(), **values)
            )
        else:
            conn.execute(t.update().where(t.c.id == task_id).values(**values))
        conn.execute(
            f.update().where(f.c.id == field_id).values(status="in_review", validation_error=note)
        )
        conn.execute(
            schema.pages.update().where(schema.pages.c.id == field.page_id).values(status="routed")
        )
        return str(task_id)

"""The task queue: workers pull tasks under leases that expire; answers are recorded once.

A claim is a lease: the task is the worker's until `lease_expires_at`, after which it goes
back to the queue. A claim never hands one task to two workers (PostgreSQL: FOR UPDATE
SKIP LOCKED plus a conditional update; SQLite: one writer at a time). Each submit carries
an idempotency key, so a retried submit changes nothing and is never paid twice.

What a worker is offered: tasks they have not answered, of documents they have not seen
too much of, restricted fields only when cleared, escalated (disputed) fields only when
trusted, and now and then a gold snippet whose answer is known, which measures them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, delete, exists, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kerani.exceptions import BadInputError, ForbiddenError, NotFoundError
from kerani.settings import CrowdSettings
from microtasks import quality
from microtasks.consensus import ANSWER_KINDS, Consensus, Vote, answer_key, reach_consensus
from microtasks.ledger import pay
from storage import schema
from storage.database import as_utc, utcnow

SUBMIT_KINDS = (*ANSWER_KINDS, "skip")
MAX_ANSWER_CHARS = 2000


@dataclass(frozen=True)
class ClaimedTask:
    """A task leased to a worker, with what the review page shows of it."""

    task_id: str
    field_id: int
    page_id: int
    field_name: str
    field_kind: str
    template: str
    ocr_text: str
    snippet_key: str
    lease_expires_at: datetime
    note: str | None = None  # why the task is back, e.g. the rule its value broke


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submit did: whether it was new, whether the field settled, which page completed."""

    recorded: bool
    settled: bool
    completed_page_id: int | None
    consensus: Consensus | None
    gold_correct: bool | None = None


def task_priority(answers: int, escalated: bool) -> int:
    """Claim order: disputes for arbiters first, then fields with more answers (nearly done)."""
    return (1000 if escalated else 0) + answers


def new_task_id() -> str:
    """A task id nobody can guess (128 random bits)."""
    return secrets.token_urlsafe(16)


def _claimed(conn: Connection, task_id: str) -> ClaimedTask:
    t, f, p = schema.tasks, schema.fields, schema.pages
    field_ref = func.coalesce(t.c.field_id, t.c.gold_field_id)
    row = conn.execute(
        select(
            t.c.id,
            t.c.lease_expires_at,
            t.c.note,
            f.c.id.label("field_id"),
            f.c.page_id,
            f.c.name,
            f.c.kind,
            f.c.ocr_text,
            f.c.snippet_key,
            p.c.template,
        )
        .join(f, f.c.id == field_ref)
        .join(p, p.c.id == f.c.page_id)
        .where(t.c.id == task_id)
    ).one()
    return ClaimedTask(
        task_id=row.id,
        field_id=row.field_id,
        page_id=row.page_id,
        field_name=row.name,
        field_kind=row.kind,
        template=row.template,
        ocr_text=row.ocr_text,
        snippet_key=row.snippet_key,
        lease_expires_at=as_utc(row.lease_expires_at),
        note=row.note,
    )


def _audit(conn: Connection, worker_id: int, action: str, task_id: str, detail: str = "") -> None:
    conn.execute(
        insert(schema.audit_log).values(
            at=utcnow(),
            worker_id=worker_id,
            action=action,
            task_id=task_id,
            detail=detail or None,
            field_id=select(func.coalesce(schema.tasks.c.field_id, schema.tasks.c.gold_field_id))
            .where(schema.tasks.c.id == task_id)
            .scalar_subquery(),
        )
    )


def _count_view(conn: Connection, worker_id: int, page_id: int) -> None:
    v = schema.worker_page_views
    stmt = (pg_insert(v) if conn.dialect.name == "postgresql" else sqlite_insert(v)).values(
        worker_id=worker_id, page_id=page_id, fields_seen=1
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[v.c.worker_id, v.c.page_id], set_={"fields_seen": v.c.fields_seen + 1}
        )
    )


def _gold_due(done: int, every: int) -> bool:
    # A gold early on (second task) gives a first estimate; then one in every `every`.
    return every > 0 and (done == 1 or (done + 1) % every == 0)


def _claim_gold(
    conn: Connection, worker_id: int, lease_until: datetime, field_kind: str | None = None
) -> str | None:
    f, t, a = schema.fields, schema.tasks, schema.answers
    # The gold this worker has held or answered: a small set, read through their own rows.
    seen = (
        select(t.c.gold_field_id)
        .where(t.c.kind == "gold", t.c.lease_worker_id == worker_id)
        .union(
            select(t.c.gold_field_id)
            .join(a, a.c.task_id == t.c.id)
            .where(t.c.kind == "gold", a.c.worker_id == worker_id)
        )
    )
    conditions = [f.c.status == "gold", f.c.id.not_in(seen)]
    if field_kind is not None:  # in a column every snippet has the same type, gold too
        conditions.append(f.c.kind == field_kind)
    # Prefer gold the OCR got wrong: a worker who only accepts the pre-filled guess fails it.
    gold = conn.execute(
        select(f.c.id, f.c.value)
        .where(*conditions)
        .order_by((f.c.ocr_text == f.c.value).asc(), func.random())
        .limit(1)
    ).first()
    if gold is None:
        return None
    task_id = new_task_id()
    conn.execute(
        insert(t).values(
            id=task_id,
            field_id=None,
            gold_field_id=gold.id,
            kind="gold",
            status="open",
            gold_value=gold.value,
            lease_worker_id=worker_id,
            lease_expires_at=lease_until,
            created_at=utcnow(),
        )
    )
    return task_id


def claim_next(
    db: Engine, worker_id: int, rules: CrowdSettings, now: datetime | None = None
) -> ClaimedTask | None:
    """Lease the next task to the worker (or return the lease they already hold)."""
    tasks = claim_tasks(db, worker_id, rules, 1, now=now)
    return tasks[0] if tasks else None


def claim_tasks(
    db: Engine,
    worker_id: int,
    rules: CrowdSettings,
    count: int = 1,
    field_kind: str | None = None,
    now: datetime | None = None,
) -> list[ClaimedTask]:
    """Lease up to `count` tasks to the worker, the leases they already hold first.

    The review page holds two (the one shown and the next, preloaded); column mode holds a
    screenful of one field type (`field_kind`). Held tasks come in the order they were
    leased, so a reload shows the same task again.
    """
    now = now or utcnow()
    lease_until = now + timedelta(seconds=rules.lease_seconds)
    t, f, w = schema.tasks, schema.fields, schema.workers
    v, a = schema.worker_page_views, schema.answers
    done_q = (
        select(func.count())
        .select_from(a)
        .where(a.c.worker_id == worker_id, a.c.kind != "skip")
        .scalar_subquery()
    )
    with db.begin() as conn:
        worker = conn.execute(
            select(w.c.quarantined, w.c.cleared, w.c.trusted, done_q.label("done")).where(
                w.c.id == worker_id
            )
        ).one()
        if worker.quarantined:
            raise ForbiddenError("your account is paused; please contact the operator")
        field_ref = func.coalesce(t.c.field_id, t.c.gold_field_id)
        held_q = (
            select(t.c.id)
            .join(f, f.c.id == field_ref)
            .where(
                t.c.status == "open", t.c.lease_worker_id == worker_id, t.c.lease_expires_at > now
            )
            .order_by(t.c.lease_expires_at, t.c.id)
            .limit(count)
        )
        if field_kind is not None:
            held_q = held_q.where(f.c.kind == field_kind)
        claimed = [_claimed(conn, task_id) for task_id in conn.execute(held_q).scalars()]
        free = or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now)
        conditions = _offer_conditions(worker, worker_id, rules, now, field_kind)
        pick = (
            select(t.c.id)
            .join(f, f.c.id == t.c.field_id)
            .outerjoin(v, and_(v.c.page_id == f.c.page_id, v.c.worker_id == worker_id))
            .where(*conditions)
            # Disputes first, then fields nearly settled, then oldest (an indexed order).
            .order_by(t.c.priority.desc(), t.c.created_at, t.c.id)
            .limit(1)
        )
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=t)
        # One statement picks and leases; its WHERE repeats the guard so that a task taken
        # meanwhile (SQLite readers, PostgreSQL rows locked then freed) is never taken twice.
        claim = (
            t.update()
            .where(t.c.id == pick.scalar_subquery(), t.c.status == "open", free)
            .values(lease_worker_id=worker_id, lease_expires_at=lease_until)
            .returning(t.c.id)
        )
        # Leases taken together expire a microsecond apart, keeping their order on reload.
        step = timedelta(microseconds=1)
        while len(claimed) < count:
            lease_until += step
            if _gold_due(worker.done + len(claimed), rules.gold_every):
                gold_task = _claim_gold(conn, worker_id, lease_until, field_kind)
                if gold_task is not None:
                    _audit(conn, worker_id, "claim", gold_task, "gold")
                    claimed.append(_claimed(conn, gold_task))
                    continue
            task = _claim_one(conn, claim, pick, worker_id, lease_until)
            if task is None:
                break
            claimed.append(task)
        return claimed


def _offer_conditions(
    worker: Any, worker_id: int, rules: CrowdSettings, now: datetime, field_kind: str | None
) -> list[Any]:
    """What makes an open field task one this worker (a row with cleared, trusted) may take."""
    t, f = schema.tasks, schema.fields
    v, a = schema.worker_page_views, schema.answers
    conditions = [
        t.c.status == "open",
        t.c.kind == "field",
        or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now),
        ~exists().where(a.c.task_id == t.c.id, a.c.worker_id == worker_id),
        func.coalesce(v.c.fields_seen, 0) < rules.max_fields_per_document,
    ]
    if field_kind is not None:
        conditions.append(f.c.kind == field_kind)
    if not worker.cleared:
        conditions.append(f.c.sensitivity != "restricted")
    if not worker.trusted:
        # Disputes are for arbiters, until arbiters disagree too: the last vote before
        # the cap may come from anyone, so that every field ends up settled.
        conditions.append(or_(t.c.escalated.is_(False), f.c.answer_count >= rules.max_answers - 1))
    return conditions


def offered_kinds(
    db: Engine, worker_id: int, rules: CrowdSettings, now: datetime | None = None
) -> list[tuple[str, int]]:
    """Field types of tasks for this worker, the most plentiful first (for columns).

    Types the worker already holds leases of come first, so a reloaded column stays the same.
    """
    now = now or utcnow()
    t, f, w, v = schema.tasks, schema.fields, schema.workers, schema.worker_page_views
    with db.connect() as conn:
        worker = conn.execute(select(w.c.cleared, w.c.trusted).where(w.c.id == worker_id)).one()
        held = conn.execute(
            select(f.c.kind, func.count())
            .select_from(t)
            .join(f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
            .where(
                t.c.status == "open", t.c.lease_worker_id == worker_id, t.c.lease_expires_at > now
            )
            .group_by(f.c.kind)
        ).all()
        rows = conn.execute(
            select(f.c.kind, func.count())
            .select_from(t)
            .join(f, f.c.id == t.c.field_id)
            .outerjoin(v, and_(v.c.page_id == f.c.page_id, v.c.worker_id == worker_id))
            .where(*_offer_conditions(worker, worker_id, rules, now, None))
            .group_by(f.c.kind)
            .order_by(func.count().desc(), f.c.kind)
        ).all()
    counts = {str(k): int(n) for k, n in rows}
    holding = {str(k): int(n) for k, n in held}
    for kind, n in holding.items():
        counts[kind] = counts.get(kind, 0) + n
    # A held column (more than the two leases of the one-by-one page) outranks anything.
    return sorted(counts.items(), key=lambda kn: (holding.get(kn[0], 0) <= 2, -kn[1], kn[0]))


def _claim_one(
    conn: Connection, claim: Any, pick: Any, worker_id: int, lease_until: datetime
) -> ClaimedTask | None:
    for _attempt in range(5):
        task_id = conn.execute(
            claim.values(lease_worker_id=worker_id, lease_expires_at=lease_until)
        ).scalar()
        if task_id is None:
            if conn.execute(pick).first() is None:
                return None
            continue
        task = _claimed(conn, task_id)
        _count_view(conn, worker_id, task.page_id)
        _audit(conn, worker_id, "claim", task_id)
        return task
    return None


def leased_task(db: Engine, task_id: str, worker_id: int) -> ClaimedTask:
    """Return a task the worker holds the lease of; refuse any other task id."""
    with db.connect() as conn:
        row = conn.execute(
            select(schema.tasks.c.lease_worker_id, schema.tasks.c.status).where(
                schema.tasks.c.id == task_id
            )
        ).first()
        if row is None or row.lease_worker_id != worker_id or row.status != "open":
            # The same answer for "no such task" and "not yours": ids reveal nothing.
            raise ForbiddenError("this task is not leased to you")
        return _claimed(conn, task_id)


def _votes(
    conn: Connection, task_id: str, ocr_text: str, field_type: str
) -> tuple[list[Vote], list[int]]:
    """The evidence on a field: the OCR's guess and each unquarantined person's answer."""
    a, w = schema.answers, schema.workers
    rows = conn.execute(
        select(a.c.kind, a.c.value, a.c.worker_id, w.c.quarantined)
        .join(w, w.c.id == a.c.worker_id)
        .where(a.c.task_id == task_id, a.c.kind != "skip")
        .order_by(a.c.id)
    ).all()
    rows = [r for r in rows if not r.quarantined]
    est = quality.estimates(conn, [r.worker_id for r in rows], field_type)
    votes = []
    if ocr_text.strip():
        votes.append(Vote("value", ocr_text, "ocr", quality.ocr_accuracy(conn, field_type)))
    votes.extend(
        Vote(r.kind, r.value, "human", est[r.worker_id].accuracy, est[r.worker_id].trusted)
        for r in rows
    )
    return votes, [r.worker_id for r in rows]


def _page_complete(conn: Connection, page_id: int) -> bool:
    open_fields = conn.execute(
        select(func.count())
        .select_from(schema.fields)
        .where(
            schema.fields.c.page_id == page_id,
            schema.fields.c.status.in_(("pending", "in_review")),
        )
    ).scalar_one()
    return open_fields == 0


def _check_answer(kind: str, value: str, idempotency_key: str) -> None:
    if kind not in SUBMIT_KINDS:
        raise BadInputError(f"answer kind must be one of {', '.join(SUBMIT_KINDS)}, not {kind!r}")
    if len(value) > MAX_ANSWER_CHARS:
        raise BadInputError(f"answer is longer than {MAX_ANSWER_CHARS} characters")
    if not idempotency_key or len(idempotency_key) > 100:
        raise BadInputError("idempotency_key must be 1 to 100 characters")


def submit_answer(
    db: Engine,
    task_id: str,
    worker_id: int,
    kind: str,
    value: str,
    idempotency_key: str,
    rules: CrowdSettings,
) -> SubmitOutcome:
    """Record a worker's answer exactly once, pay it, and settle the field on consensus."""
    _check_answer(kind, value, idempotency_key)
    value = value if kind == "value" else ""
    t, a, f, p = schema.tasks, schema.answers, schema.fields, schema.pages
    with db.begin() as conn:
        query = (
            select(t, f.c.kind.label("field_type"), f.c.ocr_text, f.c.page_id, p.c.batch_id)
            .join(f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
            .join(p, p.c.id == f.c.page_id)
            .where(t.c.id == task_id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=t)
        task = conn.execute(query).first()
        if task is None or task.lease_worker_id != worker_id or task.status != "open":
            return _replayed(conn, task_id, worker_id, idempotency_key, task is None)
        # The unique keys (idempotency key; one answer per worker and task) refuse a replay.
        answer_id = conn.execute(
            _insert_ignoring_conflicts(conn, a)
            .values(
                task_id=task_id,
                worker_id=worker_id,
                kind=kind,
                value=value,
                idempotency_key=idempotency_key,
                created_at=utcnow(),
            )
            .returning(a.c.id)
        ).scalar()
        if answer_id is None:
            return _replayed(conn, task_id, worker_id, idempotency_key, False)
        _audit(conn, worker_id, "answer", task_id, kind)
        if kind == "skip":
            _release(conn, task_id)
            return SubmitOutcome(True, False, None, None)
        pay_kind = "gold" if task.kind == "gold" else ("arbitration" if task.escalated else "field")
        rate = {
            "gold": rules.rate_sen_gold,
            "arbitration": rules.rate_sen_arbitration,
            "field": rules.rate_sen_field,
        }[pay_kind]
        pay(
            conn,
            worker_id,
            int(answer_id),
            pay_kind,
            rate,
            None if task.kind == "gold" else task.batch_id,
        )
        if task.kind == "gold":
            return _settle_gold(conn, task, worker_id, kind, value, task.field_type, rules)
        return _settle_field(conn, task, rules)


def _insert_ignoring_conflicts(conn: Connection, table: Any) -> Any:
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(table).on_conflict_do_nothing()


def _release(conn: Connection, task_id: str) -> None:
    conn.execute(
        schema.tasks.update()
        .where(schema.tasks.c.id == task_id)
        .values(lease_worker_id=None, lease_expires_at=None)
    )


def _replayed(
    conn: Connection, task_id: str, worker_id: int, idempotency_key: str, missing: bool
) -> SubmitOutcome:
    """A submit that records nothing: a retry of an earlier one, or a refusal."""
    a = schema.answers
    previous = conn.execute(
        select(a.c.task_id, a.c.worker_id).where(a.c.idempotency_key == idempotency_key)
    ).first()
    if previous is not None:
        if (previous.task_id, previous.worker_id) != (task_id, worker_id):
            raise ForbiddenError("this idempotency key belongs to another answer")
        return SubmitOutcome(False, False, None, None)
    answered = conn.execute(
        select(a.c.id).where(a.c.task_id == task_id, a.c.worker_id == worker_id)
    ).first()
    if answered is not None:
        return SubmitOutcome(False, False, None, None)
    if missing:
        raise NotFoundError("no such task")
    raise ForbiddenError("this task is not leased to you")


def _settle_gold(
    conn: Connection,
    task: Row[Any],
    worker_id: int,
    kind: str,
    value: str,
    field_type: str,
    rules: CrowdSettings,
) -> SubmitOutcome:
    gold_value = str(task.gold_value)
    correct = answer_key(kind, value, field_type) == answer_key("value", gold_value, field_type)
    quality.record_evidence(conn, worker_id, field_type, gold=True, correct=correct)
    conn.execute(
        schema.tasks.update()
        .where(schema.tasks.c.id == task.id)
        .values(status="settled", settled_at=utcnow(), lease_worker_id=None, lease_expires_at=None)
    )
    est = quality.estimates(conn, [worker_id], "*")[worker_id]
    if quality.should_quarantine(est, rules.quarantine_min_gold, rules.quarantine_below):
        quarantine(conn, worker_id, rules)
    elif (
        not est.trusted
        and est.gold_seen >= rules.trusted_min_gold
        and est.accuracy >= rules.trusted_min_accuracy
    ):
        # Proven on gold: may now arbitrate disputes. (Checked here, not on every claim.)
        conn.execute(
            schema.workers.update().where(schema.workers.c.id == worker_id).values(trusted=True)
        )
    return SubmitOutcome(True, False, None, None, gold_correct=correct)


def _settle_field(conn: Connection, task: Row[Any], rules: CrowdSettings) -> SubmitOutcome:
    t, f = schema.tasks, schema.fields
    task_id = task.id
    escalated = bool(task.escalated)
    fid, ftype = task.field_id, task.field_type
    votes, voters = _votes(conn, task_id, task.ocr_text, ftype)
    result = reach_consensus(
        votes,
        rules.max_answers,
        field_type=ftype,
        target=rules.target_posterior,
        arbitration=escalated,
        arbiter_alone=bool(task.note),
    )
    if not result.settled:
        conn.execute(f.update().where(f.c.id == fid).values(answer_count=result.human_votes))
        escalate = escalated or result.human_votes >= rules.escalate_after
        conn.execute(
            t.update()
            .where(t.c.id == task_id)
            .values(
                lease_worker_id=None,
                lease_expires_at=None,
                escalated=escalate,
                priority=task_priority(result.human_votes, escalate),
            )
        )
        return SubmitOutcome(True, False, None, result)
    source = "arbitrated" if "arbitrated" in result.reason else "human"
    conn.execute(
        f.update()
        .where(f.c.id == fid)
        .values(
            status="settled",
            value=result.value,
            value_kind=_value_kind(result.kind),
            source=source,
            agreement=result.agreement,
            answer_count=result.human_votes,
        )
    )
    conn.execute(
        t.update()
        .where(t.c.id == task_id)
        .values(status="settled", settled_at=utcnow(), lease_worker_id=None, lease_expires_at=None)
    )
    winning = set(result.voters_for)
    human_offset = len(votes) - len(voters)
    for i, worker in enumerate(voters):
        quality.record_evidence(
            conn, worker, ftype, gold=False, correct=(i + human_offset) in winning
        )
    if human_offset:  # the OCR voted: learn how far its doubted guesses can be trusted
        quality.record_ocr_evidence(conn, ftype, 0 in winning)
    page_id = task.page_id
    return SubmitOutcome(True, True, page_id if _page_complete(conn, page_id) else None, result)


def quarantine(conn: Connection, worker_id: int, rules: CrowdSettings) -> int:
    """Stop giving a worker tasks, and reopen fields that settled only thanks to their votes.

    Returns how many fields were reopened. Their answers stay on record (and paid), but no
    longer count as evidence.
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
            f.c.page_id,
        )
        .join(a, a.c.task_id == t.c.id)
        .join(f, f.c.id == t.c.field_id)
        .where(a.c.worker_id == worker_id, t.c.status == "settled", t.c.kind == "field")
    ).all()
    reopened = 0
    for row in settled:
        votes, _ = _votes(conn, row.id, row.ocr_text, row.kind)
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
                    status="in_review", value=None, value_kind=None, source=None, agreement=None
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


def queue_depth(db: Engine) -> int:
    """Open field tasks waiting for people (gold tasks not counted)."""
    t = schema.tasks
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(t).where(t.c.status == "open", t.c.kind == "field")
            ).scalar_one()
        )


def log_view(db: Engine, worker_id: int, task_id: str) -> None:
    """Write a snippet view to the audit log: every view of citizen data is on record."""
    with db.begin() as conn:
        _audit(conn, worker_id, "view", task_id)


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

"""The task queue: workers pull tasks under leases that expire; answers are recorded once.

A claim is a lease: the task is the worker's until `lease_expires_at`, after which it goes
back to the queue. A claim never hands one task to two workers (PostgreSQL: FOR UPDATE
SKIP LOCKED plus a conditional update; SQLite: one writer at a time). Each submit carries an
idempotency key, so a retried submit changes nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, exists, func, insert, or_, select

from kerani.exceptions import BadInputError, ForbiddenError, NotFoundError
from microtasks.consensus import ANSWER_KINDS, Consensus, Vote, reach_consensus
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


def _claimed(conn: Connection, task_id: str) -> ClaimedTask:
    t, f, p = schema.tasks, schema.fields, schema.pages
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
        .join(f, f.c.id == t.c.field_id)
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
    field_id = conn.execute(
        select(schema.tasks.c.field_id).where(schema.tasks.c.id == task_id)
    ).scalar()
    conn.execute(
        insert(schema.audit_log).values(
            at=utcnow(),
            worker_id=worker_id,
            action=action,
            task_id=task_id,
            field_id=field_id,
            detail=detail or None,
        )
    )


def claim_next(
    db: Engine, worker_id: int, lease_seconds: int, now: datetime | None = None
) -> ClaimedTask | None:
    """Lease the next open task to the worker (or return the lease they already hold)."""
    now = now or utcnow()
    t = schema.tasks
    with db.begin() as conn:
        held = conn.execute(
            select(t.c.id)
            .where(
                t.c.status == "open", t.c.lease_worker_id == worker_id, t.c.lease_expires_at > now
            )
            .limit(1)
        ).scalar()
        if held is not None:
            return _claimed(conn, held)
        already_answered = exists().where(
            schema.answers.c.task_id == t.c.id, schema.answers.c.worker_id == worker_id
        )
        free = or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now)
        for _attempt in range(5):
            query = (
                select(t.c.id)
                .where(t.c.status == "open", free, ~already_answered)
                .order_by(t.c.created_at, t.c.id)
                .limit(1)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=t)
            task_id = conn.execute(query).scalar()
            if task_id is None:
                return None
            # The conditional update is the real guard: it only wins if the task is still free.
            won = conn.execute(
                t.update()
                .where(t.c.id == task_id, t.c.status == "open", free)
                .values(
                    lease_worker_id=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                )
            ).rowcount
            if won:
                _audit(conn, worker_id, "claim", task_id)
                return _claimed(conn, task_id)
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


def _votes(conn: Connection, task_id: str, ocr_text: str) -> list[Vote]:
    votes = [Vote("value", ocr_text, "ocr")] if ocr_text.strip() else []
    rows = conn.execute(
        select(schema.answers.c.kind, schema.answers.c.value)
        .where(schema.answers.c.task_id == task_id, schema.answers.c.kind != "skip")
        .order_by(schema.answers.c.id)
    ).all()
    votes.extend(Vote(r.kind, r.value, "human") for r in rows)
    return votes


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


def submit_answer(
    db: Engine,
    task_id: str,
    worker_id: int,
    kind: str,
    value: str,
    idempotency_key: str,
    max_answers: int,
) -> SubmitOutcome:
    """Record a worker's answer exactly once and settle the field when consensus is reached."""
    if kind not in SUBMIT_KINDS:
        raise BadInputError(f"answer kind must be one of {', '.join(SUBMIT_KINDS)}, not {kind!r}")
    if len(value) > MAX_ANSWER_CHARS:
        raise BadInputError(f"answer is longer than {MAX_ANSWER_CHARS} characters")
    if not idempotency_key or len(idempotency_key) > 100:
        raise BadInputError("idempotency_key must be 1 to 100 characters")
    value = value if kind == "value" else ""
    t, a, f = schema.tasks, schema.answers, schema.fields
    with db.begin() as conn:
        previous = conn.execute(
            select(a.c.task_id, a.c.worker_id).where(a.c.idempotency_key == idempotency_key)
        ).first()
        if previous is not None:
            if (previous.task_id, previous.worker_id) != (task_id, worker_id):
                raise ForbiddenError("this idempotency key belongs to another answer")
            return SubmitOutcome(False, False, None, None)
        query = select(t).where(t.c.id == task_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        task = conn.execute(query).first()
        if task is None:
            raise NotFoundError("no such task")
        answered = conn.execute(
            select(a.c.id).where(a.c.task_id == task_id, a.c.worker_id == worker_id)
        ).first()
        if answered is not None:
            return SubmitOutcome(False, False, None, None)
        if task.lease_worker_id != worker_id or task.status != "open":
            raise ForbiddenError("this task is not leased to you")
        conn.execute(
            insert(a).values(
                task_id=task_id,
                worker_id=worker_id,
                kind=kind,
                value=value,
                idempotency_key=idempotency_key,
                created_at=utcnow(),
            )
        )
        conn.execute(
            t.update().where(t.c.id == task_id).values(lease_worker_id=None, lease_expires_at=None)
        )
        _audit(conn, worker_id, "answer", task_id, kind)
        if kind == "skip":
            return SubmitOutcome(True, False, None, None)
        field = conn.execute(select(f).where(f.c.id == task.field_id)).one()
        result = reach_consensus(_votes(conn, task_id, field.ocr_text), max_answers)
        if not result.settled:
            conn.execute(
                f.update().where(f.c.id == field.id).values(answer_count=result.human_votes)
            )
            return SubmitOutcome(True, False, None, result)
        conn.execute(
            f.update()
            .where(f.c.id == field.id)
            .values(
                status="settled",
                value=result.value,
                value_kind=_value_kind(result.kind),
                source="human",
                agreement=result.agreement,
                answer_count=result.human_votes,
            )
        )
        conn.execute(
            t.update().where(t.c.id == task_id).values(status="settled", settled_at=utcnow())
        )
        complete = _page_complete(conn, field.page_id)
        return SubmitOutcome(True, True, field.page_id if complete else None, result)


def _value_kind(kind: str | None) -> str:
    return "text" if kind == "value" else str(kind)


def queue_depth(db: Engine) -> int:
    """Open tasks waiting for people."""
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(schema.tasks)
                .where(schema.tasks.c.status == "open")
            ).scalar_one()
        )


def expire_stale_leases(db: Engine, now: datetime | None = None) -> int:
    """Clear leases past their expiry so dashboards show them as free; returns how many."""
    now = now or utcnow()
    t = schema.tasks
    with db.begin() as conn:
        return int(
            conn.execute(
                t.update()
                .where(and_(t.c.status == "open", t.c.lease_expires_at <= now))
                .values(lease_worker_id=None, lease_expires_at=None)
            ).rowcount
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
            "note": note,
            "lease_worker_id": None,
            "lease_expires_at": None,
            "settled_at": None,
        }
        if task_id is None:
            task_id = secrets.token_urlsafe(16)
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

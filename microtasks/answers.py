"""Answers: a worker's submit is recorded once, audited and paid, then the field settles.

Each submit carries an idempotency key, so a retried submit changes nothing and is never
paid twice (the answers table's unique keys refuse the replay). Recording is one statement
on PostgreSQL (`_record_answer_postgresql`: lock, lease check, answer, audit row, payment,
and the field's votes read along) and one per step on SQLite (`_record_answer_sqlite`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert

from kerani.core.errors import BadInputError, ForbiddenError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.core.text import unstorable
from kerani.core.vocabulary import PaymentStatus, PayReason
from kerani.microtasks import quality
from kerani.microtasks.audit import audit
from kerani.microtasks.ledger import pay
from kerani.microtasks.pay_rates import default_bindings, rate_in_force, rate_of
from kerani.microtasks.settling import counted_voter, release, settle_field, settle_gold
from kerani.microtasks.tasks import (
    MAX_ANSWER_CHARS,
    SUBMIT_KINDS,
    AnswerVote,
    SubmitOutcome,
    SubmittedTask,
)
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.statements import dialect_insert, prepared, run


def submit_answer(
    db: Engine,
    task_id: str,
    worker_id: int,
    kind: str,
    value: str,
    idempotency_key: str,
    rules: CrowdSettings,
    *,
    prefilled: str | None = None,
    duration_ms: int | None = None,
) -> SubmitOutcome:
    """Record a worker's answer exactly once, pay it, and settle the field on consensus.

    `prefilled` is what the page put in the box before the worker typed, `duration_ms`
    how long they took; both are kept with the answer (None: the client did not say).
    """
    _check_answer(kind, value, idempotency_key)
    if prefilled is not None and len(prefilled) > MAX_ANSWER_CHARS:
        raise BadInputError(f"prefilled is longer than {MAX_ANSWER_CHARS} characters")
    if prefilled is not None and unstorable(prefilled):
        raise BadInputError(
            "prefilled holds a character that cannot be stored (NUL or a lone surrogate)"
        )
    if duration_ms is not None and not 0 <= duration_ms <= 86_400_000:
        raise BadInputError("duration_ms must be between 0 and 86400000 (one day)")
    value = value if kind == "value" else ""
    params = {
        "tid": task_id,
        "wid": worker_id,
        "akind": kind,
        "avalue": value,
        "key": idempotency_key,
        "now": utcnow(),
        "prefilled": prefilled,
        "duration_ms": duration_ms,
    }
    with db.begin() as conn:
        task = record_answer(conn, params, rules)
        if task is None or task.answer_id is None:
            return _replayed(conn, task_id, worker_id, idempotency_key, task is None)
        if kind == "skip":
            release(conn, task_id)
            return SubmitOutcome(True, False, None, None)
        if task.kind == "gold":
            return settle_gold(conn, task, worker_id, kind, value, rules)
        return settle_field(conn, task, worker_id, rules)


def record_answer(
    conn: Connection, params: dict[str, Any], rules: CrowdSettings
) -> SubmittedTask | None:
    """Lock and read the task, then record, audit and pay the answer if the lease allows.

    Returns the task with the new answer's id (None when nothing was recorded), or None
    when there is no such task. Bound parameters: see submit_answer.
    """
    if conn.dialect.name == "postgresql":
        return _record_answer_postgresql(conn, params, rules)
    return _record_answer_sqlite(conn, params, rules)


def _record_answer_postgresql(
    conn: Connection, params: dict[str, Any], rules: CrowdSettings
) -> SubmittedTask | None:
    """PostgreSQL, one statement (_answer_cte): lock, lease check, answer, audit row,
    payment, the worker's count, and the field's votes and OCR counters for settling."""
    rows = run(conn, _answer_cte, {**params, **default_bindings(rules)})
    if not rows:
        return None
    row = rows[0]
    return _submitted(
        row,
        row.answer_id,
        # json_agg of no rows is null: settling then reads the votes itself.
        votes=None if row.votes is None else tuple(AnswerVote.from_mapping(v) for v in row.votes),
        ocr_seen=row.ocr_seen,
        ocr_right=row.ocr_right,
    )


def _record_answer_sqlite(
    conn: Connection, params: dict[str, Any], rules: CrowdSettings
) -> SubmittedTask | None:
    """SQLite, one statement per step: read the task, then insert the answer, audit it,
    count it and pay it (each step only once the one before it has written)."""
    task = conn.execute(prepared(conn, _submitted_task), params).first()
    if task is None:
        return None
    answer_id = None
    if (
        task.lease_worker_id == params["wid"]
        and task.status == "open"
        # A lapsed lease still counts for its holder while nobody else has taken the task
        # (an answer typed on a phone offline, sent later); once another worker claims it,
        # the lease is theirs and this is refused (twin: _answer_cte).
        and task.lease_expires_at is not None
    ):
        # What the worker was shown is the server's record of the lease, not the client's.
        params = params | {"blind": bool(task.lease_blind)}
        answer_id = conn.execute(prepared(conn, _answer_insert), params).scalar()
    if answer_id is not None:
        audit(conn, params["wid"], "answer", params["tid"], params["akind"])
        if params["akind"] != "skip":
            conn.execute(prepared(conn, _count_answer), params)
            conn.execute(prepared(conn, _count_task_answer), params)
            kind = _pay_kind(task.kind, bool(task.escalated))
            batch = None if task.kind == "gold" else task.batch_id
            rate = rate_of(conn, task.field_type, kind, rules)
            pay(conn, params["wid"], int(answer_id), kind, rate, batch, task.field_type)
    return _submitted(task, None if answer_id is None else int(answer_id))


def _submitted(row: Any, answer_id: int | None, **evidence: Any) -> SubmittedTask:
    """The SubmittedTask of a task row (of _submitted_task or _answer_cte), either dialect;
    `evidence` is what PostgreSQL read in the same statement (votes, OCR counters)."""
    return SubmittedTask.from_row(row, answer_id, **evidence)


def _check_answer(kind: str, value: str, idempotency_key: str) -> None:
    if kind not in SUBMIT_KINDS:
        raise BadInputError(f"answer kind must be one of {', '.join(SUBMIT_KINDS)}, not {kind!r}")
    if len(value) > MAX_ANSWER_CHARS:
        raise BadInputError(f"answer is longer than {MAX_ANSWER_CHARS} characters")
    if not idempotency_key or len(idempotency_key) > 100:
        raise BadInputError("idempotency_key must be 1 to 100 characters")
    # Refused with a 400 rather than failing in the database with a 500, which a page's
    # outbox would retry for ever.
    if unstorable(value) or unstorable(idempotency_key):
        raise BadInputError(
            "answer holds a character that cannot be stored (NUL or a lone surrogate)"
        )


def _submitted_task(dialect: str) -> Any:
    t, f, p = schema.tasks, schema.fields, schema.pages
    query = (
        select(
            t.c.id,
            t.c.kind,
            t.c.status,
            t.c.lease_worker_id,
            t.c.lease_expires_at,
            t.c.escalated,
            t.c.note,
            t.c.gold_value,
            t.c.lease_blind,
            t.c.field_id,
            f.c.id.label("shown_field_id"),  # the field or the gold field: what the audit names
            f.c.kind.label("field_type"),
            f.c.ocr_text,
            func.coalesce(f.c.ocr_group, f.c.kind).label("ocr_group"),
            f.c.page_id,
            p.c.batch_id,
        )
        .join_from(t, f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
        .join(p, p.c.id == f.c.page_id)
        .where(t.c.id == bindparam("tid"))
    )
    # PostgreSQL: lock the task, so that its lease and answers are read as they are now.
    return query.with_for_update(of=t) if dialect == "postgresql" else query


def _answer_values() -> dict[str, Any]:
    return {
        "task_id": bindparam("tid"),
        "worker_id": bindparam("wid", type_=Integer),
        "kind": bindparam("akind", type_=String),
        "value": bindparam("avalue", type_=Text),
        "idempotency_key": bindparam("key", type_=String),
        "created_at": bindparam("now", type_=DateTime(timezone=True)),
        "prefilled": bindparam("prefilled", type_=Text),
        "duration_ms": bindparam("duration_ms", type_=Integer),
        "blind": bindparam("blind", type_=Boolean),
    }


def _answer_insert(dialect: str) -> Any:
    a = schema.answers
    # The unique keys (idempotency key; one answer per worker and task) refuse a replay.
    return (
        dialect_insert(dialect)(a)
        .values(**_answer_values())
        .on_conflict_do_nothing()
        .returning(a.c.id)
    )


def _pay_kind(task_kind: str, escalated: bool) -> str:
    """The rate an answer earns: the SQL twin is the CASE in _answer_cte."""
    return "gold" if task_kind == "gold" else ("arbitration" if escalated else "field")


def _count_answer(_dialect: str) -> Any:
    w = schema.workers
    return w.update().where(w.c.id == bindparam("wid")).values(answers_done=w.c.answers_done + 1)


def _count_task_answer(_dialect: str) -> Any:
    t = schema.tasks
    return t.update().where(t.c.id == bindparam("tid")).values(answers_given=t.c.answers_given + 1)


def _answer_cte(dialect: str) -> Any:
    a, log, led = schema.answers, schema.audit_log, schema.ledger
    task = _submitted_task(dialect).cte("task")
    # The answer takes the lease's blindness from the task row, not from a parameter.
    values = _answer_values() | {"blind": task.c.lease_blind}
    # Data-modifying CTEs: each runs once, on the task row locked by the first.
    answer = (
        pg_insert(a)
        .from_select(
            list(values),
            select(task.c.id, *list(values.values())[1:]).where(
                task.c.lease_worker_id == values["worker_id"],
                task.c.status == "open",
                # A lapsed lease still counts for its holder while nobody else has taken
                # the task (typed offline, sent later): a claim by another worker makes
                # the lease theirs, and the task row is locked here against one meanwhile.
                task.c.lease_expires_at.is_not(None),
            ),
        )
        .on_conflict_do_nothing()
        .returning(a.c.id)
        .cte("answer")
    )
    recorded = task.join(answer, true())
    audit = (
        insert(log)
        .from_select(
            ["at", "worker_id", "action", "task_id", "field_id", "detail"],
            select(
                values["created_at"],
                values["worker_id"],
                literal("answer"),
                task.c.id,
                task.c.shown_field_id,
                values["kind"],
            ).select_from(recorded),
        )
        .cte("audit")
    )
    gold, arbitration = task.c.kind == "gold", task.c.escalated
    pay_kind = case((gold, "gold"), (arbitration, "arbitration"), else_="field")
    paid = (
        pg_insert(led)
        .from_select(
            [
                "worker_id",
                "answer_id",
                "task_kind",
                "amount_sen",
                "batch_id",
                "created_at",
                "field_type",
                "status",
                "reason",
            ],
            select(
                values["worker_id"],
                answer.c.id,
                pay_kind,
                # Gold earns the field rate of its type, like the work it looks like.
                rate_in_force(task.c.field_type, pay_kind),
                case((gold, None), else_=task.c.batch_id),
                values["created_at"],
                task.c.field_type,
                literal(PaymentStatus.HELD.value),
                literal(PayReason.WAITING_CHECK.value),
            )
            .select_from(recorded)
            .where(values["kind"] != "skip"),
        )
        .on_conflict_do_nothing(index_elements=[led.c.answer_id])
        .cte("paid")
    )
    w = schema.workers
    counted = (
        w.update()
        .where(
            w.c.id == values["worker_id"],
            select(answer.c.id).exists(),
            values["kind"] != "skip",
        )
        .values(answers_done=w.c.answers_done + 1)
        .cte("counted")
    )
    t = schema.tasks
    task_counted = (
        t.update()
        .where(t.c.id == task.c.id, select(answer.c.id).exists(), values["kind"] != "skip")
        .values(answers_given=t.c.answers_given + 1)
        .cte("task_counted")
    )
    ocr = quality.ocr_counts(dialect, task.c.ocr_group).lateral("ocr")
    # Only what settling needs: every column returned costs the driver work per row.
    return (
        select(
            *(task.c[c] for c in ("id", "kind", "escalated", "note", "gold_value", "field_id")),
            task.c.lease_blind,
            *(task.c[c] for c in ("field_type", "ocr_text", "ocr_group", "page_id")),
            answer.c.id.label("answer_id"),
            _votes_json(task, answer, values).label("votes"),
            ocr.c.ocr_seen,
            ocr.c.ocr_right,
        )
        .select_from(task.outerjoin(answer, true()).join(ocr, true()))
        .add_cte(audit, paid, counted, task_counted)
    )


def _vote_columns() -> list[Any]:
    w, q = schema.workers, schema.worker_quality
    return [w.c.trusted, q.c.field_type, *(q.c[c] for c in quality.COUNTERS)]


def _votes_json(task: Any, answer: Any, values: dict[str, Any]) -> Any:
    """The field's votes (each answer with its worker's counters) as JSON, read in the same
    statement that records the new answer. The statement's snapshot does not show the new
    row, so it is added from the insert's RETURNING; other answers cannot arrive meanwhile,
    because only the lease holder may answer and the task row is locked."""
    a, w, q = schema.answers, schema.workers, schema.worker_quality
    earlier = (
        select(a.c.id, a.c.kind, a.c.value, a.c.worker_id, a.c.blind, *_vote_columns())
        .join(w, w.c.id == a.c.worker_id)
        .outerjoin(q, q.c.worker_id == a.c.worker_id)
        .where(a.c.task_id == task.c.id, a.c.kind != "skip", *counted_voter(w))
    )
    new = (
        select(
            answer.c.id,
            values["kind"],
            values["value"],
            values["worker_id"],
            select(task.c.lease_blind).scalar_subquery(),
            *_vote_columns(),
        )
        .select_from(answer)
        .join(w, w.c.id == values["worker_id"])
        .outerjoin(q, q.c.worker_id == w.c.id)
        .where(values["kind"] != "skip", *counted_voter(w))
    )
    rows = union_all(earlier, new).subquery("vote")
    return (
        select(func.json_agg(aggregate_order_by(rows.table_valued(), rows.c.id)))
        .select_from(rows)
        .scalar_subquery()
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
    t = schema.tasks
    lapsed = conn.execute(
        select(t.c.id).where(
            t.c.id == task_id, t.c.lease_worker_id == worker_id, t.c.status == "open"
        )
    ).first()
    if lapsed is not None:
        # The worker's own lease, run out: say so, rather than "not yours".
        raise ForbiddenError("the time for this task ran out", key="lease_expired")
    raise ForbiddenError("this task is not leased to you", key="not_your_task")

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
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    Row,
    String,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert

from kerani.core.errors import BadInputError, ForbiddenError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.microtasks import quality
from kerani.microtasks.consensus import ANSWER_KINDS, Consensus, Vote, answer_key, reach_consensus
from kerani.microtasks.ledger import pay
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.statements import dialect_insert, prepared, run

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


def _shown(source: Any) -> Any:
    """What the review page shows of the tasks in `source` (tasks, or leased task rows)."""
    f, p = schema.fields, schema.pages
    return (
        select(
            source.c.id,
            source.c.lease_expires_at,
            source.c.note,
            f.c.id.label("field_id"),
            f.c.page_id,
            f.c.name,
            f.c.kind,
            f.c.ocr_text,
            f.c.snippet_key,
            p.c.template,
        )
        .join_from(source, f, f.c.id == func.coalesce(source.c.field_id, source.c.gold_field_id))
        .join(p, p.c.id == f.c.page_id)
    )


def _claimed_query(_dialect: str) -> Any:
    return _shown(schema.tasks).where(schema.tasks.c.id == bindparam("tid"))


def _claimed(conn: Connection, task_id: str) -> ClaimedTask:
    return _claimed_task(run(conn, _claimed_query, {"tid": task_id})[0])


def _claimed_task(row: Row[Any]) -> ClaimedTask:
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


def _audit_insert(_dialect: str) -> Any:
    t = schema.tasks
    return insert(schema.audit_log).values(
        at=bindparam("now"),
        worker_id=bindparam("wid"),
        action=bindparam("audit_action"),
        task_id=bindparam("tid"),
        detail=bindparam("audit_detail"),
        field_id=select(func.coalesce(t.c.field_id, t.c.gold_field_id))
        .where(t.c.id == bindparam("tid"))
        .scalar_subquery(),
    )


def _audit(conn: Connection, worker_id: int, action: str, task_id: str, detail: str = "") -> None:
    conn.execute(
        prepared(conn, _audit_insert),
        {
            "now": utcnow(),
            "wid": worker_id,
            "audit_action": action,
            "tid": task_id,
            "audit_detail": detail or None,
        },
    )


def _view_upsert(dialect: str) -> Any:
    v = schema.worker_page_views
    stmt = dialect_insert(dialect)(v).values(
        worker_id=bindparam("wid"), page_id=bindparam("page"), fields_seen=1
    )
    return _add_view_on_conflict(stmt)


def _add_view_on_conflict(stmt: Any) -> Any:
    v = schema.worker_page_views
    return stmt.on_conflict_do_update(
        index_elements=[v.c.worker_id, v.c.page_id], set_={"fields_seen": v.c.fields_seen + 1}
    )


def _count_view(conn: Connection, worker_id: int, page_id: int) -> None:
    conn.execute(prepared(conn, _view_upsert), {"wid": worker_id, "page": page_id})


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


def _held_by(worker_id: Any, now: Any) -> Any:
    """Open tasks whose unexpired lease is the worker's (values or bound parameters)."""
    t = schema.tasks
    return and_(t.c.status == "open", t.c.lease_worker_id == worker_id, t.c.lease_expires_at > now)


def _first_claim(dialect: str, with_kind: bool) -> Any:
    """PostgreSQL: read the worker and, if they hold no lease and no gold is due, lease
    them a task, in one statement (the worker's flags are read inside it).

    Returns the worker's row (quarantined, cleared, trusted, done, held) with the leased
    task's columns, which are null when nothing was leased.
    """
    worker = _worker_query(dialect).cte("worker")
    flags = {column.key: select(column).scalar_subquery() for column in worker.c}
    gold_every = bindparam("gold_every", type_=Integer)
    trusted_every = func.greatest(gold_every, bindparam("gold_every_trusted", type_=Integer))
    # As in claim_tasks: no gold at all stays no gold for the trusted too.
    every = case((and_(flags["trusted"], gold_every != 0), trusted_every), else_=gold_every)
    # The SQL twin of _gold_due, for the worker's next task.
    gold_due = and_(
        every > 0, or_(flags["done"] == 1, (flags["done"] + 1) % func.nullif(every, 0) == 0)
    )
    may_take = and_(flags["quarantined"].is_(False), flags["held"].is_(None), ~gold_due)
    claim = _claim_cte(dialect, flags["cleared"], flags["trusted"], with_kind, may_take)
    shown = claim.subquery("claimed")
    return select(*worker.c, *shown.c).select_from(worker.outerjoin(shown, true())).add_cte(worker)


def _worker_query(_dialect: str) -> Any:
    t, w = schema.tasks, schema.workers
    # The first lease held, read along: a one-task claim then needs no second read.
    held_q = (
        select(t.c.id)
        .where(_held_by(bindparam("wid"), bindparam("now")))
        .order_by(t.c.lease_expires_at, t.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return select(
        w.c.quarantined,
        w.c.cleared,
        w.c.trusted,
        w.c.answers_done.label("done"),
        held_q.label("held"),
    ).where(w.c.id == bindparam("wid"))


def _held_query(_dialect: str, with_kind: bool) -> Any:
    """The worker's unexpired leases as the page shows them, in the order they were taken
    (only of one type, `field_kind`, with `with_kind`)."""
    t, f = schema.tasks, schema.fields
    held = (
        _shown(t)
        .where(_held_by(bindparam("wid"), bindparam("now")))
        .order_by(t.c.lease_expires_at, t.c.id)
        .limit(bindparam("count"))
    )
    return held.where(f.c.kind == bindparam("field_kind")) if with_kind else held


def _offer_conditions(cleared: Any, trusted: Any, with_kind: bool) -> list[Any]:
    """What makes an open field task one a worker with these flags may take now.

    The flags are booleans, or SQL expressions read in the same statement. Bound
    parameters: wid, now, max_fields, last_vote and, `with_kind`, field_kind.
    """
    t, f = schema.tasks, schema.fields
    v, a = schema.worker_page_views, schema.answers
    worker_id, now = (
        bindparam("wid", type_=Integer),
        bindparam("now", type_=DateTime(timezone=True)),
    )
    conditions = [
        t.c.status == "open",
        t.c.kind == "field",
        or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now),
        ~exists().where(a.c.task_id == t.c.id, a.c.worker_id == worker_id),
        func.coalesce(v.c.fields_seen, 0) < bindparam("max_fields"),
    ]
    if with_kind:  # a column: every snippet of one field type
        conditions.append(f.c.kind == bindparam("field_kind"))
    if cleared is not True:
        unrestricted = f.c.sensitivity != "restricted"
        conditions.append(unrestricted if cleared is False else or_(unrestricted, cleared))
    if trusted is not True:
        # Disputes are for arbiters, until arbiters disagree too: the last vote before
        # the cap may come from anyone, so that every field ends up settled. (A dispute
        # no arbiter may take is opened to all by _open_orphaned_disputes.)
        open_to_all = [t.c.escalated.is_(False), f.c.answer_count >= bindparam("last_vote")]
        conditions.append(or_(*open_to_all) if trusted is False else or_(*open_to_all, trusted))
    return conditions


def _is_arbiter(w: Any) -> list[Any]:
    """Conditions on a row of workers (or an alias) for an arbiter who takes tasks."""
    return [w.c.trusted.is_(True), w.c.quarantined.is_(False), w.c.role == "worker"]


def _an_arbiter_may_take(t: Any, f: Any) -> Any:
    """Whether some trusted worker may still be offered the task `t` of field `f`."""
    w = schema.workers.alias("arbiter")
    a = schema.answers.alias("arbiter_answer")
    v = schema.worker_page_views.alias("arbiter_view")
    return exists().where(
        *_is_arbiter(w),
        or_(f.c.sensitivity != "restricted", w.c.cleared.is_(True)),
        ~exists().where(a.c.task_id == t.c.id, a.c.worker_id == w.c.id),
        ~exists().where(
            v.c.worker_id == w.c.id,
            v.c.page_id == f.c.page_id,
            v.c.fields_seen >= bindparam("max_fields"),
        ),
    )


def _open_orphaned_disputes(_dialect: str) -> Any:
    """Open to every worker the disputes that no arbiter may take any more (each has
    answered it, or has seen their share of its document), which would otherwise wait
    for ever. Run when a worker finds nothing to do, so that busy claims never pay for it.

    With no arbiter at all, disputes wait for the operator to name one (`people add
    --trusted`): that is a choice of theirs, not a dead end of the queue.
    """
    t, f = schema.tasks, schema.fields
    return (
        t.update()
        .where(
            exists().where(*_is_arbiter(schema.workers)),
            t.c.status == "open",
            t.c.kind == "field",
            t.c.escalated.is_(True),
            t.c.field_id == f.c.id,
            f.c.answer_count < bindparam("last_vote"),
            ~_an_arbiter_may_take(t, f),
        )
        .values(escalated=False)
        .returning(t.c.id)
    )


def _claim_statements(
    dialect: str, cleared: Any, trusted: Any, with_kind: bool, *gate: Any
) -> tuple[Any, Any]:
    """The pick query and the claim (pick and lease) for a worker with these flags
    (booleans or SQL expressions), taking nothing unless every `gate` condition holds."""
    t, f, v = schema.tasks, schema.fields, schema.worker_page_views
    worker_id, now = (
        bindparam("wid", type_=Integer),
        bindparam("now", type_=DateTime(timezone=True)),
    )
    free = or_(t.c.lease_worker_id.is_(None), t.c.lease_expires_at <= now)
    pick = (
        select(t.c.id)
        .join(f, f.c.id == t.c.field_id)
        .outerjoin(v, and_(v.c.page_id == f.c.page_id, v.c.worker_id == worker_id))
        .where(*gate, *_offer_conditions(cleared, trusted, with_kind))
        # Disputes first, then fields nearly settled, then oldest (an indexed order).
        .order_by(t.c.priority.desc(), t.c.created_at, t.c.id)
        .limit(1)
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True, of=t)
    # One statement picks and leases; its WHERE repeats the guard so that a task taken
    # meanwhile (SQLite readers, PostgreSQL rows locked then freed) is never taken twice.
    claim = (
        t.update()
        .where(t.c.id == pick.scalar_subquery(), t.c.status == "open", free)
        .values(lease_worker_id=worker_id, lease_expires_at=bindparam("lease_until"))
        .returning(t.c.id)
    )
    return pick, claim


def _claim_cte(dialect: str, cleared: Any, trusted: Any, with_kind: bool, *gate: Any) -> Any:
    """PostgreSQL: lease a task, count the view and audit the claim in one statement."""
    t, v, log = schema.tasks, schema.worker_page_views, schema.audit_log
    _, claim = _claim_statements(dialect, cleared, trusted, with_kind, *gate)
    leased = claim.returning(t.c.lease_expires_at, t.c.note, t.c.field_id, t.c.gold_field_id).cte(
        "leased"
    )
    shown = _shown(leased).cte("shown")
    worker_id = bindparam("wid", type_=Integer)
    viewed = _add_view_on_conflict(
        dialect_insert(dialect)(v).from_select(
            ["worker_id", "page_id", "fields_seen"],
            select(worker_id, shown.c.page_id, literal(1)),
        )
    ).cte("viewed")
    audited = (
        insert(log)
        .from_select(
            ["at", "worker_id", "action", "task_id", "field_id"],
            select(
                bindparam("at", type_=DateTime(timezone=True)),
                worker_id,
                literal("claim"),
                shown.c.id,
                shown.c.field_id,
            ),
        )
        .cte("audited")
    )
    return select(shown).add_cte(viewed, audited)


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

    The review page holds three (the one shown and two in reserve); column mode holds a
    screenful of one field type (`field_kind`). Held tasks come in the order they were
    leased, so a reload shows the same task again.
    """
    now = now or utcnow()
    with_kind = field_kind is not None
    params: dict[str, Any] = {
        "wid": worker_id,
        "now": now,
        "count": count,
        "field_kind": field_kind,
        "max_fields": rules.max_fields_per_document,
        "last_vote": rules.max_answers - 1,
    }
    # Leases taken together expire a microsecond apart, keeping their order on reload.
    step = timedelta(microseconds=1)
    lease_until = now + timedelta(seconds=rules.lease_seconds) + step
    with db.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:  # one round trip: the worker, and a first lease when nothing is held
            gold = {"gold_every": rules.gold_every, "gold_every_trusted": rules.gold_every_trusted}
            rows = run(
                conn,
                _first_claim,
                params | gold | {"lease_until": lease_until, "at": utcnow()},
                with_kind,
            )
        else:
            rows = run(conn, _worker_query, params)
        if not rows:
            raise NotFoundError("no such worker")
        worker = rows[0]
        if worker.quarantined:
            raise ForbiddenError(
                "your account is paused; please contact the operator", key="account_paused"
            )
        if postgres and worker.id is not None:
            claimed = [_claimed_task(worker)]
        elif count == 1 and not with_kind:
            claimed = [_claimed(conn, worker.held)] if worker.held is not None else []
        else:
            rows = conn.execute(prepared(conn, _held_query, with_kind), params).all()
            claimed = [_claimed_task(row) for row in rows]
        variant = (bool(worker.cleared), bool(worker.trusted), with_kind)
        gold_every = rules.gold_every
        if worker.trusted and gold_every:
            gold_every = max(gold_every, rules.gold_every_trusted)
        # New leases end after the ones held, so that they come after them on a reload.
        lease_until = max([lease_until - step] + [task.lease_expires_at for task in claimed])
        opened = False
        while len(claimed) < count:
            lease_until += step
            if _gold_due(worker.done + len(claimed), gold_every):
                gold_task = _claim_gold(conn, worker_id, lease_until, field_kind)
                if gold_task is not None:
                    _audit(conn, worker_id, "claim", gold_task, "gold")
                    claimed.append(_claimed(conn, gold_task))
                    continue
            task = _claim_one(conn, variant, params | {"lease_until": lease_until})
            if task is None:
                # Nothing for this worker: if disputes wait for arbiters who may not take
                # them, they become everyone's, and the worker looks once more.
                if opened or worker.trusted or not run(conn, _open_orphaned_disputes, params):
                    break
                opened = True
                continue
            claimed.append(task)
        return claimed


def _claim_pick(dialect: str, cleared: bool, trusted: bool, with_kind: bool) -> Any:
    return _claim_statements(dialect, cleared, trusted, with_kind)[0]


def _claim_update(dialect: str, cleared: bool, trusted: bool, with_kind: bool) -> Any:
    # PostgreSQL: the one statement also counts the view and writes the audit row.
    if dialect == "postgresql":
        return _claim_cte(dialect, cleared, trusted, with_kind)
    return _claim_statements(dialect, cleared, trusted, with_kind)[1]


def _claim_one(
    conn: Connection, variant: tuple[bool, bool, bool], params: dict[str, Any]
) -> ClaimedTask | None:
    for _attempt in range(5):
        rows = run(conn, _claim_update, {**params, "at": utcnow()}, *variant)
        if not rows:
            if not run(conn, _claim_pick, params, *variant):
                return None
            continue
        leased = rows[0]
        if conn.dialect.name == "postgresql":
            return _claimed_task(leased)
        task = _claimed(conn, leased.id)
        _count_view(conn, params["wid"], task.page_id)
        _audit(conn, params["wid"], "claim", leased.id)
        return task
    return None


def offered_kinds(
    db: Engine, worker_id: int, rules: CrowdSettings, now: datetime | None = None
) -> list[tuple[str, int]]:
    """Field types of tasks for this worker, the most plentiful first (for columns).

    Types the worker already holds leases of come first, so a reloaded column stays the same.
    """
    now = now or utcnow()
    t, f, w, v = schema.tasks, schema.fields, schema.workers, schema.worker_page_views
    params = {
        "wid": worker_id,
        "now": now,
        "max_fields": rules.max_fields_per_document,
        "last_vote": rules.max_answers - 1,
    }
    with db.connect() as conn:
        worker = conn.execute(select(w.c.cleared, w.c.trusted).where(w.c.id == worker_id)).one()
        held = conn.execute(
            select(f.c.kind, func.count())
            .select_from(t)
            .join(f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
            .where(_held_by(worker_id, now))
            .group_by(f.c.kind)
        ).all()
        rows = conn.execute(
            select(f.c.kind, func.count())
            .select_from(t)
            .join(f, f.c.id == t.c.field_id)
            .outerjoin(v, and_(v.c.page_id == f.c.page_id, v.c.worker_id == worker_id))
            .where(*_offer_conditions(bool(worker.cleared), bool(worker.trusted), False))
            .group_by(f.c.kind)
            .order_by(func.count().desc(), f.c.kind),
            params,
        ).all()
    counts = {str(k): int(n) for k, n in rows}
    holding = {str(k): int(n) for k, n in held}
    for kind, n in holding.items():
        counts[kind] = counts.get(kind, 0) + n
    # A held column (more than the leases of the one-by-one page) outranks anything.
    return sorted(counts.items(), key=lambda kn: (holding.get(kn[0], 0) <= 3, -kn[1], kn[0]))


def renew_leases(
    db: Engine, worker_id: int, rules: CrowdSettings, now: datetime | None = None
) -> int:
    """Keep an active worker's reserve of leased tasks theirs: each gets a full lease from
    now, in the order they had. Returns how many."""
    now = now or utcnow()
    t = schema.tasks
    mine = _held_by(worker_id, now)
    with db.begin() as conn:
        held = conn.execute(select(t.c.id).where(mine).order_by(t.c.lease_expires_at, t.c.id)).all()
        if not held:
            return 0
        # Each gets a full lease from now, a microsecond apart in the order they had.
        base = now + timedelta(seconds=rules.lease_seconds)
        conn.execute(
            t.update()
            .where(t.c.id == bindparam("tid"), mine)
            .values(lease_expires_at=bindparam("until")),
            [{"tid": h.id, "until": base + timedelta(microseconds=i)} for i, h in enumerate(held)],
        )
        return len(held)


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
            raise ForbiddenError("this task is not leased to you", key="not_your_task")
        return _claimed(conn, task_id)


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
            w.c.trusted,
            q.c.field_type,
            *(q.c[c] for c in quality.COUNTERS),
        )
        .join(w, w.c.id == a.c.worker_id)
        .outerjoin(q, q.c.worker_id == a.c.worker_id)
        .where(a.c.task_id == bindparam("tid"), a.c.kind != "skip", w.c.quarantined.is_(False))
        .subquery()
    )
    return (
        select(ocr, answered).select_from(ocr.outerjoin(answered, true())).order_by(answered.c.id)
    )


def _votes(
    conn: Connection, task_id: str, ocr_text: str, field_type: str
) -> tuple[list[Vote], list[int]]:
    """The evidence on a field: the OCR's guess and each unquarantined person's answer."""
    rows = conn.execute(
        prepared(conn, _votes_query), {"tid": task_id, "field_type": field_type}
    ).all()
    answered = [r for r in rows if r.id is not None]
    return _votes_from(answered, rows[0].ocr_seen, rows[0].ocr_right, ocr_text, field_type)


def _votes_from(
    rows: list[Any], ocr_seen: int, ocr_right: int, ocr_text: str, field_type: str
) -> tuple[list[Vote], list[int]]:
    """Votes from answer rows (one per answer and counter row, in answer order)."""
    by_answer: dict[int, list[Any]] = {}
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
        votes.append(Vote(first.kind, first.value, "human", est.accuracy, est.trusted))
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
        if conn.dialect.name == "postgresql":
            task = _record_answer_postgresql(conn, params, rules)
        else:
            task = _record_answer(conn, params, rules)
        if task is None or task.answer_id is None:
            return _replayed(conn, task_id, worker_id, idempotency_key, task is None)
        if kind == "skip":
            _release(conn, task_id)
            return SubmitOutcome(True, False, None, None)
        if task.kind == "gold":
            return _settle_gold(conn, task, worker_id, kind, value, task.field_type, rules)
        return _settle_field(conn, task, worker_id, rules)


def _submitted_task(dialect: str) -> Any:
    t, f, p = schema.tasks, schema.fields, schema.pages
    query = (
        select(
            t.c.id,
            t.c.kind,
            t.c.status,
            t.c.lease_worker_id,
            t.c.escalated,
            t.c.note,
            t.c.gold_value,
            t.c.field_id,
            f.c.id.label("shown_field_id"),  # the field or the gold field: what the audit names
            f.c.kind.label("field_type"),
            f.c.ocr_text,
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


def _pay_kind(task: Row[Any]) -> str:
    return "gold" if task.kind == "gold" else ("arbitration" if task.escalated else "field")


def _rates(rules: CrowdSettings) -> dict[str, int]:
    return {
        "gold": rules.rate_sen_gold,
        "arbitration": rules.rate_sen_arbitration,
        "field": rules.rate_sen_field,
    }


def _record_answer(conn: Connection, params: dict[str, Any], rules: CrowdSettings) -> Any:
    """Lock and read the task, then record, audit and pay the answer if the lease allows.

    Returns the task row with the new answer's id (None when nothing was recorded), or
    None when there is no such task.
    """
    task = conn.execute(prepared(conn, _submitted_task), params).first()
    if task is None:
        return None
    answer_id = None
    if task.lease_worker_id == params["wid"] and task.status == "open":
        answer_id = conn.execute(prepared(conn, _answer_insert), params).scalar()
    if answer_id is not None:
        _audit(conn, params["wid"], "answer", params["tid"], params["akind"])
        if params["akind"] != "skip":
            conn.execute(prepared(conn, _count_answer), params)
            kind = _pay_kind(task)
            batch = None if task.kind == "gold" else task.batch_id
            pay(conn, params["wid"], int(answer_id), kind, _rates(rules)[kind], batch)
    return _TaskWithAnswer(task, answer_id)


def _count_answer(_dialect: str) -> Any:
    w = schema.workers
    return w.update().where(w.c.id == bindparam("wid")).values(answers_done=w.c.answers_done + 1)


class _TaskWithAnswer:
    """A task row plus the id of the answer just recorded on it (None if none was)."""

    def __init__(self, row: Row[Any], answer_id: int | None) -> None:
        self._row, self.answer_id = row, answer_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _record_answer_postgresql(
    conn: Connection, params: dict[str, Any], rules: CrowdSettings
) -> Any:
    """_record_answer in one statement: lock, lease check, answer, audit and payment."""
    rates = {f"rate_{k}": v for k, v in _rates(rules).items()}
    rows = run(conn, _answer_cte, {**params, **rates})
    return rows[0] if rows else None


def _answer_cte(dialect: str) -> Any:
    a, log, led = schema.answers, schema.audit_log, schema.ledger
    task = _submitted_task(dialect).cte("task")
    values = _answer_values()
    # Data-modifying CTEs: each runs once, on the task row locked by the first.
    answer = (
        pg_insert(a)
        .from_select(
            list(values),
            select(task.c.id, *list(values.values())[1:]).where(
                task.c.lease_worker_id == values["worker_id"], task.c.status == "open"
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
    paid = (
        pg_insert(led)
        .from_select(
            ["worker_id", "answer_id", "task_kind", "amount_sen", "batch_id", "created_at"],
            select(
                values["worker_id"],
                answer.c.id,
                case((gold, "gold"), (arbitration, "arbitration"), else_="field"),
                case(
                    (gold, bindparam("rate_gold", type_=Integer)),
                    (arbitration, bindparam("rate_arbitration", type_=Integer)),
                    else_=bindparam("rate_field", type_=Integer),
                ),
                case((gold, None), else_=task.c.batch_id),
                values["created_at"],
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
    ocr = quality.ocr_counts(dialect, task.c.field_type).lateral("ocr")
    # Only what settling needs: every column returned costs the driver work per row.
    return (
        select(
            *(task.c[c] for c in ("id", "kind", "escalated", "note", "gold_value", "field_id")),
            *(task.c[c] for c in ("field_type", "ocr_text", "page_id")),
            answer.c.id.label("answer_id"),
            _votes_json(task, answer, values).label("votes"),
            ocr.c.ocr_seen,
            ocr.c.ocr_right,
        )
        .select_from(task.outerjoin(answer, true()).join(ocr, true()))
        .add_cte(audit, paid, counted)
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
        select(a.c.id, a.c.kind, a.c.value, a.c.worker_id, *_vote_columns())
        .join(w, w.c.id == a.c.worker_id)
        .outerjoin(q, q.c.worker_id == a.c.worker_id)
        .where(a.c.task_id == task.c.id, a.c.kind != "skip", w.c.quarantined.is_(False))
    )
    new = (
        select(answer.c.id, values["kind"], values["value"], values["worker_id"], *_vote_columns())
        .select_from(answer)
        .join(w, w.c.id == values["worker_id"])
        .outerjoin(q, q.c.worker_id == w.c.id)
        .where(values["kind"] != "skip", w.c.quarantined.is_(False))
    )
    rows = union_all(earlier, new).subquery("vote")
    return (
        select(func.json_agg(aggregate_order_by(rows.table_valued(), rows.c.id)))
        .select_from(rows)
        .scalar_subquery()
    )


def _release_update(_dialect: str) -> Any:
    t = schema.tasks
    return (
        t.update()
        .where(t.c.id == bindparam("tid"))
        .values(lease_worker_id=None, lease_expires_at=None)
    )


def _release(conn: Connection, task_id: str) -> None:
    conn.execute(prepared(conn, _release_update), {"tid": task_id})


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
    raise ForbiddenError("this task is not leased to you", key="not_your_task")


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
    conn.execute(prepared(conn, _task_settled), {"tid": task.id, "now": utcnow()})
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


def _settle_field(
    conn: Connection, task: Row[Any], worker_id: int, rules: CrowdSettings
) -> SubmitOutcome:
    escalated = bool(task.escalated)
    ftype = task.field_type
    if getattr(task, "votes", None) is not None:  # PostgreSQL: read with the answer
        rows = [SimpleNamespace(**r) for r in task.votes]
        votes, voters = _votes_from(rows, task.ocr_seen, task.ocr_right, task.ocr_text, ftype)
    else:
        votes, voters = _votes(conn, task.id, task.ocr_text, ftype)
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
        params = {
            "fid": task.field_id,
            "tid": task.id,
            "count": result.human_votes,
            "escalate": escalate,
            "prio": task_priority(result.human_votes, escalate),
        }
        if conn.dialect.name == "postgresql":
            run(conn, _returned_cte, params)
        else:
            conn.execute(prepared(conn, _field_counted), params)
            conn.execute(prepared(conn, _task_returned), params)
        return SubmitOutcome(True, False, None, result)
    winning = set(result.voters_for)
    human_offset = len(votes) - len(voters)
    agreed = {w: (i + human_offset) in winning for i, w in enumerate(voters)}
    ocr_right = (0 in winning) if human_offset else None  # None: the OCR did not vote
    params = {
        "fid": task.field_id,
        "tid": task.id,
        "page": task.page_id,
        "svalue": result.value,
        "svk": _value_kind(result.kind),
        "ssource": "arbitrated" if "arbitrated" in result.reason else "human",
        "sagree": result.agreement,
        "count": result.human_votes,
        "now": utcnow(),
        **quality.ocr_params(ftype, ocr_right, worker_id),
    }
    if conn.dialect.name == "postgresql":
        # One statement: field and task settled, workers' and OCR's evidence counted.
        voters_in_order = sorted(agreed)
        params["voters"] = voters_in_order
        params["agreed"] = [int(agreed[w]) for w in voters_in_order]
        complete = run(conn, _settle_cte, params)[0].still_open == 0
    else:
        conn.execute(prepared(conn, _field_settled), params)
        conn.execute(prepared(conn, _task_settled), params)
        quality.record_outcomes(conn, ftype, agreed)
        if ocr_right is not None:  # the OCR voted: learn how far its doubted guesses hold
            conn.execute(prepared(conn, quality.ocr_evidence_upsert), params)
        complete = _page_complete(conn, task.page_id)
    return SubmitOutcome(True, True, task.page_id if complete else None, result)


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

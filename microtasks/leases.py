"""Leases: workers pull tasks under leases that expire.

A claim is a lease: the task is the worker's until `lease_expires_at`, after which it goes
back to the queue. A claim never hands one task to two workers (PostgreSQL: FOR UPDATE
SKIP LOCKED plus a conditional update; SQLite: one writer at a time).

What a worker is offered: tasks they have not answered, of documents they have not seen
too much of, restricted fields only when cleared, escalated (disputed) fields only when
trusted, and now and then, at random, a gold snippet whose answer is known, which measures
them (gold_every_for: more often on probation or after a miss). Gold looks like any task.

A lease is blind (the snippet without the OCR's guess) for every answer after a field's
first, for disputes and audits, and for a random share of first answers (`blind_share`, or
more: as often as the OCR's doubted guesses of the field's type prove right).

A claim on PostgreSQL is one statement (the worker's flags, the lease, the view count and
the audit row: `_start_claim_postgresql`, `_lease_postgresql`); on SQLite, one statement
per step (`_start_claim_sqlite`, `_lease_sqlite`).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
)

from kerani.core.errors import ForbiddenError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.microtasks import quality
from kerani.microtasks.audit import add_view_on_conflict, audit, count_view
from kerani.microtasks.consensus import answer_key
from kerani.microtasks.tasks import ClaimedTask, new_task_id
from kerani.storage import schema
from kerani.storage.database import as_utc, one_statement, reading, utcnow
from kerani.storage.statements import dialect_insert, prepared, run

# Draws for gold and blindness: unpredictable to anyone watching (not a seeded generator).
_DRAWS = random.SystemRandom()


def _shown(source: Any) -> Any:
    """What the review page shows of the tasks in `source` (tasks, or leased task rows).

    A blind lease shows no guess: the OCR's text never leaves the server for it.
    """
    f, p = schema.fields, schema.pages
    return (
        select(
            source.c.id,
            source.c.lease_expires_at,
            source.c.note,
            source.c.lease_blind,
            source.c.escalated,
            f.c.id.label("field_id"),
            f.c.page_id,
            f.c.name,
            f.c.kind,
            case((source.c.lease_blind, literal("")), else_=f.c.ocr_text).label("ocr_text"),
            f.c.snippet_key,
            p.c.template,
            p.c.template_id,
        )
        .join_from(source, f, f.c.id == func.coalesce(source.c.field_id, source.c.gold_field_id))
        .join(p, p.c.id == f.c.page_id)
    )


def _claimed_query(_dialect: str) -> Any:
    return _shown(schema.tasks).where(schema.tasks.c.id == bindparam("tid"))


def _claimed(conn: Connection, task_id: str) -> ClaimedTask:
    return _claimed_task(run(conn, _claimed_query, {"tid": task_id})[0])


def _claimed_task(row: Any) -> ClaimedTask:
    """A ClaimedTask from a row of _shown (a SQLAlchemy row or a driver row)."""
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
        blind=bool(row.lease_blind),
        template_id=row.template_id,
        escalated=bool(row.escalated),
    )


def gold_every_for(proven: bool, trusted: bool, suspect: bool, rules: CrowdSettings) -> int:
    """On average one gold in this many tasks for a worker of this standing (0: none)."""
    if rules.gold_every <= 0:
        return 0
    if trusted:
        return max(rules.gold_every, rules.gold_every_trusted)
    if not proven:
        return rules.gold_every_probation
    if suspect:
        return rules.gold_every_suspect
    return rules.gold_every


def _gold_every_sql(flags: dict[str, Any]) -> Any:
    """The SQL twin of gold_every_for, on the worker's flags read in the same statement."""
    every = bindparam("gold_every", type_=Integer)
    return case(
        (every <= 0, literal(0)),
        (flags["trusted"], func.greatest(every, bindparam("gold_every_trusted", type_=Integer))),
        (flags["proven"].is_(False), bindparam("gold_every_probation", type_=Integer)),
        (flags["suspect"], bindparam("gold_every_suspect", type_=Integer)),
        else_=every,
    )


def _blind_share(dialect: str) -> Any:
    """The share of first answers shown blind for the field of the task being leased:
    :blind_share, or, with :blind_follows, how often the OCR's doubted guesses of its group
    (template, type, evidence) proved right (microtasks.quality's estimate), if more."""
    t, f, o = schema.tasks, schema.fields, schema.ocr_quality
    # Correlated to the task being leased, two subqueries down.
    group = func.coalesce(f.c.ocr_group, f.c.kind)
    kind = select(group).where(f.c.id == t.c.field_id).correlate(t).scalar_subquery()
    ocr_right = (
        select(
            (func.coalesce(func.sum(o.c.correct), 0) + literal(quality.OCR_PRIOR_RIGHT))
            / (
                func.coalesce(func.sum(o.c.seen), 0)
                + literal(quality.OCR_PRIOR_RIGHT + quality.OCR_PRIOR_WRONG)
            )
        )
        .where(o.c.field_type == kind)
        .correlate(t)
        .scalar_subquery()
    )
    share = bindparam("blind_share", type_=Float)
    follows = case((bindparam("blind_follows", type_=Boolean), ocr_right), else_=share)
    # Two-argument max: greatest() on PostgreSQL, the scalar max() on SQLite.
    larger = func.greatest if dialect == "postgresql" else func.max
    return larger(share, follows)


def _gold_due(draw: float, every: int) -> bool:
    # At random, so that no position in a worker's stream tells gold from work.
    return every > 0 and draw * every < 1


def _gold_pick(worker_id: int, rules: CrowdSettings, field_kind: str | None = None) -> Any:
    """The query for a gold field to lease the worker: one they have not seen, the ones the
    OCR got wrong first (ix_fields_gold keeps it to the gold fields)."""
    f, t, a, v = schema.fields, schema.tasks, schema.answers, schema.worker_page_views
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
    # Gold made from real work is never shown to someone who answered that field...
    own = t.alias("own_task")
    answered_it = exists().where(
        own.c.field_id == f.c.id, a.c.task_id == own.c.id, a.c.worker_id == worker_id
    )
    # ...nor beyond their share of its document, like any other snippet of it.
    too_much = exists().where(
        v.c.worker_id == worker_id,
        v.c.page_id == f.c.page_id,
        v.c.fields_seen >= rules.max_fields_per_document,
    )
    conditions = [f.c.gold_value.is_not(None), f.c.id.not_in(seen), ~answered_it, ~too_much]
    if field_kind is not None:  # in a column every snippet has the same type, gold too
        conditions.append(f.c.kind == field_kind)
    # Prefer gold the OCR got wrong: a worker who only accepts the pre-filled guess fails it.
    return (
        select(f.c.id, f.c.gold_value, f.c.page_id, f.c.kind, f.c.ocr_text)
        .where(*conditions)
        .order_by((f.c.ocr_text == f.c.gold_value).asc(), func.random())
        .limit(1)
    )


def _claim_gold(
    conn: Connection,
    worker_id: int,
    lease_until: datetime,
    rules: CrowdSettings,
    field_kind: str | None = None,
    draws: random.Random = _DRAWS,
) -> ClaimedTask | None:
    """Lease the worker a gold snippet they have not seen (audited, its view counted)."""
    t = schema.tasks
    gold = conn.execute(_gold_pick(worker_id, rules, field_kind)).first()
    if gold is None:
        return None
    # A right guess pre-filled tests nothing (accepting it is right): such gold is shown
    # blind. A wrong one is shown pre-filled as often as not, which measures anchoring.
    guess_right = answer_key("value", gold.ocr_text, gold.kind) == answer_key(
        "value", gold.gold_value, gold.kind
    )
    task_id = new_task_id()
    conn.execute(
        insert(t).values(
            id=task_id,
            field_id=None,
            gold_field_id=gold.id,
            kind="gold",
            status="open",
            gold_value=gold.gold_value,
            lease_worker_id=worker_id,
            lease_expires_at=lease_until,
            # Blind about as often as a first look at work is: pre-fill tells nothing.
            lease_blind=guess_right or draws.random() < rules.blind_share_gold,
            created_at=utcnow(),
        )
    )
    count_view(conn, worker_id, gold.page_id)
    audit(conn, worker_id, "claim", task_id, "gold")
    return _claimed(conn, task_id)


def _held_by(worker_id: Any, now: Any) -> Any:
    """Open tasks whose unexpired lease is the worker's (values or bound parameters)."""
    t = schema.tasks
    return and_(t.c.status == "open", t.c.lease_worker_id == worker_id, t.c.lease_expires_at > now)


def _first_claim(dialect: str, with_kind: bool) -> Any:
    """PostgreSQL: read the worker and, if they hold no lease and no gold is due, lease
    them a task, in one statement (the worker's flags are read inside it).

    Returns the worker's row (quarantined, cleared, trusted, proven, suspect, done,
    practised, held)
    with the leased task's columns, which are null when nothing was leased.
    """
    worker = _worker_query(dialect).cte("worker")
    flags = {column.key: select(column).scalar_subquery() for column in worker.c}
    every = _gold_every_sql(flags)
    # The SQL twin of _gold_due, on the draw claim_tasks made for the worker's next task.
    gold_due = and_(every > 0, bindparam("gold_draw", type_=Float) * every < 1)
    # Paused, or not past practice: nothing (twin of _active_worker, which then refuses).
    may_take = and_(
        flags["quarantined"].is_(False),
        flags["practised"].is_not(None),
        flags["held"].is_(None),
        ~gold_due,
    )
    # The probation cap on the flags read here (the statement's :answer_cap is left open).
    t = schema.tasks
    capped = or_(
        flags["proven"],
        flags["trusted"],
        t.c.answers_given < bindparam("probation_cap", type_=Integer),
    )
    claim = _claim_cte(dialect, flags["cleared"], flags["trusted"], with_kind, may_take, capped)
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
        w.c.proven,
        w.c.suspect,
        w.c.answers_done.label("done"),
        w.c.practice_passed_at.label("practised"),
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
        t.c.answers_given < bindparam("answer_cap", type_=Integer),  # see answer_cap_for
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


NO_CAP = 2**31 - 1


def answer_cap_for(proven: bool, trusted: bool, rules: CrowdSettings) -> int:
    """The most answers a task may already have to be offered to this worker: on
    probation, `probation_answers_per_task` (their answers wait to count); else no cap."""
    return NO_CAP if proven or trusted else rules.probation_answers_per_task


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
    # Blind: any answer after the first (a confirmation then would be one more look at
    # the same guess), disputes, audits of auto-accepted fields, and a drawn share of the rest.
    audited = exists().where(f.c.id == t.c.field_id, f.c.audit.is_(True))
    blind = or_(
        t.c.priority > 0, audited, bindparam("blind_draw", type_=Float) < _blind_share(dialect)
    )
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
        .values(
            lease_worker_id=worker_id, lease_expires_at=bindparam("lease_until"), lease_blind=blind
        )
        .returning(t.c.id)
    )
    return pick, claim


def _claim_cte(dialect: str, cleared: Any, trusted: Any, with_kind: bool, *gate: Any) -> Any:
    """PostgreSQL: lease a task, count the view and audit the claim in one statement."""
    t, v = schema.tasks, schema.worker_page_views
    _, claim = _claim_statements(dialect, cleared, trusted, with_kind, *gate)
    leased = claim.returning(
        t.c.lease_expires_at,
        t.c.note,
        t.c.lease_blind,
        t.c.escalated,
        t.c.field_id,
        t.c.gold_field_id,
    ).cte("leased")
    shown = _shown(leased).cte("shown")
    worker_id = bindparam("wid", type_=Integer)
    viewed = add_view_on_conflict(
        dialect_insert(dialect)(v).from_select(
            ["worker_id", "page_id", "fields_seen"],
            select(worker_id, shown.c.page_id, literal(1)),
        )
    ).cte("viewed")
    audited = _audit_rows(shown, worker_id, "claim").cte("audited")
    return select(shown).add_cte(viewed, audited)


def _audit_rows(tasks: Any, worker_id: Any, action: str) -> Any:
    """An audit row for each task of `tasks` (a CTE with id and field_id), at bound `at`:
    the claim's and the snippet view's single statements on PostgreSQL."""
    return insert(schema.audit_log).from_select(
        ["at", "worker_id", "action", "task_id", "field_id"],
        select(
            bindparam("at", type_=DateTime(timezone=True)),
            worker_id,
            literal(action),
            tasks.c.id,
            tasks.c.field_id,
        ),
    )


def claim_next(
    db: Engine,
    worker_id: int,
    rules: CrowdSettings,
    now: datetime | None = None,
    draws: random.Random | None = None,
) -> ClaimedTask | None:
    """Lease the next task to the worker (or return the lease they already hold)."""
    tasks = claim_tasks(db, worker_id, rules, 1, now=now, draws=draws)
    return tasks[0] if tasks else None


def claim_tasks(
    db: Engine,
    worker_id: int,
    rules: CrowdSettings,
    count: int = 1,
    field_kind: str | None = None,
    now: datetime | None = None,
    draws: random.Random | None = None,
) -> list[ClaimedTask]:
    """Lease up to `count` tasks to the worker, the leases they already hold first.

    The review page holds three (the one shown and two in reserve); column mode holds a
    screenful of one field type (`field_kind`). Held tasks come in the order they were
    leased, so a reload shows the same task again. `draws` decides gold and blindness
    (tests pass a seeded one; by default nobody can predict them).
    """
    draws = draws or _DRAWS
    now = now or utcnow()
    with_kind = field_kind is not None
    params: dict[str, Any] = {
        "wid": worker_id,
        "now": now,
        "count": count,
        "field_kind": field_kind,
        "max_fields": rules.max_fields_per_document,
        "last_vote": rules.max_answers - 1,
        "blind_share": rules.blind_share,
        "blind_follows": rules.blind_follows_ocr,
    }
    # Leases taken together expire a microsecond apart, keeping their order on reload.
    step = timedelta(microseconds=1)
    lease_until = now + timedelta(seconds=rules.lease_seconds) + step
    # One draw per slot, made before the first statement: PostgreSQL's first claim decides
    # on draws[0] inside SQL, the loop below on the same draw for the same slot.
    gold_draws = [draws.random() for _ in range(count + 1)]
    blind_draws = [draws.random() for _ in range(count + 1)]
    with db.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            start = {
                "lease_until": lease_until,
                "gold_every": rules.gold_every,
                "gold_every_trusted": rules.gold_every_trusted,
                "gold_every_probation": rules.gold_every_probation,
                "gold_every_suspect": rules.gold_every_suspect,
                "gold_draw": gold_draws[0],
                "blind_draw": blind_draws[0],
                "probation_cap": rules.probation_answers_per_task,
                "answer_cap": NO_CAP,  # the first claim caps on the flags it reads
            }
            worker, claimed = _start_claim_postgresql(conn, params | start, with_kind)
        else:
            worker, claimed = _start_claim_sqlite(conn, params, with_kind)
        lease = _lease_postgresql if postgres else _lease_sqlite
        variant = (bool(worker.cleared), bool(worker.trusted), with_kind)
        on_probation = not (worker.proven or worker.trusted)
        params["answer_cap"] = answer_cap_for(bool(worker.proven), bool(worker.trusted), rules)
        gold_every = gold_every_for(
            bool(worker.proven), bool(worker.trusted), bool(worker.suspect), rules
        )
        # New leases end after the ones held, so that they come after them on a reload.
        lease_until = max([lease_until - step] + [task.lease_expires_at for task in claimed])
        opened = False
        while len(claimed) < count:
            lease_until += step
            slot = len(claimed)
            if _gold_due(gold_draws[slot], gold_every) and (
                gold := _claim_gold(conn, worker_id, lease_until, rules, field_kind, draws)
            ):
                claimed.append(gold)
                continue
            slot_params = {"lease_until": lease_until, "blind_draw": blind_draws[slot]}
            task = _claim_one(conn, lease, variant, params | slot_params)
            # Work is covered by others' answers: practice on gold meanwhile, which is what
            # ends probation.
            if task is None and on_probation and gold_every:
                task = _claim_gold(conn, worker_id, lease_until, rules, field_kind, draws)
            if task is None:
                # Nothing for this worker: if disputes wait for arbiters who may not take
                # them, they become everyone's, and the worker looks once more.
                if opened or worker.trusted or not run(conn, _open_orphaned_disputes, params):
                    break
                opened = True
                continue
            claimed.append(task)
        return claimed


# The two ways a claim starts: read the worker (refusing a paused one) and the leases they
# hold. PostgreSQL also takes a first lease in the same round trip when they hold none.


def _start_claim_postgresql(
    conn: Connection, params: dict[str, Any], with_kind: bool
) -> tuple[Any, list[ClaimedTask]]:
    """PostgreSQL: the worker's row and, if they hold no lease and no gold is due, a first
    lease with its view counted and its claim audited, in one statement (_first_claim)."""
    rows = run(conn, _first_claim, params | {"at": utcnow()}, with_kind)
    worker = _active_worker(rows)
    if worker.id is not None:  # the statement leased a task
        return worker, [_claimed_task(worker)]
    return worker, _held(conn, worker, params, with_kind)


def _start_claim_sqlite(
    conn: Connection, params: dict[str, Any], with_kind: bool
) -> tuple[Any, list[ClaimedTask]]:
    """SQLite: the worker's row (with the first lease they hold), then the leases held."""
    worker = _active_worker(run(conn, _worker_query, params))
    return worker, _held(conn, worker, params, with_kind)


def _active_worker(rows: Any) -> Any:
    if not rows:
        raise NotFoundError("no such worker")
    worker = rows[0]
    if worker.quarantined:
        raise ForbiddenError(
            "your account is paused; please contact the operator", key="account_paused"
        )
    if worker.practised is None:
        # Paid work comes after the practice round (microtasks.practice), never before.
        raise ForbiddenError("pass the practice round first (/welcome/1)", key="practice_first")
    return worker


def _held(
    conn: Connection, worker: Any, params: dict[str, Any], with_kind: bool
) -> list[ClaimedTask]:
    """The leases the worker holds, in the order they were taken."""
    if params["count"] == 1 and not with_kind:  # the worker's row names the first one
        return [_claimed(conn, worker.held)] if worker.held is not None else []
    rows = conn.execute(prepared(conn, _held_query, with_kind), params).all()
    return [_claimed_task(row) for row in rows]


# The two ways a lease is taken, given the worker's flags (`variant`): each returns the
# task leased, or None when the pick found nothing or lost a race for it.


def _lease_postgresql(
    conn: Connection, variant: tuple[bool, bool, bool], params: dict[str, Any]
) -> ClaimedTask | None:
    """PostgreSQL: lease, count the view and audit the claim in one statement (_claim_cte)."""
    rows = run(conn, _claim_cte, {**params, "at": utcnow()}, *variant)
    return _claimed_task(rows[0]) if rows else None


def _lease_sqlite(
    conn: Connection, variant: tuple[bool, bool, bool], params: dict[str, Any]
) -> ClaimedTask | None:
    """SQLite: lease (pick and update in one statement), read the task, count the view,
    audit the claim."""
    rows = run(conn, _claim_update, params, *variant)
    if not rows:
        return None
    task = _claimed(conn, rows[0].id)
    count_view(conn, params["wid"], task.page_id)
    audit(conn, params["wid"], "claim", task.task_id)
    return task


def _claim_pick(dialect: str, cleared: bool, trusted: bool, with_kind: bool) -> Any:
    return _claim_statements(dialect, cleared, trusted, with_kind)[0]


def _claim_update(dialect: str, cleared: bool, trusted: bool, with_kind: bool) -> Any:
    return _claim_statements(dialect, cleared, trusted, with_kind)[1]


def _claim_one(
    conn: Connection,
    lease: Any,
    variant: tuple[bool, bool, bool],
    params: dict[str, Any],
) -> ClaimedTask | None:
    """Lease one task with `lease` (_lease_postgresql or _lease_sqlite), trying again
    while the pick still finds one (another worker took the one picked meanwhile)."""
    for _attempt in range(5):
        task: ClaimedTask | None = lease(conn, variant, params)
        if task is not None:
            return task
        if not run(conn, _claim_pick, params, *variant):
            return None
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
        worker = conn.execute(
            select(w.c.cleared, w.c.trusted, w.c.proven).where(w.c.id == worker_id)
        ).one()
        params["answer_cap"] = answer_cap_for(bool(worker.proven), bool(worker.trusted), rules)
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


def _leased_query(_dialect: str) -> Any:
    """A task as the page shows it, with its lease's holder and status to check."""
    t = schema.tasks
    return (
        _shown(t)
        .add_columns(t.c.lease_worker_id, t.c.status.label("task_status"))
        .where(t.c.id == bindparam("tid"))
    )


def leased_task(db: Engine, task_id: str, worker_id: int) -> ClaimedTask:
    """Return a task the worker holds a live lease of; refuse any other task id."""
    # Each snippet fetch starts here: one read, one round trip.
    with reading(db) as conn:
        rows = run(conn, _leased_query, {"tid": task_id})
    row = rows[0] if rows else None
    _check_lease(row, worker_id, utcnow())
    return _claimed_task(row)


def _check_lease(row: Any, worker_id: int, now: datetime) -> None:
    """Refuse a task row that is not this worker's live lease."""
    if row is None or row.lease_worker_id != worker_id or row.task_status != "open":
        # The same answer for "no such task" and "not yours": ids reveal nothing.
        raise ForbiddenError("this task is not leased to you", key="not_your_task")
    if row.lease_expires_at is None or as_utc(row.lease_expires_at) <= now:
        # A lapsed lease shows nothing more, even to its holder: the task is the queue's.
        raise ForbiddenError("the time for this task ran out", key="lease_expired")


def _viewed_query(dialect: str) -> Any:
    """PostgreSQL: a task leased to the worker, its view written to the audit log, in one
    statement (nothing is written for a task that is not theirs)."""
    worker_id = bindparam("wid", type_=Integer)
    now = bindparam("at", type_=DateTime(timezone=True))
    leased = _leased_query(dialect).where(_held_by(worker_id, now)).cte("leased")
    logged = _audit_rows(leased, worker_id, "view").cte("logged")
    return select(leased).add_cte(logged)


def view_leased_task(db: Engine, task_id: str, worker_id: int) -> ClaimedTask:
    """Return a task the worker holds the lease of, its view written to the audit log;
    refuse any other task id (and log nothing)."""
    # Each snippet fetch comes here: on PostgreSQL one statement, committed on its own.
    now = utcnow()
    with one_statement(db) as conn:
        if conn.dialect.name == "postgresql":
            rows = run(conn, _viewed_query, {"tid": task_id, "wid": worker_id, "at": now})
            if rows:
                return _claimed_task(rows[0])
            # Refused: read the task once more only to say why (not theirs, or run out).
            refused = run(conn, _leased_query, {"tid": task_id})
            _check_lease(refused[0] if refused else None, worker_id, now)
            raise ForbiddenError("this task is not leased to you", key="not_your_task")
        rows = run(conn, _leased_query, {"tid": task_id})
        row = rows[0] if rows else None
        _check_lease(row, worker_id, now)
        audit(conn, worker_id, "view", task_id)
        return _claimed_task(row)


def renew_saved_leases(
    db: Engine,
    worker_id: int,
    task_ids: list[str],
    rules: CrowdSettings,
    now: datetime | None = None,
) -> tuple[list[str], list[str]]:
    """Renew the leases of `task_ids` (the tasks a phone kept, in its order) that are still
    the worker's, then their other live leases; returns (renewed, gone) among `task_ids`.

    A lease that lapsed while nobody else took the task is still the worker's: it gets a
    full lease again (the phone was offline). A task taken by someone else, given back,
    settled or withdrawn since is gone. Both databases: one read of the rows, locked on
    PostgreSQL (a claim skips them meanwhile), and one update that checks the holder again.
    """
    now = now or utcnow()
    t, w = schema.tasks, schema.workers
    ids = list(dict.fromkeys(task_ids))  # each once, in the phone's order
    still_theirs = and_(
        t.c.lease_worker_id == worker_id,
        t.c.status == "open",
        t.c.lease_expires_at.is_not(None),
    )
    with db.begin() as conn:
        # Paused, or not past practice: refused, as a claim is (_active_worker).
        flags = select(w.c.quarantined, w.c.practice_passed_at.label("practised"))
        _active_worker(conn.execute(flags.where(w.c.id == worker_id)).all())
        theirs = set(
            conn.execute(
                select(t.c.id).where(t.c.id.in_(ids), still_theirs).with_for_update(of=t)
            ).scalars()
        )
        others = conn.execute(
            select(t.c.id)
            .where(_held_by(worker_id, now), t.c.id.not_in(ids))
            .order_by(t.c.lease_expires_at, t.c.id)
            .with_for_update(of=t)
        ).scalars()
        renewed = [i for i in ids if i in theirs]
        order = renewed + list(others)
        if order:
            # A microsecond apart in the phone's order: a reload shows the task it showed.
            base = now + timedelta(seconds=rules.lease_seconds)
            conn.execute(
                t.update()
                .where(t.c.id == bindparam("tid"), still_theirs)
                .values(lease_expires_at=bindparam("until")),
                [
                    {"tid": tid, "until": base + timedelta(microseconds=i)}
                    for i, tid in enumerate(order)
                ],
            )
    return renewed, [i for i in ids if i not in theirs]

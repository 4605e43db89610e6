"""The crowd as the operator watches it: the queue, the leases, the pace, the workers.

Each function is one read of the database, returning plain figures; the console's pages, the
JSON API and `kerani crowd` only show them. Nothing here names a value a worker typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select

from kerani.core.settings import CrowdSettings
from kerani.core.stats import wilson_interval
from kerani.core.text import contains_pattern
from kerani.core.vocabulary import TaskKind, TaskStatus
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow

ACTIVE_MINUTES = 15
# The answers a worker's speed is the median of: their recent pace, not their first day's.
SPEED_ANSWERS = 200


@dataclass(frozen=True)
class OpenTasks:
    """Open work tasks of one field type, by how long they have waited."""

    field_type: str
    total: int
    under_an_hour: int
    under_a_day: int
    older: int
    oldest_hours: float


@dataclass(frozen=True)
class BatchPace:
    """A batch's open fields and when, at the crowd's last-hour pace, they will be done."""

    batch_id: str
    open_fields: int
    # Hours until done, oldest batch first (the claim order); None: no pace to go by.
    eta_hours: float | None


@dataclass(frozen=True)
class WaitingField:
    """A field people cannot settle alone: a dispute for an arbiter, or one at the limit."""

    task_id: str
    batch_id: str
    field_type: str
    answers: int
    why: str  # "dispute" | "answer limit"
    restricted: bool
    # How many workers may take it now (arbiters for a dispute, cleared for restricted).
    may_take: int


@dataclass(frozen=True)
class CrowdHealth:
    """The queue, the leases and the pace of the crowd, now."""

    at: datetime
    open_tasks: list[OpenTasks]
    leases_held: int
    leases_expired: int  # still naming a worker, run out: the task is free again
    active_workers: int  # answered in the last ACTIVE_MINUTES
    answers_last_hour: int
    fields_settled_last_hour: int
    batches: list[BatchPace] = field(default_factory=list)
    waiting: list[WaitingField] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The figures as JSON-ready values."""
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


def crowd_health(db: Engine, rules: CrowdSettings, now: datetime | None = None) -> CrowdHealth:
    """How the crowd's work stands now."""
    now = now or utcnow()
    t, f, p, a = schema.tasks, schema.fields, schema.pages, schema.answers
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    work = and_(t.c.status == TaskStatus.OPEN, t.c.kind == TaskKind.FIELD)
    with db.connect() as conn:
        by_type = conn.execute(
            select(
                f.c.kind,
                func.count(),
                func.sum(case((t.c.created_at >= hour, 1), else_=0)),
                func.sum(case((and_(t.c.created_at < hour, t.c.created_at >= day), 1), else_=0)),
                func.min(t.c.created_at),
            )
            .join(f, f.c.id == t.c.field_id)
            .where(work)
            .group_by(f.c.kind)
            .order_by(func.count().desc(), f.c.kind)
        ).all()
        leases = conn.execute(
            select(
                func.sum(case((t.c.lease_expires_at > now, 1), else_=0)),
                func.sum(case((t.c.lease_expires_at <= now, 1), else_=0)),
            ).where(t.c.status == TaskStatus.OPEN, t.c.lease_worker_id.is_not(None))
        ).one()
        active = conn.execute(
            select(func.count(func.distinct(a.c.worker_id))).where(
                a.c.created_at >= now - timedelta(minutes=ACTIVE_MINUTES)
            )
        ).scalar_one()
        answers_hour = conn.execute(
            select(func.count()).where(a.c.created_at >= hour, a.c.kind != "skip")
        ).scalar_one()
        settled_hour = conn.execute(
            select(func.count()).where(
                t.c.kind == TaskKind.FIELD, t.c.status == TaskStatus.SETTLED, t.c.settled_at >= hour
            )
        ).scalar_one()
        per_batch = conn.execute(
            select(p.c.batch_id, func.count(), func.min(t.c.created_at))
            .join(f, f.c.id == t.c.field_id)
            .join(p, p.c.id == f.c.page_id)
            .where(work)
            .group_by(p.c.batch_id)
            .order_by(func.min(t.c.created_at), p.c.batch_id)
        ).all()
        waiting = _waiting(conn, rules)
    open_tasks = [
        OpenTasks(
            field_type=str(kind),
            total=int(total),
            under_an_hour=int(young or 0),
            under_a_day=int(mid or 0),
            older=int(total) - int(young or 0) - int(mid or 0),
            oldest_hours=round((now - as_utc(oldest)).total_seconds() / 3600, 1),
        )
        for kind, total, young, mid, oldest in by_type
    ]
    return CrowdHealth(
        at=now,
        open_tasks=open_tasks,
        leases_held=int(leases[0] or 0),
        leases_expired=int(leases[1] or 0),
        active_workers=int(active),
        answers_last_hour=int(answers_hour),
        fields_settled_last_hour=int(settled_hour),
        batches=_paces(per_batch, int(settled_hour)),
        waiting=waiting,
    )


def _paces(per_batch: Sequence[Any], settled_per_hour: int) -> list[BatchPace]:
    """ETA per batch: the fields ahead of it and its own, at the last hour's settle rate."""
    paces, ahead = [], 0
    for batch_id, open_fields, _oldest in per_batch:
        ahead += int(open_fields)
        eta = round(ahead / settled_per_hour, 1) if settled_per_hour else None
        paces.append(BatchPace(str(batch_id), int(open_fields), eta))
    return paces


def _waiting(conn: Any, rules: CrowdSettings) -> list[WaitingField]:
    """Disputes waiting for an arbiter and fields at the answer limit, oldest first."""
    t, f, p, w = schema.tasks, schema.fields, schema.pages, schema.workers
    able = w.c.role == "worker", w.c.quarantined.is_(False)
    arbiters = conn.execute(select(func.count()).where(*able, w.c.trusted.is_(True))).scalar_one()
    cleared = conn.execute(select(func.count()).where(*able, w.c.cleared.is_(True))).scalar_one()
    both = conn.execute(
        select(func.count()).where(*able, w.c.trusted.is_(True), w.c.cleared.is_(True))
    ).scalar_one()
    workers = conn.execute(select(func.count()).where(*able)).scalar_one()
    rows = conn.execute(
        select(t.c.id, p.c.batch_id, f.c.kind, t.c.answers_given, t.c.escalated, t.c.restricted)
        .join(f, f.c.id == t.c.field_id)
        .join(p, p.c.id == f.c.page_id)
        .where(
            t.c.status == TaskStatus.OPEN,
            t.c.kind == TaskKind.FIELD,
            or_(t.c.escalated.is_(True), t.c.answers_given >= rules.max_answers),
        )
        .order_by(t.c.created_at, t.c.id)
        .limit(200)
    ).all()
    out = []
    for r in rows:
        if r.escalated:
            may = both if r.restricted else arbiters
        else:
            may = cleared if r.restricted else workers
        why = "dispute" if r.escalated else "answer limit"
        out.append(
            WaitingField(
                str(r.id),
                str(r.batch_id),
                str(r.kind),
                int(r.answers_given),
                why,
                bool(r.restricted),
                int(may),
            )
        )
    return out


@dataclass(frozen=True)
class WorkerRecord:
    """One worker as the operator sees them: standing, accuracy, gold, speed, pay."""

    id: int
    name: str
    status: str  # paused | probation | suspect | arbiter | worker
    trusted: bool
    cleared: bool
    answers: int
    gold_seen: int
    gold_correct: int
    accuracy: float | None  # on gold; None before any
    accuracy_low: float | None  # 95% Wilson interval
    accuracy_high: float | None
    seconds_per_answer: float | None  # median of their recent timed answers
    earned_sen: int
    last_active: datetime | None
    language: str = "en"  # of their pages
    joined: bool = False  # has chosen a PIN (else an invite or reset code is waiting)

    def as_json(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        data = asdict(self)
        data["last_active"] = self.last_active.isoformat() if self.last_active else None
        return data


def _status(row: Any) -> str:
    if row.quarantined:
        return "paused"
    if row.trusted:
        return "arbiter"
    if not row.proven:
        return "probation"
    return "suspect" if row.suspect else "worker"


def worker_records(
    db: Engine, search: str = "", status: str = "", limit: int = 500
) -> list[WorkerRecord]:
    """The workers (names containing `search`, of `status` if given), most active first."""
    w, q, led, a = schema.workers, schema.worker_quality, schema.ledger, schema.answers
    gold = (
        select(
            q.c.worker_id,
            func.sum(q.c.gold_seen).label("seen"),
            func.sum(q.c.gold_correct).label("correct"),
        )
        .group_by(q.c.worker_id)
        .subquery()
    )
    paid = (
        select(led.c.worker_id, func.sum(led.c.amount_sen).label("sen"))
        .where(led.c.status != "voided")
        .group_by(led.c.worker_id)
        .subquery()
    )
    last = (
        select(a.c.worker_id, func.max(a.c.created_at).label("at"))
        .group_by(a.c.worker_id)
        .subquery()
    )
    query = (
        select(
            w.c.id,
            w.c.name,
            w.c.trusted,
            w.c.cleared,
            w.c.quarantined,
            w.c.proven,
            w.c.suspect,
            w.c.answers_done,
            gold.c.seen,
            gold.c.correct,
            paid.c.sen,
            last.c.at,
            w.c.language,
            w.c.pin_hash.is_not(None).label("joined"),
        )
        .outerjoin(gold, gold.c.worker_id == w.c.id)
        .outerjoin(paid, paid.c.worker_id == w.c.id)
        .outerjoin(last, last.c.worker_id == w.c.id)
        .where(w.c.role == "worker")
        .order_by(w.c.answers_done.desc(), w.c.name)
    )
    if search:
        query = query.where(w.c.name.ilike(contains_pattern(search), escape="\\"))
    with db.connect() as conn:
        rows = conn.execute(query).all()
        rows = [r for r in rows if not status or _status(r) == status][:limit]
        speeds = _speeds(conn, [r.id for r in rows])
    records = []
    for r in rows:
        seen, right = int(r.seen or 0), int(r.correct or 0)
        low, high = wilson_interval(right, seen) if seen else (None, None)
        records.append(
            WorkerRecord(
                id=int(r.id),
                name=str(r.name),
                status=_status(r),
                trusted=bool(r.trusted),
                cleared=bool(r.cleared),
                answers=int(r.answers_done),
                gold_seen=seen,
                gold_correct=right,
                accuracy=right / seen if seen else None,
                accuracy_low=low,
                accuracy_high=high,
                seconds_per_answer=speeds.get(int(r.id)),
                earned_sen=int(r.sen or 0),
                last_active=as_utc(r.at) if r.at is not None else None,
                language=str(r.language),
                joined=bool(r.joined),
            )
        )
    return records


def _speeds(conn: Any, worker_ids: list[int]) -> dict[int, float]:
    """Median seconds per timed answer, over each worker's latest SPEED_ANSWERS."""
    if not worker_ids:
        return {}
    a = schema.answers
    ranked = (
        select(
            a.c.worker_id,
            a.c.duration_ms,
            func.row_number().over(partition_by=a.c.worker_id, order_by=a.c.id.desc()).label("n"),
        )
        .where(a.c.worker_id.in_(worker_ids), a.c.duration_ms.is_not(None), a.c.kind != "skip")
        .subquery()
    )
    times: dict[int, list[int]] = {}
    for wid, ms in conn.execute(
        select(ranked.c.worker_id, ranked.c.duration_ms).where(ranked.c.n <= SPEED_ANSWERS)
    ):
        times.setdefault(int(wid), []).append(int(ms))
    return {wid: round(median(ms) / 1000, 1) for wid, ms in times.items()}


def workers_by_status(db: Engine) -> dict[str, int]:
    """How many workers stand where (paused, probation, suspect, arbiter, worker)."""
    w = schema.workers
    flags = (w.c.quarantined, w.c.trusted, w.c.proven, w.c.suspect)
    with db.connect() as conn:
        rows = conn.execute(
            select(*flags, func.count()).where(w.c.role == "worker").group_by(*flags)
        ).all()
    counts: dict[str, int] = {}
    for row in rows:
        status = _status(row)
        counts[status] = counts.get(status, 0) + int(row[-1])
    return counts

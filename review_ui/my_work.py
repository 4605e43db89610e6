"""The worker's own page: tasks done, the accuracy estimate, and earnings from the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from kerani.core.vocabulary import PayKind
from kerani.microtasks import quality
from kerani.microtasks.ledger import ringgit
from kerani.storage import schema
from kerani.storage.database import utcnow


@dataclass(frozen=True)
class KindEarnings:
    """Answers and earnings of one task kind (field, gold, arbitration)."""

    kind: str
    count: int
    amount: str


@dataclass(frozen=True)
class MyWork:
    """What a worker sees about their own work."""

    tasks_done: int
    tasks_today: int
    earned_total: str
    earned_today: str
    earned_week: str
    accuracy: str | None  # "97%", or None while there is too little gold to say
    gold_seen: int
    by_kind: list[KindEarnings] = field(default_factory=list)


@dataclass(frozen=True)
class Today:
    """The progress figure on the review pages."""

    done: int
    earned: str


def _day_start(now: datetime) -> datetime:
    # Workers are in Malaysia (UTC+8): "today" starts at their midnight, not UTC's.
    local = now + timedelta(hours=8)
    return local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=8)


def today(db: Engine, worker_id: int, now: datetime | None = None) -> Today:
    """Answers paid today and what they earned (one indexed read)."""
    led = schema.ledger
    since = _day_start(now or utcnow())
    with db.connect() as conn:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                led.c.worker_id == worker_id, led.c.created_at >= since
            )
        ).one()
    return Today(int(row[0]), ringgit(int(row[1])))


def my_work(db: Engine, worker_id: int, min_gold: int, now: datetime | None = None) -> MyWork:
    """A worker's totals; the accuracy is shown once `min_gold` gold answers back it."""
    now = now or utcnow()
    led, a = schema.ledger, schema.answers
    day, week = _day_start(now), now - timedelta(days=7)
    with db.connect() as conn:
        kinds = conn.execute(
            select(led.c.task_kind, func.count(), func.sum(led.c.amount_sen))
            .where(led.c.worker_id == worker_id)
            .group_by(led.c.task_kind)
            .order_by(led.c.task_kind)
        ).all()

        def earned_since(since: datetime) -> int:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                        led.c.worker_id == worker_id, led.c.created_at >= since
                    )
                ).scalar_one()
            )

        done = conn.execute(
            select(schema.workers.c.answers_done).where(schema.workers.c.id == worker_id)
        ).scalar_one()
        done_today = conn.execute(
            select(func.count()).where(
                a.c.worker_id == worker_id, a.c.kind != "skip", a.c.created_at >= day
            )
        ).scalar_one()
        today_sen, week_sen = earned_since(day), earned_since(week)
        est = quality.estimates(conn, [worker_id], "*")[worker_id]
    total = sum(int(k[2] or 0) for k in kinds)
    # Gold is shown as ordinary field work: a count of gold that rose after a task would
    # tell the worker which task was the check.
    merged: dict[str, tuple[int, int]] = {}
    for kind, count, amount in kinds:
        shown = PayKind.FIELD if kind == PayKind.GOLD else str(kind)
        n, sen = merged.get(shown, (0, 0))
        merged[shown] = (n + int(count), sen + int(amount or 0))
    accuracy = f"{round(100 * est.accuracy)}%" if est.gold_seen >= min_gold else None
    return MyWork(
        tasks_done=int(done),
        tasks_today=int(done_today),
        earned_total=ringgit(total),
        earned_today=ringgit(today_sen),
        earned_week=ringgit(week_sen),
        accuracy=accuracy,
        gold_seen=est.gold_seen,
        by_kind=[KindEarnings(k, n, ringgit(sen)) for k, (n, sen) in sorted(merged.items())],
    )

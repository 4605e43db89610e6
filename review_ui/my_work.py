"""The worker's own page: tasks done, the accuracy estimate, the rates of the work on offer,
and what they earned: owed, paid out, held for a check, not paid and why, and per hour."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import PayKind, PaymentStatus
from kerani.microtasks import quality
from kerani.microtasks.holds import release_due
from kerani.microtasks.ledger import ringgit
from kerani.microtasks.pay_rates import Rate, rate_card
from kerani.microtasks.statements import (
    PayStanding,
    pay_standing,
    per_hour,
    week_label,
    week_start,
    worked_time,
)
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow

# Far enough back to mean "since the start".
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KindEarnings:
    """Answers and earnings of one task kind (a field type, plain or as an arbiter)."""

    field_type: str
    kind: str  # field | arbitration (gold is shown as field)
    count: int
    amount: str


@dataclass(frozen=True)
class MyWork:
    """What a worker sees about their own work."""

    tasks_done: int
    tasks_today: int
    earned_total: str  # owed, paid out and held together; voided pay is not earned
    earned_today: str
    earned_week: str
    accuracy: str | None  # "97%", or None while there is too little gold to say
    gold_seen: int
    pay: PayStanding
    per_hour: str | None  # "RM 9.10", or None under a minute of timed work
    worked_minutes: int
    per_hour_week: str | None
    rates: list[Rate] = field(default_factory=list)
    by_kind: list[KindEarnings] = field(default_factory=list)
    weeks: list[str] = field(default_factory=list)  # ISO weeks with work, latest first


@dataclass(frozen=True)
class Today:
    """The progress figure on the review pages."""

    done: int
    earned: str


def _day_start(now: datetime) -> datetime:
    # Workers are in Malaysia (UTC+8): "today" starts at their midnight, not UTC's.
    local = now + timedelta(hours=8)
    return local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=8)


def _earned(since: datetime) -> object:
    led = schema.ledger
    return (led.c.created_at >= since) & (led.c.status != PaymentStatus.VOIDED)


def today(db: Engine, worker_id: int, now: datetime | None = None) -> Today:
    """Answers paid today and what they earned (one indexed read)."""
    led = schema.ledger
    since = _day_start(now or utcnow())
    with db.connect() as conn:
        row = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(led.c.amount_sen), 0),
            ).where(led.c.worker_id == worker_id, _earned(since))  # type: ignore[arg-type]
        ).one()
    return Today(int(row[0]), ringgit(int(row[1])))


def my_work(
    db: Engine, worker_id: int, rules: CrowdSettings, now: datetime | None = None
) -> MyWork:
    """A worker's totals; the accuracy is shown once enough gold answers back it."""
    now = now or utcnow()
    led, a = schema.ledger, schema.answers
    day, week = _day_start(now), now - timedelta(days=7)
    shown = func.coalesce(led.c.field_type, "")
    with db.begin() as conn:
        release_due(conn, rules, worker_id, now)
        kinds = conn.execute(
            select(shown, led.c.task_kind, func.count(), func.sum(led.c.amount_sen))
            .where(led.c.worker_id == worker_id, led.c.status != PaymentStatus.VOIDED)
            .group_by(shown, led.c.task_kind)
        ).all()

        def earned_since(since: datetime) -> int:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                        led.c.worker_id == worker_id,
                        _earned(since),  # type: ignore[arg-type]
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
        standing = pay_standing(conn, worker_id)
        worked_ms, timed_sen = worked_time(conn, worker_id, rules, EPOCH, now)
        week_ms, week_timed_sen = worked_time(conn, worker_id, rules, week, now)
        rates = rate_card(conn, rules)
        first = conn.execute(
            select(func.min(led.c.created_at)).where(led.c.worker_id == worker_id)
        ).scalar()
    # Gold is shown as ordinary field work: a count of gold that rose after a task would
    # tell the worker which task was the check.
    merged: dict[tuple[str, str], tuple[int, int]] = {}
    for field_type, kind, count, amount in kinds:
        key = (str(field_type), PayKind.FIELD if kind == PayKind.GOLD else str(kind))
        n, sen = merged.get(key, (0, 0))
        merged[key] = (n + int(count), sen + int(amount or 0))
    accuracy = (
        f"{round(100 * est.accuracy)}%" if est.gold_seen >= rules.quarantine_min_gold else None
    )
    hourly, hourly_week = per_hour(timed_sen, worked_ms), per_hour(week_timed_sen, week_ms)
    weeks: list[str] = []
    if first is not None:
        start = week_start(now)
        while start + timedelta(days=7) > as_utc(first) and len(weeks) < 12:
            weeks.append(week_label(start))
            start -= timedelta(days=7)
    return MyWork(
        tasks_done=int(done),
        tasks_today=int(done_today),
        earned_total=ringgit(sum(sen for _n, sen in merged.values())),
        earned_today=ringgit(today_sen),
        earned_week=ringgit(week_sen),
        accuracy=accuracy,
        gold_seen=est.gold_seen,
        pay=standing,
        per_hour=None if hourly is None else ringgit(hourly),
        worked_minutes=round(worked_ms / 60_000),
        per_hour_week=None if hourly_week is None else ringgit(hourly_week),
        # Only kinds a worker can be given: arbitration only shows to arbiters.
        rates=[r for r in rates if r.pay_kind == PayKind.FIELD or est.trusted],
        by_kind=[
            KindEarnings(ft, kind, n, ringgit(sen))
            for (ft, kind), (n, sen) in sorted(merged.items())
        ],
        weeks=weeks,
    )

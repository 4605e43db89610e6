"""What a worker earned and why: weekly statements, earnings per hour worked, and payouts.

Weeks run Monday to Sunday in Malaysia's time (UTC+8), where the workers are. A statement
shows a week's answers by task kind with their pay as it stands (credited, held for a check,
voided) and the reason; gold is shown as the field work it looks like, so a statement never
tells which task was a check. A payout gathers every credited payment not paid out before,
up to the end of a period, once: asking again for the same period gives the same payout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import AuditAction, PayKind, PaymentStatus
from kerani.microtasks.holds import release_due
from kerani.microtasks.pay_rates import capped_ms
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow

MALAYSIA = timedelta(hours=8)
WEEK = timedelta(days=7)
_ISO_WEEK = re.compile(r"(\d{4})-W(\d{2})")


def week_start(at: datetime) -> datetime:
    """The start (UTC) of the Malaysian week, Monday 00:00 at UTC+8, that `at` falls in."""
    local = as_utc(at) + MALAYSIA
    monday = (local - timedelta(days=local.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return monday - MALAYSIA


def parse_week(text: str) -> datetime:
    """The start (UTC) of an ISO week written 2026-W49."""
    m = _ISO_WEEK.fullmatch(text.strip())
    if not m:
        raise BadInputError(f"week must be written like 2026-W49, not {text!r}")
    try:
        monday = datetime.fromisocalendar(int(m[1]), int(m[2]), 1).replace(tzinfo=UTC)
    except ValueError as e:
        raise BadInputError(f"there is no week {text!r}") from e
    return monday - MALAYSIA


def malaysian_days(start: datetime, end: datetime) -> tuple[date, date]:
    """The first and last day, in Malaysia, of a period [start, end) that runs from one
    Malaysian midnight to another (a week, a payout's period)."""
    return (as_utc(start) + MALAYSIA).date(), (as_utc(end) + MALAYSIA - timedelta(days=1)).date()


def week_label(start: datetime) -> str:
    """The ISO week (2026-W49) that starts at `start` (UTC, as week_start gives it)."""
    year, week, _ = (as_utc(start) + MALAYSIA).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class StatementLine:
    """Answers of one task kind whose pay stands one way, for one reason."""

    field_type: str
    pay_kind: str  # field or arbitration (gold shown as field)
    status: str  # PaymentStatus
    reason: str  # PayReason
    answers: int
    amount_sen: int


@dataclass(frozen=True)
class Statement:
    """One worker's week: what they earned, what waits for a check, what was not paid."""

    worker_id: int
    name: str
    start: datetime
    end: datetime
    lines: list[StatementLine] = field(default_factory=list)
    worked_ms: int = 0  # time on timed answers, each capped (pay_max_timed_seconds)
    timed_earned_sen: int = 0  # what those timed answers earned (voided aside)
    paid_out_sen: int = 0  # credited and already in a payout

    @property
    def week(self) -> str:
        """The ISO week, 2026-W49."""
        return week_label(self.start)

    def total(self, status: str) -> int:
        """Sen of the week's answers whose pay is `status`."""
        return sum(x.amount_sen for x in self.lines if x.status == status)

    @property
    def per_hour_sen(self) -> int | None:
        """Earnings per hour worked (None: under a minute of timed work to tell by)."""
        return per_hour(self.timed_earned_sen, self.worked_ms)


def per_hour(earned_sen: int, worked_ms: int) -> int | None:
    """Sen per hour from what was earned over how long (None: under a minute of work)."""
    if worked_ms < 60_000:
        return None
    return round(earned_sen * 3_600_000 / worked_ms)


def _shown_kind(pay_kind: Any) -> Any:
    # Gold looks like field work to the worker, and must read like it on their statement.
    return case((pay_kind == PayKind.GOLD, PayKind.FIELD.value), else_=pay_kind)


def worked_time(
    conn: Connection, worker_id: int, rules: CrowdSettings, since: datetime, until: datetime
) -> tuple[int, int]:
    """(ms worked, sen earned) over a worker's timed answers in [since, until), each answer's
    time capped: a phone left on the table is not work. Voided pay does not count."""
    a, led = schema.answers, schema.ledger
    row = conn.execute(
        select(
            func.coalesce(func.sum(capped_ms(conn, a.c.duration_ms, rules)), 0),
            func.coalesce(
                func.sum(case((led.c.status != PaymentStatus.VOIDED, led.c.amount_sen), else_=0)),
                0,
            ),
        )
        .select_from(led)
        .join(a, a.c.id == led.c.answer_id)
        .where(
            led.c.worker_id == worker_id,
            a.c.duration_ms.is_not(None),
            led.c.created_at >= since,
            led.c.created_at < until,
        )
    ).one()
    return int(row[0]), int(row[1])


def statement(db: Engine, worker_id: int, start: datetime, rules: CrowdSettings) -> Statement:
    """A worker's statement for the week starting at `start` (see week_start, parse_week)."""
    led, w = schema.ledger, schema.workers
    end = start + WEEK
    with db.begin() as conn:
        release_due(conn, rules, worker_id)
        name = conn.execute(select(w.c.name).where(w.c.id == worker_id)).scalar()
        if name is None:
            raise NotFoundError(f"no worker with id {worker_id}")
        kind = _shown_kind(led.c.task_kind)
        rows = conn.execute(
            select(
                func.coalesce(led.c.field_type, "").label("field_type"),
                kind.label("kind"),
                led.c.status,
                led.c.reason,
                func.count(),
                func.sum(led.c.amount_sen),
            )
            .where(led.c.worker_id == worker_id, led.c.created_at >= start, led.c.created_at < end)
            .group_by(led.c.field_type, kind, led.c.status, led.c.reason)
            .order_by(led.c.field_type, kind, led.c.status, led.c.reason)
        ).all()
        paid_out = conn.execute(
            select(func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                led.c.worker_id == worker_id,
                led.c.created_at >= start,
                led.c.created_at < end,
                led.c.payout_id.is_not(None),
            )
        ).scalar_one()
        worked, timed_earned = worked_time(conn, worker_id, rules, start, end)
    lines = [
        StatementLine(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5] or 0))
        for r in rows
    ]
    return Statement(worker_id, str(name), start, end, lines, worked, timed_earned, int(paid_out))


@dataclass(frozen=True)
class PayoutRow:
    """One worker's line of a payout."""

    worker_id: int
    name: str
    answers: int
    amount_sen: int


@dataclass(frozen=True)
class Payout:
    """Credited pay gathered once for paying out, up to the end of a period."""

    id: int
    period_start: datetime
    period_end: datetime
    created_at: datetime
    rows: list[PayoutRow]
    new: bool  # False: this period was paid out before, and this is that payout again

    @property
    def total_sen(self) -> int:
        """The payout's total."""
        return sum(r.amount_sen for r in self.rows)


def make_payout(
    db: Engine,
    operator_id: int | None,
    period_end: datetime,
    rules: CrowdSettings,
    now: datetime | None = None,
) -> Payout:
    """Gather every credited payment not paid out yet, earned before `period_end`, into one
    payout (once: the same period again returns the payout made the first time)."""
    now = now or utcnow()
    if period_end > now:
        raise BadInputError(
            f"the period ends {period_end:%Y-%m-%d %H:%M} UTC, which is still to come"
        )
    p, led = schema.payouts, schema.ledger
    with db.begin() as conn:
        found = conn.execute(select(p.c.id).where(p.c.period_end == period_end)).scalar()
        if found is not None:
            return _payout(conn, int(found), new=False)
        release_due(conn, rules, now=now)
        previous = conn.execute(select(func.max(p.c.period_end))).scalar()
        if previous is not None and as_utc(previous) > period_end:
            raise BadInputError(
                f"a later period was paid out already (up to {as_utc(previous):%Y-%m-%d})"
            )
        first = conn.execute(select(func.min(led.c.created_at))).scalar()
        start = as_utc(previous) if previous is not None else as_utc(first or period_end)
        due = (
            led.c.status == PaymentStatus.CREDITED,
            led.c.payout_id.is_(None),
            led.c.created_at < period_end,
        )
        total, workers = conn.execute(
            select(
                func.coalesce(func.sum(led.c.amount_sen), 0),
                func.count(func.distinct(led.c.worker_id)),
            ).where(*due)
        ).one()
        payout_id = conn.execute(
            insert(p)
            .values(
                period_start=start,
                period_end=period_end,
                created_at=now,
                created_by=operator_id,
                total_sen=int(total),
                workers=int(workers),
            )
            .returning(p.c.id)
        ).scalar_one()
        conn.execute(update(led).where(*due).values(payout_id=payout_id))
        conn.execute(
            insert(schema.audit_log).values(
                at=now,
                worker_id=operator_id,
                action=AuditAction.PAY,
                detail=f"payout {payout_id}: {int(workers)} workers, {int(total)} sen, "
                f"up to {period_end:%Y-%m-%d %H:%M} UTC"
                + ("" if operator_id else " (command line)"),
            )
        )
        return _payout(conn, int(payout_id), new=True)


def payout(db: Engine, payout_id: int) -> Payout:
    """A payout made before, with its rows."""
    with db.connect() as conn:
        return _payout(conn, payout_id, new=False)


@dataclass(frozen=True)
class PayoutSummary:
    """A payout as the list of payouts shows it."""

    id: int
    period_start: datetime
    period_end: datetime
    workers: int
    total_sen: int

    @property
    def days(self) -> str:
        """The period as Malaysian dates, first and last day: 2026-11-30 – 2026-12-06."""
        first, last = malaysian_days(self.period_start, self.period_end)
        return f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"


def payouts(db: Engine) -> list[PayoutSummary]:
    """Every payout, latest first."""
    p = schema.payouts
    with db.connect() as conn:
        return [
            PayoutSummary(
                int(r.id),
                as_utc(r.period_start),
                as_utc(r.period_end),
                int(r.workers),
                int(r.total_sen),
            )
            for r in conn.execute(select(p).order_by(p.c.period_end.desc()))
        ]


def _payout(conn: Connection, payout_id: int, *, new: bool) -> Payout:
    p, led, w = schema.payouts, schema.ledger, schema.workers
    head = conn.execute(select(p).where(p.c.id == payout_id)).first()
    if head is None:
        raise NotFoundError(f"no payout {payout_id}")
    rows = conn.execute(
        select(w.c.id, w.c.name, func.count(), func.sum(led.c.amount_sen))
        .join_from(led, w, w.c.id == led.c.worker_id)
        .where(led.c.payout_id == payout_id)
        .group_by(w.c.id, w.c.name)
        .order_by(w.c.id)
    ).all()
    return Payout(
        int(head.id),
        as_utc(head.period_start),
        as_utc(head.period_end),
        as_utc(head.created_at),
        [PayoutRow(int(r[0]), str(r[1]), int(r[2]), int(r[3] or 0)) for r in rows],
        new=new,
    )


@dataclass(frozen=True)
class PayStanding:
    """A worker's pay in all: owed (credited, not paid out), paid out, held, voided."""

    credited_sen: int
    paid_out_sen: int
    held_sen: int
    held_answers: int
    voided_sen: int
    voided_answers: int


def pay_standing(conn: Connection, worker_id: int) -> PayStanding:
    """Where a worker's pay stands, all weeks together."""
    led = schema.ledger
    sums: dict[tuple[str, bool], tuple[int, int]] = {}
    for status, paid_out, n, sen in conn.execute(
        select(
            led.c.status,
            led.c.payout_id.is_not(None),
            func.count(),
            func.coalesce(func.sum(led.c.amount_sen), 0),
        )
        .where(led.c.worker_id == worker_id)
        .group_by(led.c.status, led.c.payout_id.is_not(None))
    ):
        sums[(str(status), bool(paid_out))] = (int(n), int(sen))
    credited = sums.get((PaymentStatus.CREDITED, False), (0, 0))
    paid = sums.get((PaymentStatus.CREDITED, True), (0, 0))
    held = sums.get((PaymentStatus.HELD, False), (0, 0))
    voided = sums.get((PaymentStatus.VOIDED, False), (0, 0))
    return PayStanding(credited[1], paid[1], held[1], held[0], voided[1], voided[0])

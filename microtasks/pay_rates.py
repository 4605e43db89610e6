"""Rates per task kind, set from measured effort.

A task kind is a field type answered plainly (`field`; gold is paid as the field it looks
like) or as an arbiter of a dispute (`arbitration`). From the time the median careful worker
takes over each kind (their mean time per task), `propose_rates` works out the rate at which
that worker earns at least the floor per hour worked (CrowdSettings.pay_floor_sen_per_hour:
Malaysia's minimum wage, RM 1,700 a month, is about RM 8.72 an hour); an operator sees what it would
cost the agency per field and confirms (`confirm_rates`). The latest confirmed rate of a
kind is in force; a kind never confirmed is paid CrowdSettings' default rate.

Rates are whole sen, rounded up: the floor is a floor, and a payout is in sen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from statistics import median
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
)

from kerani.core.errors import BadInputError
from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import AuditAction, PayKind
from kerani.storage import schema
from kerani.storage.database import utcnow

# Kinds that have a rate of their own (gold is paid as a field of its type).
RATED_KINDS = (PayKind.FIELD, PayKind.ARBITRATION)
# The latest timed answers of each kind that a proposal reads.
MEASURED_ANSWERS = 2000
MEASURE_DAYS = 60


def rate_kind(pay_kind: str) -> str:
    """The kind whose rate an answer of `pay_kind` earns (gold: the field rate)."""
    return PayKind.ARBITRATION if pay_kind == PayKind.ARBITRATION else PayKind.FIELD


def default_rate(pay_kind: str, rules: CrowdSettings) -> int:
    """The rate of a kind that no operator confirmed yet."""
    if rate_kind(pay_kind) == PayKind.ARBITRATION:
        return rules.rate_sen_arbitration
    return rules.rate_sen_field


def confirmed_rate(field_type: Any, pay_kind: Any) -> Any:
    """SQL: the latest confirmed rate of a field type and kind (NULL when none was)."""
    r = schema.pay_rates
    return (
        select(r.c.rate_sen)
        .where(r.c.field_type == field_type, r.c.pay_kind == pay_kind)
        .order_by(r.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def rate_in_force(field_type: Any, pay_kind: Any) -> Any:
    """SQL: the rate an answer earns, from its field type and pay kind (column expressions),
    with bound defaults `rate_field` and `rate_arbitration` (see default_bindings)."""
    arbitration = pay_kind == PayKind.ARBITRATION
    return case(
        (
            arbitration,
            func.coalesce(
                confirmed_rate(field_type, PayKind.ARBITRATION),
                bindparam("rate_arbitration", type_=Integer),
            ),
        ),
        else_=func.coalesce(
            confirmed_rate(field_type, PayKind.FIELD), bindparam("rate_field", type_=Integer)
        ),
    )


def default_bindings(rules: CrowdSettings) -> dict[str, int]:
    """The bound defaults rate_in_force reads."""
    return {"rate_field": rules.rate_sen_field, "rate_arbitration": rules.rate_sen_arbitration}


def rate_of(conn: Connection, field_type: str, pay_kind: str, rules: CrowdSettings) -> int:
    """The rate in force for one answer of `pay_kind` on a field of `field_type` (the SQL of
    rate_in_force, run on its own)."""
    rate = rate_in_force(literal(field_type), literal(pay_kind))
    return int(conn.execute(select(rate), default_bindings(rules)).scalar_one())


def capped_ms(conn: Connection, duration: Any, rules: CrowdSettings) -> Any:
    """SQL: an answer's time, capped at CrowdSettings.pay_max_timed_seconds (a phone left on
    the table is not work)."""
    cap = rules.pay_max_timed_seconds * 1000
    if conn.dialect.name == "postgresql":
        return func.least(duration, cap)
    return func.min(duration, cap)  # SQLite's two-argument min is the smaller of the two


@dataclass(frozen=True)
class Rate:
    """The rate in force for one task kind, as a worker is shown it before starting."""

    field_type: str
    pay_kind: str
    rate_sen: int
    confirmed: bool  # False: CrowdSettings' default, no operator confirmed a rate yet


def rate_card(
    conn: Connection, rules: CrowdSettings, field_types: Iterable[str] | None = None
) -> list[Rate]:
    """The rates in force of every field type that has work (or of `field_types`)."""
    types = sorted(set(field_types) if field_types is not None else _field_types(conn))
    r = schema.pay_rates
    latest = select(r.c.field_type, r.c.pay_kind, func.max(r.c.id).label("id")).group_by(
        r.c.field_type, r.c.pay_kind
    )
    confirmed = {
        (row.field_type, row.pay_kind): int(row.rate_sen)
        for row in conn.execute(
            select(r.c.field_type, r.c.pay_kind, r.c.rate_sen).where(
                r.c.id.in_(select(latest.subquery().c.id))
            )
        )
    }
    card = []
    for field_type in types:
        for kind in RATED_KINDS:
            sen = confirmed.get((field_type, kind))
            card.append(
                Rate(
                    field_type,
                    kind,
                    sen if sen is not None else default_rate(kind, rules),
                    sen is not None,
                )
            )
    return card


def _field_types(conn: Connection) -> list[str]:
    """Field types that workers answer: those with open tasks or paid answers."""
    t, f, led = schema.tasks, schema.fields, schema.ledger
    open_types = (
        select(f.c.kind)
        .join_from(t, f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
        .where(t.c.status == "open")
    )
    paid_types = select(led.c.field_type).where(led.c.field_type.is_not(None))
    return [str(x) for x in conn.execute(open_types.union(paid_types)).scalars()]


@dataclass(frozen=True)
class RateProposal:
    """One task kind's measured effort, its rate now and the rate proposed."""

    field_type: str
    pay_kind: str
    measured: int  # timed answers of careful workers
    median_ms: int | None  # the median careful worker's mean time per task (median_worker_ms)
    current_sen: int
    proposed_sen: int | None  # None: too few timed answers to say
    answers_per_field: float | None  # paid answers per field that people settled
    gold_overhead: float  # gold answers paid per field answer (checks cost too)

    def per_hour_sen(self, rate_sen: int | None) -> int | None:
        """What a worker taking the median time earns an hour at `rate_sen`."""
        if rate_sen is None or not self.median_ms:
            return None
        return round(rate_sen * 3_600_000 / self.median_ms)

    def cost_per_field_sen(self, rate_sen: int | None) -> float | None:
        """What one field of this kind costs the agency at `rate_sen`, checks included."""
        if rate_sen is None or self.answers_per_field is None:
            return None
        return rate_sen * self.answers_per_field * (1 + self.gold_overhead)


def proposed_rate(median_ms: float, floor_sen_per_hour: int) -> int:
    """The least whole-sen rate at which `median_ms` per task earns the floor per hour."""
    return max(1, math.ceil(floor_sen_per_hour * median_ms / 3_600_000 - 1e-9))


def careful_times(
    conn: Connection, rules: CrowdSettings, since_days: int = MEASURE_DAYS
) -> dict[tuple[str, str], dict[int, list[int]]]:
    """Timed answers (ms, capped) of careful workers, by (field type, rate kind), by worker.

    Careful: past probation, not paused and not under suspicion after a failed check; their
    skips aside. Each time is capped at CrowdSettings.pay_max_timed_seconds: a phone left on
    the table is not work.
    """
    a, t, f, w = schema.answers, schema.tasks, schema.fields, schema.workers
    kind = case((t.c.escalated.is_(True), PayKind.ARBITRATION), else_=PayKind.FIELD)
    ranked = (
        select(
            f.c.kind.label("field_type"),
            kind.label("pay_kind"),
            a.c.worker_id,
            capped_ms(conn, a.c.duration_ms, rules).label("ms"),
            func.row_number()
            .over(partition_by=(f.c.kind, kind), order_by=a.c.id.desc())
            .label("n"),
        )
        .join_from(a, t, t.c.id == a.c.task_id)
        .join(f, f.c.id == func.coalesce(t.c.field_id, t.c.gold_field_id))
        .join(w, w.c.id == a.c.worker_id)
        .where(
            a.c.duration_ms.is_not(None),
            a.c.kind != "skip",
            a.c.created_at >= utcnow() - timedelta(days=since_days),
            and_(w.c.proven.is_(True), w.c.quarantined.is_(False), w.c.suspect.is_(False)),
        )
        .subquery()
    )
    times: dict[tuple[str, str], dict[int, list[int]]] = {}
    for row in conn.execute(
        select(ranked.c.field_type, ranked.c.pay_kind, ranked.c.worker_id, ranked.c.ms).where(
            ranked.c.n <= MEASURED_ANSWERS
        )
    ):
        by_worker = times.setdefault((str(row.field_type), str(row.pay_kind)), {})
        by_worker.setdefault(int(row.worker_id), []).append(int(row.ms))
    return times


def median_worker_ms(by_worker: dict[int, list[int]]) -> int | None:
    """The time per task of the median worker: the median over workers of each one's mean.

    A worker's pay an hour is their rate over their *mean* time (a long line costs them its
    whole time), so the floor is met for the median worker only if the rate is set from
    means, not from the median of all answers' times.
    """
    if not by_worker:
        return None
    return round(median(sum(ms) / len(ms) for ms in by_worker.values()))


def _answers_per_field(conn: Connection) -> tuple[dict[str, float], float]:
    """Paid answers per settled field of each type, and gold answers per field answer."""
    led, a, t, f = schema.ledger, schema.answers, schema.tasks, schema.fields
    per_field = (
        select(f.c.kind.label("field_type"), func.count().label("n"))
        .select_from(led)
        .join(a, a.c.id == led.c.answer_id)
        .join(t, t.c.id == a.c.task_id)
        .join(f, f.c.id == t.c.field_id)
        .where(t.c.status == "settled", led.c.status != "voided")
        .group_by(f.c.id, f.c.kind)
        .subquery()
    )
    means = {
        str(row.field_type): float(row.mean)
        for row in conn.execute(
            select(per_field.c.field_type, func.avg(per_field.c.n).label("mean")).group_by(
                per_field.c.field_type
            )
        )
    }
    counts: dict[str, int] = {
        str(kind): int(n)
        for kind, n in conn.execute(
            select(led.c.task_kind, func.count())
            .where(led.c.status != "voided")
            .group_by(led.c.task_kind)
        )
    }
    work = int(counts.get(PayKind.FIELD, 0)) + int(counts.get(PayKind.ARBITRATION, 0))
    gold = int(counts.get(PayKind.GOLD, 0))
    return means, (gold / work if work else 0.0)


def propose_rates(db: Engine, rules: CrowdSettings) -> list[RateProposal]:
    """For each task kind: measured effort, the rate now and the rate that meets the floor."""
    with db.connect() as conn:
        times = careful_times(conn, rules)
        card = rate_card(conn, rules, {ft for ft, _ in times} | set(_field_types(conn)))
        per_field, overhead = _answers_per_field(conn)
    proposals = []
    for rate in card:
        by_worker = times.get((rate.field_type, rate.pay_kind), {})
        measured = [ms for each in by_worker.values() for ms in each]
        mid = median_worker_ms(by_worker)
        enough = len(measured) >= rules.pay_min_timed_answers and mid is not None
        if rate.pay_kind == PayKind.ARBITRATION and not measured:
            continue  # no disputes of this type yet: nothing to show or propose
        proposals.append(
            RateProposal(
                field_type=rate.field_type,
                pay_kind=rate.pay_kind,
                measured=len(measured),
                median_ms=mid,
                current_sen=rate.rate_sen,
                proposed_sen=proposed_rate(mid, rules.pay_floor_sen_per_hour)
                if enough and mid is not None
                else None,
                answers_per_field=per_field.get(rate.field_type),
                gold_overhead=overhead,
            )
        )
    return proposals


def confirm_rates(
    db: Engine, operator_id: int | None, proposals: list[RateProposal], rules: CrowdSettings
) -> list[RateProposal]:
    """Put the proposed rates in force (kinds with a proposal only); returns those set."""
    chosen = [p for p in proposals if p.proposed_sen is not None]
    if not chosen:
        raise BadInputError(
            "no rate can be proposed yet: each task kind needs at least "
            f"{rules.pay_min_timed_answers} timed answers of careful workers"
        )
    now = utcnow()
    with db.begin() as conn:
        for p in chosen:
            conn.execute(
                insert(schema.pay_rates).values(
                    field_type=p.field_type,
                    pay_kind=p.pay_kind,
                    rate_sen=p.proposed_sen,
                    effective_from=now,
                    confirmed_by=operator_id,
                    median_ms=p.median_ms,
                    measured=p.measured,
                    floor_sen_per_hour=rules.pay_floor_sen_per_hour,
                )
            )
        changes = ", ".join(
            f"{p.field_type}/{p.pay_kind} {p.current_sen}->{p.proposed_sen} sen" for p in chosen
        )
        conn.execute(
            insert(schema.audit_log).values(
                at=now,
                worker_id=operator_id,
                action=AuditAction.PAY,
                detail=f"rates confirmed: {changes}" + ("" if operator_id else " (command line)"),
            )
        )
    return chosen

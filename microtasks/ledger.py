"""The ledger: each accepted answer earns its worker the rate of its task kind, exactly once
(held until a check vouches for it: see microtasks.holds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select

from kerani.core.vocabulary import PaymentStatus, PayReason
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.statements import dialect_insert, prepared


@dataclass(frozen=True)
class Earnings:
    """A worker's (or a batch's) paid answers and the total in sen."""

    answers: int
    total_sen: int

    @property
    def ringgit(self) -> str:
        """The total as RM with two decimals."""
        return ringgit(self.total_sen)


def ringgit(sen: int) -> str:
    """An amount in integer sen as RM with two decimals, without float rounding."""
    sign = "-" if sen < 0 else ""
    return f"{sign}RM {abs(sen) // 100}.{abs(sen) % 100:02d}"


def price(sen: int) -> str:
    """A rate as a worker reads it: "2 sen", or RM from one ringgit up ("RM 1.20")."""
    return ringgit(sen) if abs(sen) >= 100 else f"{sen} sen"


def ringgit_each(total_sen: int, count: int) -> str:
    """A total shared over `count` things, for people: RM with two decimals, or sen with one
    decimal below one ringgit ("RM 5.97" per record, "5.4 sen" per field)."""
    if count <= 0:
        return "–"
    each = total_sen / count
    if abs(each) >= 100:
        return ringgit(round(each))
    return f"{each:.1f} sen"


def _payment(dialect: str) -> Any:
    return (
        dialect_insert(dialect)(schema.ledger)
        .values(
            worker_id=bindparam("wid"),
            answer_id=bindparam("aid"),
            task_kind=bindparam("pay_kind"),
            amount_sen=bindparam("amount"),
            batch_id=bindparam("batch"),
            created_at=bindparam("now"),
            field_type=bindparam("field_type"),
            status=PaymentStatus.HELD,  # until a check vouches for it (microtasks.holds)
            reason=PayReason.WAITING_CHECK,
        )
        .on_conflict_do_nothing(index_elements=[schema.ledger.c.answer_id])
        .returning(schema.ledger.c.id)
    )


def pay(
    conn: Connection,
    worker_id: int,
    answer_id: int,
    task_kind: str,
    amount_sen: int,
    batch_id: str | None,
    field_type: str | None = None,
) -> bool:
    """Record one answer's pay, held; False when it was already (the unique answer_id refuses
    twice)."""
    paid = conn.execute(
        prepared(conn, _payment),
        {
            "wid": worker_id,
            "aid": answer_id,
            "pay_kind": task_kind,
            "amount": amount_sen,
            "batch": batch_id,
            "now": utcnow(),
            "field_type": field_type,
        },
    ).scalar()
    return paid is not None


def worker_earnings(db: Engine, worker_id: int) -> Earnings:
    """What a worker has earned so far, held pay included (voided pay is not earned)."""
    return _sum(db, schema.ledger.c.worker_id == worker_id)


def batch_cost(db: Engine, batch_id: str) -> Earnings:
    """What an agency's batch has cost in people's answers so far (pay held for a check
    included: it is owed unless the worker is found out; voided pay is not a cost)."""
    return _sum(db, schema.ledger.c.batch_id == batch_id)


def _sum(db: Engine, condition: object) -> Earnings:
    led = schema.ledger
    with db.connect() as conn:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                condition,  # type: ignore[arg-type]
                led.c.status != PaymentStatus.VOIDED,
            )
        ).one()
    return Earnings(int(row[0]), int(row[1]))

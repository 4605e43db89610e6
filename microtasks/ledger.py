"""The ledger: each accepted answer earns its worker the rate of its task kind, exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage import schema
from storage.database import utcnow


@dataclass(frozen=True)
class Earnings:
    """A worker's (or a batch's) paid answers and the total in sen."""

    answers: int
    total_sen: int

    @property
    def ringgit(self) -> str:
        """The total as RM with two decimals."""
        return f"RM {self.total_sen // 100}.{self.total_sen % 100:02d}"


def pay(
    conn: Connection,
    worker_id: int,
    answer_id: int,
    task_kind: str,
    amount_sen: int,
    batch_id: str | None,
) -> bool:
    """Credit one answer; False when it was paid already (the unique answer_id refuses twice)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    paid = conn.execute(
        dialect_insert(schema.ledger)
        .values(
            worker_id=worker_id,
            answer_id=answer_id,
            task_kind=task_kind,
            amount_sen=amount_sen,
            batch_id=batch_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[schema.ledger.c.answer_id])
        .returning(schema.ledger.c.id)
    ).scalar()
    return paid is not None


def worker_earnings(db: Engine, worker_id: int) -> Earnings:
    """What a worker has earned so far."""
    return _sum(db, schema.ledger.c.worker_id == worker_id)


def batch_cost(db: Engine, batch_id: str) -> Earnings:
    """What an agency's batch has cost in people's answers so far."""
    return _sum(db, schema.ledger.c.batch_id == batch_id)


def _sum(db: Engine, condition: object) -> Earnings:
    led = schema.ledger
    with db.connect() as conn:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(led.c.amount_sen), 0)).where(
                condition  # type: ignore[arg-type]
            )
        ).one()
    return Earnings(int(row[0]), int(row[1]))

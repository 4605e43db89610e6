"""The outbox of settled documents (table settle_outbox): written with the settle, taken in
batches by whoever reassembles them, closed once done.

A row is open until a reassembly closes it. Taking rows stamps them with a `publication`
(the Prefect event that carried them, or `inline-...`, `reconcile-...`) in one UPDATE, so
two publishers never take the same open row at once; rows are closed by id. Reassembly is
idempotent, so a row taken twice (a run that was slow, then reconciled) costs only time.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
)

from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.statements import prepared


@dataclass(frozen=True)
class OutboxRow:
    """One settled document waiting for its record."""

    id: int
    page_id: int


def new_publication(kind: str) -> str:
    """A fresh publication id, `kind` first (event, inline, reconcile): 40 characters at most."""
    return f"{kind}-{secrets.token_hex(12)}"


def _row_insert(_dialect: str) -> Any:
    return insert(schema.settle_outbox).values(
        page_id=bindparam("page_id"), settled_at=bindparam("settled_at")
    )


def record_settled(conn: Connection, page_id: int) -> None:
    """Add an open row for a page whose last field settled, in the caller's transaction."""
    conn.execute(prepared(conn, _row_insert), {"page_id": page_id, "settled_at": utcnow()})


def ensure_settled(db: Engine, page_id: int) -> None:
    """Add an open row for a page unless one is open already (for settles made elsewhere
    than in the answer's transaction: staff keying gold, say)."""
    o = schema.settle_outbox
    with db.connect() as conn:  # a read first: on SQLite a write transaction locks the file
        open_row = conn.execute(
            select(o.c.id).where(o.c.page_id == page_id, o.c.done_at.is_(None)).limit(1)
        ).first()
    if open_row is None:
        # Two callers at once may both add one: the page is then reassembled twice, the
        # same record both times.
        with db.begin() as conn:
            record_settled(conn, page_id)


def take(
    db: Engine,
    publication: str,
    *,
    unpublished: bool = False,
    published_before: datetime | None = None,
    settled_before: datetime | None = None,
    page_ids: list[int] | None = None,
    batch_id: str | None = None,
) -> list[OutboxRow]:
    """Stamp the open rows that match with `publication` and return them, oldest first.

    `unpublished`: rows nobody took yet; `published_before`: rows taken before then and
    still open (their run was lost); `settled_before`: any open row settled before then;
    `page_ids`: the open rows of these pages. Conditions given together are alternatives;
    `batch_id` keeps only the rows of that batch's pages.
    """
    o = schema.settle_outbox
    wanted: list[ColumnElement[bool]] = []
    if unpublished:
        wanted.append(o.c.published_at.is_(None))
    if published_before is not None:
        wanted.append(o.c.published_at < published_before)
    if settled_before is not None:
        wanted.append(o.c.settled_at < settled_before)
    if page_ids:
        wanted.append(o.c.page_id.in_(page_ids))
    if not wanted:
        return []
    where = [o.c.done_at.is_(None), or_(*wanted)]
    if batch_id is not None:
        p = schema.pages
        where.append(o.c.page_id.in_(select(p.c.id).where(p.c.batch_id == batch_id)))
    with db.begin() as conn:
        # One UPDATE: on PostgreSQL a row another publisher stamped meanwhile no longer
        # matches once its lock is released; SQLite writes one transaction at a time.
        conn.execute(
            o.update().where(*where).values(publication=publication, published_at=utcnow())
        )
    return rows_of(db, publication)


def rows_of(db: Engine, publication: str) -> list[OutboxRow]:
    """The open rows a publication carries, oldest first."""
    o = schema.settle_outbox
    with db.connect() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.page_id)
            .where(o.c.publication == publication, o.c.done_at.is_(None))
            .order_by(o.c.id)
        ).all()
    return [OutboxRow(int(r.id), int(r.page_id)) for r in rows]


def open_rows(
    db: Engine, page_id: int | None = None, batch_id: str | None = None
) -> list[OutboxRow]:
    """Every open row (of one page, or of one batch's pages), oldest first."""
    o = schema.settle_outbox
    query = select(o.c.id, o.c.page_id).where(o.c.done_at.is_(None)).order_by(o.c.id)
    if page_id is not None:
        query = query.where(o.c.page_id == page_id)
    if batch_id is not None:
        p = schema.pages
        query = query.where(o.c.page_id.in_(select(p.c.id).where(p.c.batch_id == batch_id)))
    with db.connect() as conn:
        return [OutboxRow(int(r.id), int(r.page_id)) for r in conn.execute(query).all()]


def pages_in_flight(db: Engine, since: datetime) -> set[int]:
    """Pages with a row still open that settled after `since`: on their way to a record."""
    o = schema.settle_outbox
    with db.connect() as conn:
        rows = conn.execute(
            select(o.c.page_id).where(o.c.done_at.is_(None), o.c.settled_at >= since).distinct()
        ).scalars()
        return {int(p) for p in rows}


def close(db: Engine, row_ids: list[int], outcome: str) -> None:
    """Close rows: their document was reassembled with this outcome."""
    if not row_ids:
        return
    o = schema.settle_outbox
    with db.begin() as conn:
        conn.execute(
            o.update()
            .where(o.c.id.in_(row_ids), o.c.done_at.is_(None))
            .values(done_at=utcnow(), outcome=outcome)
        )


def failed(db: Engine, row_ids: list[int]) -> None:
    """Count a failed reassembly on rows that stay open (a later run tries again)."""
    if not row_ids:
        return
    o = schema.settle_outbox
    with db.begin() as conn:
        conn.execute(o.update().where(o.c.id.in_(row_ids)).values(attempts=o.c.attempts + 1))


def prune(db: Engine, older_than: timedelta) -> int:
    """Delete closed rows older than `older_than`; return how many went."""
    o = schema.settle_outbox
    with db.begin() as conn:
        result = conn.execute(
            delete(o).where(and_(o.c.done_at.is_not(None), o.c.done_at < utcnow() - older_than))
        )
    return int(result.rowcount or 0)


def backlog(db: Engine) -> tuple[int, datetime | None]:
    """How many rows are open, and when the oldest of them settled."""
    o = schema.settle_outbox
    with db.connect() as conn:
        row = conn.execute(
            select(func.count(), func.min(o.c.settled_at)).where(o.c.done_at.is_(None))
        ).one()
    oldest = row[1]
    return int(row[0]), (as_utc(oldest) if oldest is not None else None)

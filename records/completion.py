"""When a batch is complete: every page has its record or could not be read.

The first time a batch is found complete, `completed_at` is set (once, whoever finds it
first: the settle of its last field, the end of its flow, or reconcile-records) and its
notices are queued in webhook_deliveries, in the same transaction: the agency's webhook
(when the batch has one) and a Prefect event. kerani.flows.webhooks delivers them, and
tries again until they land, so a notice is neither lost nor sent for a batch twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from kerani.core.vocabulary import BatchStatus, PageStatus
from kerani.storage import schema
from kerani.storage.database import utcnow

COMPLETED_EVENT = "batch.completed"
# The Prefect event a completed batch emits (an automation can start a flow from it).
PREFECT_COMPLETED_EVENT = "kerani.batch.completed"
# The outbox row of the Prefect event: a kind of its own, so both travel independently.
PREFECT_ROW = "prefect:" + COMPLETED_EVENT


# Pages in these statuses have no record yet: one of them is enough to say "not complete",
# found by an index probe (ix_pages_batch_status) rather than a look at every page.
_UNFINISHED = (PageStatus.INGESTED, PageStatus.OCRED, PageStatus.ROUTED)


def _pages_left(conn: Connection, batch_id: str) -> int:
    """Pages of the batch still without their record (and not failed)."""
    p, r = schema.pages, schema.records
    unfinished = conn.execute(
        select(p.c.id).where(p.c.batch_id == batch_id, p.c.status.in_(_UNFINISHED)).limit(1)
    ).first()
    if unfinished is not None:
        return 1
    has_record = select(r.c.id).where(r.c.page_id == p.c.id).exists()
    done = or_(p.c.status.in_((PageStatus.OCR_FAILED, PageStatus.GOLD)), has_record)
    return int(
        conn.execute(
            select(func.count()).select_from(p).where(and_(p.c.batch_id == batch_id, ~done))
        ).scalar_one()
    )


def completion_summary(conn: Connection, batch_id: str) -> dict[str, Any]:
    """What a completion notice says of a batch: counts and ids, never a value."""
    b, p, r = schema.batches, schema.pages, schema.records
    batch = conn.execute(select(b).where(b.c.id == batch_id)).one()
    statuses: dict[str, int] = dict(
        conn.execute(
            select(p.c.status, func.count()).where(p.c.batch_id == batch_id).group_by(p.c.status)
        )
        .tuples()
        .all()
    )
    records = conn.execute(
        select(func.count()).select_from(r).where(r.c.batch_id == batch_id)
    ).scalar_one()
    return {
        "event": COMPLETED_EVENT,
        "batch_id": batch_id,
        "name": batch.name,
        "completed_at": batch.completed_at.isoformat() if batch.completed_at else None,
        "pages": sum(statuses.values()),
        "records": int(records),
        "pages_failed": statuses.get(PageStatus.OCR_FAILED, 0),
        "links": {
            "batch": f"/api/v1/batches/{batch_id}",
            "records": f"/api/v1/batches/{batch_id}/records",
            "exports": f"/api/v1/batches/{batch_id}/exports",
        },
    }


def mark_complete(db: Engine, batch_id: str, prefect_events: bool = False) -> bool:
    """Set the batch's completed_at and queue its notices if it is complete now and was not
    before; True when this call did it. `prefect_events`: queue the Prefect event too."""
    b = schema.batches
    with db.begin() as conn:
        batch = conn.execute(
            select(b.c.status, b.c.completed_at, b.c.webhook_url).where(b.c.id == batch_id)
        ).first()
        if batch is None or batch.completed_at is not None:
            return False
        # Still taking files in, or cancelled: nothing to announce.
        if batch.status != BatchStatus.INGESTED or _pages_left(conn, batch_id):
            return False
        now = utcnow()
        moved = conn.execute(
            b.update()
            .where(b.c.id == batch_id, b.c.completed_at.is_(None))
            .values(completed_at=now)
        ).rowcount
        if not moved:
            return False  # another process found it complete first
        body = json.dumps(completion_summary(conn, batch_id), sort_keys=True)
        kinds = ([COMPLETED_EVENT] if batch.webhook_url else []) + (
            [PREFECT_ROW] if prefect_events else []
        )
        for kind in kinds:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(schema.webhook_deliveries).values(
                            batch_id=batch_id,
                            event=kind,
                            body=body,
                            attempts=0,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                pass  # queued already (a completion undone by a withdrawn record, then redone)
    return True


def check_batches(db: Engine, batch_ids: Iterable[str], prefect_events: bool = False) -> list[str]:
    """Mark each of these batches complete if it is now; the ones that became complete."""
    return [b for b in dict.fromkeys(batch_ids) if mark_complete(db, b, prefect_events)]


def incomplete_batches(db: Engine) -> list[str]:
    """Batches taken in but not found complete yet (what reconcile-records looks at)."""
    b = schema.batches
    with db.connect() as conn:
        return list(
            conn.execute(
                select(b.c.id).where(b.c.status == BatchStatus.INGESTED, b.c.completed_at.is_(None))
            ).scalars()
        )


def batches_touched(db: Engine, page_id: int) -> list[str]:
    """The batch of a page and of every page linked to it (its record's copies)."""
    p = schema.pages
    with db.connect() as conn:
        rows = conn.execute(
            select(p.c.batch_id).where(or_(p.c.id == page_id, p.c.duplicate_of == page_id))
        ).scalars()
        return [str(x) for x in rows]

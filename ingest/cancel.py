"""Cancel a batch: nothing more of it is read, and nobody is asked about it any more.

The batch becomes `cancelled`. Its open tasks are withdrawn (a worker holding one is told
it is no longer theirs when they answer); answers given before stay, and stay paid: the
work was done. Records built already stay and are exported with the rest; pages not read
yet are left unread. A flow run of the batch stops before its next chunk of pages.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from kerani.core.errors import ConflictError
from kerani.core.vocabulary import BatchStatus, PageStatus, TaskStatus
from kerani.storage import schema
from kerani.storage.database import utcnow


def cancel_batch(db: Engine, batch_id: str) -> int:
    """Cancel the batch; how many open tasks were withdrawn. ConflictError when it is
    complete or cancelled already."""
    b, p, f, t = schema.batches, schema.pages, schema.fields, schema.tasks
    r = schema.records
    with db.begin() as conn:
        batch = conn.execute(select(b.c.status, b.c.completed_at).where(b.c.id == batch_id)).one()
        if batch.status == BatchStatus.CANCELLED:
            raise ConflictError("the batch is cancelled already")
        if batch.completed_at is not None:
            raise ConflictError("the batch is complete: there is nothing left to cancel")
        moved = conn.execute(
            b.update()
            .where(
                b.c.id == batch_id,
                b.c.completed_at.is_(None),
                b.c.status != BatchStatus.CANCELLED,
            )
            .values(status=BatchStatus.CANCELLED, cancelled_at=utcnow())
        ).rowcount
        if not moved:  # completed (or cancelled) by another process meanwhile
            raise ConflictError("the batch is complete or cancelled already")
        fields = select(f.c.id).join(p, p.c.id == f.c.page_id).where(p.c.batch_id == batch_id)
        withdrawn = conn.execute(
            t.update()
            .where(t.c.field_id.in_(fields), t.c.status == TaskStatus.OPEN)
            .values(status=TaskStatus.WITHDRAWN, lease_worker_id=None, lease_expires_at=None)
        ).rowcount
        # Pages of other batches linked to this one's pages without a record would wait
        # for ever: they go back to be read in their own batch (its Retry reads them).
        unread = select(p.c.id).where(
            p.c.batch_id == batch_id,
            ~select(r.c.id).where(r.c.page_id == p.c.id).exists(),
        )
        conn.execute(
            p.update()
            .where(p.c.duplicate_of.in_(unread), p.c.status == PageStatus.DUPLICATE)
            .values(status=PageStatus.INGESTED, duplicate_of=None)
        )
    return int(withdrawn)


def is_cancelled(db: Engine, batch_id: str) -> bool:
    """Whether the batch was cancelled (a flow run checks between chunks)."""
    b = schema.batches
    with db.connect() as conn:
        status = conn.execute(select(b.c.status).where(b.c.id == batch_id)).scalar()
    return status == BatchStatus.CANCELLED


def page_batch_cancelled(db: Engine, page_id: int) -> bool:
    """Whether the page's batch was cancelled (routing checks each page)."""
    b, p = schema.batches, schema.pages
    with db.connect() as conn:
        status = conn.execute(
            select(b.c.status).join(p, p.c.batch_id == b.c.id).where(p.c.id == page_id)
        ).scalar()
    return status == BatchStatus.CANCELLED

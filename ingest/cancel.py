"""Cancel a batch: nothing more of it is read, and nobody is asked about it any more.

The batch becomes `cancelled`. Its open tasks are withdrawn (a worker holding one is told
it is no longer theirs when they answer); answers given before stay, and stay paid: the
work was done. Records built already stay and are exported with the rest; pages not read
yet are left unread. A flow run of the batch stops before its next chunk of pages.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from kerani.core.errors import ConflictError
from kerani.core.vocabulary import BatchStatus, TaskStatus
from kerani.storage import schema
from kerani.storage.database import utcnow


def cancel_batch(db: Engine, batch_id: str) -> int:
    """Cancel the batch; how many open tasks were withdrawn. ConflictError when it is
    complete or cancelled already."""
    b, p, f, t = schema.batches, schema.pages, schema.fields, schema.tasks
    with db.begin() as conn:
        batch = conn.execute(select(b.c.status, b.c.completed_at).where(b.c.id == batch_id)).one()
        if batch.status == BatchStatus.CANCELLED:
            raise ConflictError("the batch is cancelled already")
        if batch.completed_at is not None:
            raise ConflictError("the batch is complete: there is nothing left to cancel")
        conn.execute(
            b.update()
            .where(b.c.id == batch_id)
            .values(status=BatchStatus.CANCELLED, cancelled_at=utcnow())
        )
        fields = select(f.c.id).join(p, p.c.id == f.c.page_id).where(p.c.batch_id == batch_id)
        withdrawn = conn.execute(
            t.update()
            .where(t.c.field_id.in_(fields), t.c.status == TaskStatus.OPEN)
            .values(status=TaskStatus.WITHDRAWN, lease_worker_id=None, lease_expires_at=None)
        ).rowcount
    return int(withdrawn)


def is_cancelled(db: Engine, batch_id: str) -> bool:
    """Whether the batch was cancelled (a flow run checks between chunks)."""
    b = schema.batches
    with db.connect() as conn:
        status = conn.execute(select(b.c.status).where(b.c.id == batch_id)).scalar()
    return status == BatchStatus.CANCELLED

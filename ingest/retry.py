"""Retry a batch: put its failed pages back to be read, with another template version if
asked, and never touch what was read or settled already.

Only pages that have no fields are put back (a failed page keeps none; a page left
`ingested` by a crash has none yet), so a retry can never duplicate a field, a task, an
answer or a payment; pages already read keep their version and everything people did on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, exists, func, select

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import PageStatus
from kerani.forms.catalogue import StoredTemplate
from kerani.storage import schema

RETRIED_STATUSES = (PageStatus.OCR_FAILED, PageStatus.INGESTED)


@dataclass
class RetryPlan:
    """What a retry put back: pages to read again, and pages kept as they were."""

    batch_id: str
    template: str | None  # `name:version` the pages are read with now; None: their own
    pages_reset: int = 0
    pages_kept: int = 0


def _retriable(batch_id: str) -> Any:
    """The condition on pages that a retry of this batch reads again."""
    p, f = schema.pages, schema.fields
    no_fields = ~exists(select(f.c.id).where(f.c.page_id == p.c.id))
    return and_(p.c.batch_id == batch_id, p.c.status.in_(RETRIED_STATUSES), no_fields)


def retriable_pages(db: Engine, batch_id: str) -> int:
    """How many of the batch's pages a retry would read again."""
    p = schema.pages
    with db.connect() as conn:
        query = select(func.count()).select_from(p).where(_retriable(batch_id))
        return int(conn.execute(query).scalar_one())


def reset_failed_pages(
    db: Engine, batch_id: str, template: StoredTemplate | None = None
) -> RetryPlan:
    """Put the batch's failed (and never-read) pages back to `ingested`, with their error
    cleared and, when given, `template` as their version and the batch's."""
    p, b = schema.pages, schema.batches
    plan = RetryPlan(batch_id, template.ref if template else None)
    with db.begin() as conn:
        if conn.execute(select(b.c.id).where(b.c.id == batch_id)).first() is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        pages = conn.execute(
            select(p.c.id, p.c.source_sha256, p.c.page_index, p.c.template).where(
                _retriable(batch_id)
            )
        ).all()
        total = conn.execute(
            select(func.count()).select_from(p).where(p.c.batch_id == batch_id)
        ).scalar_one()
        plan.pages_kept = int(total) - len(pages)
        for page in pages:
            values: dict[str, object] = {"status": PageStatus.INGESTED, "error": None}
            if template is not None:
                values.update(template=template.name, template_id=template.id)
            conn.execute(p.update().where(p.c.id == page.id).values(**values))
            plan.pages_reset += 1
        if template is not None:
            conn.execute(
                b.update()
                .where(b.c.id == batch_id)
                .values(template=template.name, template_id=template.id)
            )
    return plan

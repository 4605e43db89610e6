"""How far each batch is on its way to records: counts for the CLI, the pages and the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.vocabulary import BatchStatus, FieldStatus, PageStatus, ScanStatus
from kerani.storage import schema


def resolve_batch_id(db: Engine, prefix: str, agency_id: int | None = None) -> str:
    """The full id of the one batch whose id starts with `prefix` (as git does with commits),
    among one agency's batches when `agency_id` is given.

    Any unique prefix will do, in either case (ids are lower-case hex): `kerani status`
    prints 12 characters, and those are what people copy. Scoped to an agency, another
    agency's batch is not there at all: the same answer as an unknown id, and a prefix is
    never ambiguous because of it.
    """
    wanted = prefix.strip().lower()
    if not wanted or not wanted.isalnum() or not wanted.isascii():
        raise BadInputError(f"{prefix!r} is not a batch id: give its first characters (hex)")
    b = schema.batches
    with db.connect() as conn:
        query = select(b.c.id).where(b.c.id.startswith(wanted))
        if agency_id is not None:
            query = query.where(b.c.agency_id == agency_id)
        ids = conn.execute(query.limit(2)).scalars()
        found = list(ids)
    if not found:
        raise NotFoundError(f"no batch {prefix!r}: `kerani status` lists them")
    if len(found) > 1:
        raise BadInputError(f"{prefix!r} names more than one batch: give more characters")
    return str(found[0])


def _iso(when: Any) -> str | None:
    return when.isoformat() if when is not None else None


def _batch_state(batch: Row[Any]) -> str:
    """open | ingesting | in progress | complete | cancelled, as agencies read it."""
    if batch.status == BatchStatus.CANCELLED:
        return "cancelled"
    if batch.completed_at is not None:
        return "complete"
    if batch.status == BatchStatus.INGESTED:
        return "in progress"
    return str(batch.status)


def failed_pages(conn: Connection, batch_id: str) -> Sequence[Row[Any]]:
    """The batch's pages the OCR could not read: file name, page index and reason, in file
    and page order."""
    p, s = schema.pages, schema.scans
    return conn.execute(
        select(s.c.filename, p.c.page_index, p.c.error)
        .join(s, s.c.id == p.c.scan_id)
        .where(p.c.batch_id == batch_id, p.c.status == PageStatus.OCR_FAILED)
        .order_by(s.c.filename, p.c.page_index)
    ).all()


def batch_progress(
    db: Engine, batch_id: str | None = None, agency_id: int | None = None
) -> list[dict[str, Any]]:
    """Per batch (of one agency, if given): pages, fields auto-accepted / settled by people /
    open, records, rejections."""
    b, p, f, s, r = schema.batches, schema.pages, schema.fields, schema.scans, schema.records
    t = schema.templates
    with db.connect() as conn:
        query = select(b).order_by(b.c.created_at.desc())
        if batch_id is not None:
            query = query.where(b.c.id == batch_id)
        if agency_id is not None:
            query = query.where(b.c.agency_id == agency_id)
        batches = conn.execute(query).all()
        out = []
        for batch in batches:
            page_status: dict[str, int] = dict(
                conn.execute(
                    select(p.c.status, func.count())
                    .where(p.c.batch_id == batch.id)
                    .group_by(p.c.status)
                )
                .tuples()
                .all()
            )
            field_status: dict[str, int] = dict(
                conn.execute(
                    select(f.c.status, func.count())
                    .join(p, p.c.id == f.c.page_id)
                    .where(p.c.batch_id == batch.id)
                    .group_by(f.c.status)
                )
                .tuples()
                .all()
            )
            rejected = conn.execute(
                select(s.c.filename, s.c.error)
                .where(s.c.batch_id == batch.id, s.c.status == ScanStatus.REJECTED)
                .order_by(s.c.filename)
            ).all()
            failed = failed_pages(conn, batch.id)
            records = conn.execute(
                select(func.count()).select_from(r).where(r.c.batch_id == batch.id)
            ).scalar_one()
            # A linked page is complete once its earlier page's record is copied to it.
            linked_done = conn.execute(
                select(func.count())
                .select_from(p)
                .join(r, r.c.page_id == p.c.id)
                .where(p.c.batch_id == batch.id, p.c.status == PageStatus.DUPLICATE)
            ).scalar_one()
            version = conn.execute(select(t.c.version).where(t.c.id == batch.template_id)).scalar()
            fields_total = sum(field_status.values())
            auto_accepted = field_status.get(FieldStatus.AUTO_ACCEPTED, 0)
            by_people = field_status.get(FieldStatus.SETTLED, 0)
            settled = auto_accepted + by_people
            out.append(
                {
                    "batch_id": batch.id,
                    "name": batch.name,
                    "status": _batch_state(batch),
                    "completed_at": _iso(batch.completed_at),
                    "cancelled_at": _iso(batch.cancelled_at),
                    "template": batch.template,
                    # The stored version it was submitted (or last retried) with.
                    "template_version": version,
                    "created_at": batch.created_at.isoformat(),
                    "pages": sum(page_status.values()),
                    "pages_failed": page_status.get(PageStatus.OCR_FAILED, 0),
                    "pages_complete": page_status.get(PageStatus.COMPLETE, 0) + linked_done,
                    "pages_linked": page_status.get(PageStatus.DUPLICATE, 0),
                    "fields": fields_total,
                    "auto_accepted": auto_accepted,
                    "settled_by_people": by_people,
                    "waiting_for_people": field_status.get(FieldStatus.IN_REVIEW, 0),
                    "percent_settled": round(100.0 * settled / fields_total, 1)
                    if fields_total
                    else 0.0,
                    "records": records,
                    "rejected": [{"file": x.filename, "reason": x.error} for x in rejected],
                    "failed_pages": [
                        {"file": x.filename, "page": x.page_index + 1, "reason": x.error}
                        for x in failed
                    ],
                }
            )
    return out

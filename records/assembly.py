"""Reassembly: when every field of a page is settled, build its record with provenance."""

from __future__ import annotations

import json

from sqlalchemy import Engine, func, insert, select

from storage import schema
from storage.database import utcnow

SETTLED = ("auto_accepted", "settled")


def assemble_record(db: Engine, page_id: int) -> bool:
    """Build (or rebuild) the record of a page whose fields are all settled; False if not ready."""
    f = schema.fields
    with db.begin() as conn:
        page = conn.execute(select(schema.pages).where(schema.pages.c.id == page_id)).one()
        rows = conn.execute(select(f).where(f.c.page_id == page_id).order_by(f.c.id)).all()
        if page.status not in ("routed", "complete") or any(r.status not in SETTLED for r in rows):
            return False
        data = {
            r.name: {
                "value": r.value if r.value_kind == "text" else None,
                "kind": r.value_kind,
                "source": r.source,
                "agreement": r.agreement,
                "answers": r.answer_count,
                "ocr_text": r.ocr_text,
                "ocr_confidence": r.ocr_confidence,
                "ocr_engine": r.ocr_engine,
            }
            for r in rows
        }
        payload = json.dumps(data, ensure_ascii=False, sort_keys=True)
        existing = conn.execute(
            select(schema.records.c.id).where(schema.records.c.page_id == page_id)
        ).first()
        if existing is None:
            conn.execute(
                insert(schema.records).values(
                    page_id=page_id, batch_id=page.batch_id, data=payload, assembled_at=utcnow()
                )
            )
        else:
            conn.execute(
                schema.records.update()
                .where(schema.records.c.id == existing.id)
                .values(data=payload, assembled_at=utcnow())
            )
        conn.execute(
            schema.pages.update().where(schema.pages.c.id == page_id).values(status="complete")
        )
    return True


def assemble_ready_pages(db: Engine, batch_id: str) -> int:
    """Reconcile: assemble every page of a batch that is settled but has no record; return count."""
    p, f = schema.pages, schema.fields
    open_fields = (
        select(func.count())
        .select_from(f)
        .where(f.c.page_id == p.c.id, f.c.status.not_in(SETTLED))
        .scalar_subquery()
    )
    with db.connect() as conn:
        ready = (
            conn.execute(
                select(p.c.id).where(
                    p.c.batch_id == batch_id, p.c.status == "routed", open_fields == 0
                )
            )
            .scalars()
            .all()
        )
    return sum(assemble_record(db, page_id) for page_id in ready)

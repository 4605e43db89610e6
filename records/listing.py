"""A batch's documents one page at a time, each with its status, for the agency API.

A document here is one page of a scan: `done` once its record is built, `failed` when the
OCR could not read it (with the reason), `waiting` while people still have fields of it.
A done document carries its record's values (and how each was settled); a waiting one
carries only how many fields wait.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from sqlalchemy import Engine, case, func, select

from kerani.core.errors import BadInputError
from kerani.core.vocabulary import FieldStatus, PageStatus, ValueKind
from kerani.storage import schema

DocumentStatus = Literal["done", "waiting", "failed"]
STATUSES: tuple[str, ...] = ("done", "waiting", "failed")
MAX_PER_PAGE = 200


def _values(data: str) -> dict[str, Any]:
    """A record's values: each field's value (or unreadable/blank) and its source."""
    cells: dict[str, dict[str, Any]] = json.loads(data)
    return {
        name: {
            "value": cell.get("value") if cell.get("kind") == ValueKind.TEXT else None,
            "kind": cell.get("kind"),
            "source": cell.get("source"),
            "problems": cell.get("problems", []),
        }
        for name, cell in sorted(cells.items())
    }


def batch_documents(
    db: Engine, batch_id: str, status: str | None = None, page: int = 1, per_page: int = 50
) -> dict[str, Any]:
    """One page of the batch's documents (in file and page order), filtered by status."""
    if status is not None and status not in STATUSES:
        raise BadInputError(f"status: one of {', '.join(STATUSES)}, not {status!r}")
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise BadInputError(f"page from 1, per_page from 1 to {MAX_PER_PAGE}")
    p, s, r, f = schema.pages, schema.scans, schema.records, schema.fields
    waiting = (
        select(func.count())
        .where(f.c.page_id == p.c.id, f.c.status.in_((FieldStatus.PENDING, FieldStatus.IN_REVIEW)))
        .scalar_subquery()
    )
    state = case(
        (r.c.id.is_not(None), "done"),
        (p.c.status == PageStatus.OCR_FAILED, "failed"),
        else_="waiting",
    ).label("state")
    query = (
        select(
            p.c.id,
            p.c.page_index,
            p.c.error,
            s.c.filename,
            s.c.sha256,
            r.c.data,
            waiting.label("waiting_fields"),
            state,
        )
        .join(s, s.c.id == p.c.scan_id)
        .outerjoin(r, r.c.page_id == p.c.id)
        .where(p.c.batch_id == batch_id, p.c.status != PageStatus.GOLD)
    )
    if status is not None:
        query = query.where(state == status)
    with db.connect() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = conn.execute(
            query.order_by(s.c.filename, p.c.page_index, p.c.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
    documents = []
    for row in rows:
        doc: dict[str, Any] = {
            "document": row.filename,
            "page": row.page_index + 1,
            "scan_sha256": row.sha256,
            "status": row.state,
        }
        if row.state == "done":
            doc["values"] = _values(row.data)
        elif row.state == "failed":
            doc["reason"] = row.error
        else:
            doc["waiting_fields"] = int(row.waiting_fields or 0)
        documents.append(doc)
    return {"total": int(total), "page": page, "per_page": per_page, "documents": documents}

"""The audit log of the task engine (every claim, view and answer) and the count of each
worker's views of each page, which caps how much of one document a worker sees."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select

from kerani.core.text import contains_pattern
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.statements import dialect_insert, prepared


def _audit_insert(_dialect: str) -> Any:
    t = schema.tasks
    return insert(schema.audit_log).values(
        at=bindparam("now"),
        worker_id=bindparam("wid"),
        action=bindparam("audit_action"),
        task_id=bindparam("tid"),
        detail=bindparam("audit_detail"),
        field_id=select(func.coalesce(t.c.field_id, t.c.gold_field_id))
        .where(t.c.id == bindparam("tid"))
        .scalar_subquery(),
    )


def audit(conn: Connection, worker_id: int, action: str, task_id: str, detail: str = "") -> None:
    """Write one audit row naming the worker, the task and the field it shows."""
    conn.execute(
        prepared(conn, _audit_insert),
        {
            "now": utcnow(),
            "wid": worker_id,
            "audit_action": action,
            "tid": task_id,
            "audit_detail": detail or None,
        },
    )


def log_view(db: Engine, worker_id: int, task_id: str) -> None:
    """Write a snippet view to the audit log: every view of citizen data is on record."""
    with db.begin() as conn:
        audit(conn, worker_id, "view", task_id)


def _view_upsert(dialect: str) -> Any:
    v = schema.worker_page_views
    stmt = dialect_insert(dialect)(v).values(
        worker_id=bindparam("wid"), page_id=bindparam("page"), fields_seen=1
    )
    return add_view_on_conflict(stmt)


def add_view_on_conflict(stmt: Any) -> Any:
    """An insert of a worker_page_views row that adds one view when the row exists."""
    v = schema.worker_page_views
    return stmt.on_conflict_do_update(
        index_elements=[v.c.worker_id, v.c.page_id], set_={"fields_seen": v.c.fields_seen + 1}
    )


def count_view(conn: Connection, worker_id: int, page_id: int) -> None:
    """Count one more field of the page seen by the worker."""
    conn.execute(prepared(conn, _view_upsert), {"wid": worker_id, "page": page_id})


def audit_entries(
    db: Engine, who: str = "", action: str = "", before: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Audit rows, newest first: by whom (a name containing `who`), of `action`, older than
    row `before` (the next page). Values are never in the log, only ids and what was done."""
    log, w = schema.audit_log, schema.workers
    query = (
        select(
            log.c.id,
            log.c.at,
            w.c.name.label("who"),
            w.c.role,
            log.c.action,
            log.c.task_id,
            log.c.field_id,
            log.c.detail,
        )
        .outerjoin(w, w.c.id == log.c.worker_id)
        .order_by(log.c.id.desc())
        .limit(limit)
    )
    if who:
        query = query.where(w.c.name.ilike(contains_pattern(who), escape="\\"))
    if action:
        query = query.where(log.c.action == action)
    if before is not None:
        query = query.where(log.c.id < before)
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]

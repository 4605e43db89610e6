"""What the operator and agency pages show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from kerani.storage import schema

__all__ = ["recent_answers"]


def recent_answers(db: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest answers with who gave them, for the operator's eye (escaped on output)."""
    a, w, t, f = schema.answers, schema.workers, schema.tasks, schema.fields
    with db.connect() as conn:
        rows = conn.execute(
            select(
                a.c.created_at,
                a.c.kind,
                a.c.value,
                w.c.name.label("worker"),
                f.c.name.label("field"),
                f.c.ocr_text,
            )
            .join(w, w.c.id == a.c.worker_id)
            .join(t, t.c.id == a.c.task_id)
            .join(f, f.c.id == t.c.field_id)
            .order_by(a.c.id.desc())
            .limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]

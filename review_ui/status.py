"""What the operator and agency pages show."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, select

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import AuditAction, Sensitivity
from kerani.storage import schema
from kerani.storage.database import utcnow

__all__ = ["recent_answers", "reveal_answer"]


def _answers_query() -> Any:
    a, w, t, f = schema.answers, schema.workers, schema.tasks, schema.fields
    return (
        select(
            a.c.id,
            a.c.created_at,
            a.c.kind,
            a.c.value,
            a.c.task_id,
            w.c.name.label("worker"),
            f.c.id.label("field_id"),
            f.c.name.label("field"),
            f.c.ocr_text,
            f.c.sensitivity,
        )
        .join(w, w.c.id == a.c.worker_id)
        .join(t, t.c.id == a.c.task_id)
        .join(f, f.c.id == t.c.field_id)
    )


def recent_answers(db: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest answers with who gave them, for the operator's eye (escaped on output).

    Personal and restricted values (names, IC numbers, dates of birth) come masked: what
    the answer and the OCR said is left out, and `masked` says so; reveal_answer shows one.
    """
    with db.connect() as conn:
        rows = conn.execute(_answers_query().order_by(schema.answers.c.id.desc()).limit(limit))
        out = []
        for r in rows:
            row = dict(r._mapping)
            row["masked"] = r.sensitivity != Sensitivity.PUBLIC
            if row["masked"]:
                row["value"] = row["ocr_text"] = None
            out.append(row)
    return out


def reveal_answer(db: Engine, operator_id: int, answer_id: int) -> dict[str, Any]:
    """One answer with its value and the OCR's guess in clear; the look is audited."""
    with db.begin() as conn:
        row = conn.execute(_answers_query().where(schema.answers.c.id == answer_id)).first()
        if row is None:
            raise NotFoundError(f"no answer {answer_id}")
        conn.execute(
            insert(schema.audit_log).values(
                at=utcnow(),
                worker_id=operator_id,
                action=AuditAction.REVEAL,
                task_id=row.task_id,
                field_id=row.field_id,
                detail=f"answer {answer_id}",
            )
        )
    return dict(row._mapping) | {"masked": False}

"""Gold snippets: fields with a known answer, mixed into workers' streams to measure them."""

from __future__ import annotations

from sqlalchemy import Engine, delete, exists, select

from kerani.storage import schema


def make_gold(db: Engine, answers: dict[int, str]) -> int:
    """Turn fields (id → known answer) into gold, out of the agency flow; return how many."""
    f, t, p, a = schema.fields, schema.tasks, schema.pages, schema.answers
    with db.begin() as conn:
        for field_id, value in answers.items():
            conn.execute(
                f.update()
                .where(f.c.id == field_id)
                .values(
                    status="gold",
                    value=value,
                    value_kind="text",
                    source="gold",
                    gold_value=value,
                    gold_origin="truth",
                )
            )
            # Their ordinary tasks (unanswered, as gold comes from fresh pages) are withdrawn.
            conn.execute(
                delete(t).where(t.c.field_id == field_id, ~exists().where(a.c.task_id == t.c.id))
            )
        page_ids = (
            conn.execute(select(f.c.page_id).where(f.c.id.in_(list(answers))).distinct())
            .scalars()
            .all()
        )
        conn.execute(p.update().where(p.c.id.in_(page_ids)).values(status="gold"))
    return len(answers)

"""Statuses, roles and kinds hold only the values of their vocabulary.

Revision ID: 0010
Revises: 0009

Each of these columns holds one of a closed set of strings (kerani.core.vocabulary); a
CHECK constraint per column, `ck_<table>_<column>`, makes the database refuse any other, so
a misspelt status fails where it is written instead of leaving a row that no query finds.
The sets are written out here as they stand at this revision (a later change to a
vocabulary comes with its own migration). A database whose rows hold a value outside its
set is refused with the table, column and values named, before anything is changed.

SQLite cannot add a constraint to a table: each table is rebuilt (copy, drop, rename),
which storage.database.migrate runs with foreign keys off and checks before it commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from kerani.core.errors import ConflictError

revision = "0010"
down_revision = "0009"

# table → column → the values it may hold (NULL aside, where the column allows it).
VOCABULARIES: dict[str, dict[str, tuple[str, ...]]] = {
    "batches": {"status": ("ingesting", "ingested")},
    "scans": {"status": ("accepted", "rejected")},
    "pages": {"status": ("ingested", "ocred", "ocr_failed", "routed", "complete", "gold")},
    "fields": {
        "status": ("pending", "auto_accepted", "in_review", "settled", "gold"),
        "value_kind": ("text", "unreadable", "blank"),
        "source": ("ocr", "human", "arbitrated", "gold"),
        "sensitivity": ("public", "personal", "restricted"),
    },
    "workers": {"role": ("worker", "operator", "agency"), "language": ("en", "ms")},
    "tasks": {"status": ("open", "settled"), "kind": ("field", "gold")},
    "answers": {"kind": ("value", "unreadable", "blank", "skip")},
    "audit_log": {"action": ("view", "claim", "answer")},
    "ledger": {"task_kind": ("field", "gold", "arbitration")},
}


def _values_outside(table: str, column: str, values: tuple[str, ...]) -> str | None:
    """What table.column holds outside `values`, with row counts; None when nothing."""
    col = sa.column(column)
    outside = (
        op.get_bind()
        .execute(
            sa.select(col, sa.func.count())
            .select_from(sa.table(table, col))
            .where(col.is_not(None), col.not_in(values))
            .group_by(col)
            .order_by(col)
        )
        .all()
    )
    if not outside:
        return None
    found = ", ".join(f"{v!r} ({n} row{'' if n == 1 else 's'})" for v, n in outside)
    return f"{table}.{column} holds {found}, not one of {', '.join(values)}"


def _sqlite_indexes(table: str) -> dict[str, str]:
    """The CREATE INDEX statements of a SQLite table's own indexes, by name."""
    rows = op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    )
    return {str(name): str(sql) for name, sql in rows}


@contextmanager
def _rebuild(table: str) -> Iterator[BatchOperations]:
    """Alter `table`: in place on PostgreSQL; on SQLite by rebuilding it, indexes as they were.

    Alembic rebuilds indexes from reflection, which loses the order of a column
    (ix_tasks_claim_order's `priority DESC`): any index that comes back different is
    created again from its original statement.
    """
    if op.get_bind().dialect.name != "sqlite":
        with op.batch_alter_table(table) as t:
            yield t
        return
    before = _sqlite_indexes(table)
    with op.batch_alter_table(table, recreate="always") as t:
        yield t
    after = _sqlite_indexes(table)
    for name, sql in before.items():
        if after.get(name) != sql:
            op.execute(f'DROP INDEX IF EXISTS "{name}"')
            op.execute(sql)


def upgrade() -> None:
    """Check every table's values first, then add a CHECK constraint per column."""
    problems = [
        problem
        for table, columns in VOCABULARIES.items()
        for column, values in columns.items()
        if (problem := _values_outside(table, column, values)) is not None
    ]
    if problems:
        raise ConflictError(
            "the database holds values its columns may no longer take: "
            f"{'; '.join(problems)}. Correct those rows, then migrate again"
        )
    for table, columns in VOCABULARIES.items():
        with _rebuild(table) as t:
            for column, values in columns.items():
                t.create_check_constraint(f"ck_{table}_{column}", sa.column(column).in_(values))


def downgrade() -> None:
    """Drop the constraints again."""
    for table, columns in VOCABULARIES.items():
        with _rebuild(table) as t:
            for column in columns:
                t.drop_constraint(f"ck_{table}_{column}", type_="check")

"""Machine readings as their own rows: ocr_readings, apart from people's answers.

Revision ID: 0009
Revises: 0008

Until now a field's OCR was three columns of `fields`, with the evidence behind the guess
packed into `ocr_engine` after a '+' (`tesseract-5.3.0+page-num-2agree`). Each reading is
now a row of `ocr_readings` (engine, text, confidence, evidence, whether it is the guess),
so that an engine's reading is kept as what it is and a field can hold more than one.

Every existing field gets one reading, its guess, from its ocr_text, ocr_confidence and
ocr_engine split at the first '+' (no '+': evidence `page`), dated when its page came in
(the reading's own time was never kept). `fields.ocr_engine` then goes: the engine and the
evidence live in the reading. `fields.ocr_text` and `ocr_confidence` stay, a copy of the
guess that the queue's hot statements read without a join.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


# The tables as this revision finds them, for the statement that copies the guesses.
_fields = sa.table(
    "fields",
    sa.column("id", sa.Integer),
    sa.column("page_id", sa.Integer),
    sa.column("ocr_text", sa.Text),
    sa.column("ocr_confidence", sa.Float),
    sa.column("ocr_engine", sa.String),
)
_pages = sa.table("pages", sa.column("id", sa.Integer), sa.column("created_at", sa.DateTime))


def _guesses_from_labels(dialect: str) -> sa.Select:
    # Each field's reading: the engine before the first '+' of its label, the evidence
    # after it (no '+': 'page'), the same split kerani.ocr.calibration.evidence_of made
    # before this revision. Its time is its page's arrival: when it was read was not kept.
    label = _fields.c.ocr_engine
    find = sa.func.strpos if dialect == "postgresql" else sa.func.instr
    plus = find(label, "+")
    engine = sa.case((plus > 0, sa.func.substr(label, 1, plus - 1)), else_=label)
    evidence = sa.case((plus > 0, sa.func.substr(label, plus + 1)), else_=sa.literal("page"))
    return (
        sa.select(
            _fields.c.id,
            engine,
            _fields.c.ocr_text,
            _fields.c.ocr_confidence,
            evidence,
            sa.true(),
            _pages.c.created_at,
        )
        .join(_pages, _pages.c.id == _fields.c.page_id)
        .order_by(_fields.c.id)
    )


def upgrade() -> None:
    """Create ocr_readings, give every field its guess reading, drop fields.ocr_engine."""
    op.create_table(
        "ocr_readings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("field_id", sa.Integer, sa.ForeignKey("fields.id"), nullable=False),
        sa.Column("engine", sa.String(50), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("evidence", sa.String(50), nullable=False),
        sa.Column("is_guess", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ocr_readings_field_id", "ocr_readings", ["field_id"])
    op.create_index(
        "uq_ocr_readings_guess",
        "ocr_readings",
        ["field_id"],
        unique=True,
        sqlite_where=sa.text("is_guess"),
        postgresql_where=sa.text("is_guess"),
    )
    columns = ["field_id", "engine", "text", "confidence", "evidence", "is_guess", "created_at"]
    readings = sa.table("ocr_readings", *(sa.column(name) for name in columns))
    op.execute(
        readings.insert().from_select(columns, _guesses_from_labels(op.get_bind().dialect.name))
    )
    with op.batch_alter_table("fields") as t:
        t.drop_column("ocr_engine")


def downgrade() -> None:
    """Put the guess's engine and evidence back into fields.ocr_engine; drop ocr_readings."""
    with op.batch_alter_table("fields") as t:
        t.add_column(sa.Column("ocr_engine", sa.String(50), nullable=False, server_default=""))
    op.execute(
        "UPDATE fields SET ocr_engine = (SELECT CASE WHEN r.evidence = 'page' THEN r.engine"
        " ELSE r.engine || '+' || r.evidence END FROM ocr_readings r"
        " WHERE r.field_id = fields.id AND r.is_guess)"
        " WHERE EXISTS (SELECT 1 FROM ocr_readings r WHERE r.field_id = fields.id AND r.is_guess)"
    )
    with op.batch_alter_table("fields") as t:
        t.alter_column("ocr_engine", server_default=None)
    op.drop_table("ocr_readings")

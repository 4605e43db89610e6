"""Crowd engine and records: worker quality, gold, ledger, privacy counts, rules on tasks.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TS = sa.DateTime(timezone=True)
FALSE = sa.false()


def upgrade() -> None:
    """Add the crowd engine's and the records' columns and tables."""
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("trusted", sa.Boolean, nullable=False, server_default=FALSE))
        t.add_column(sa.Column("cleared", sa.Boolean, nullable=False, server_default=FALSE))
        t.add_column(sa.Column("quarantined", sa.Boolean, nullable=False, server_default=FALSE))
    with op.batch_alter_table("tasks") as t:
        t.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="field"))
        t.add_column(sa.Column("escalated", sa.Boolean, nullable=False, server_default=FALSE))
        t.add_column(sa.Column("restricted", sa.Boolean, nullable=False, server_default=FALSE))
        t.add_column(sa.Column("gold_value", sa.Text))
        t.add_column(sa.Column("note", sa.Text))
    with op.batch_alter_table("fields") as t:
        t.add_column(
            sa.Column("sensitivity", sa.String(20), nullable=False, server_default="personal")
        )
        t.add_column(sa.Column("validation_error", sa.Text))
    with op.batch_alter_table("answers") as t:
        t.add_column(sa.Column("weight", sa.Float))
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=False),
        sa.Column(
            "answer_id", sa.Integer, sa.ForeignKey("answers.id"), nullable=False, unique=True
        ),
        sa.Column("task_kind", sa.String(20), nullable=False),
        sa.Column("amount_sen", sa.Integer, nullable=False),
        sa.Column("batch_id", sa.String(32)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_ledger_worker_id", "ledger", ["worker_id"])
    op.create_table(
        "worker_page_views",
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), primary_key=True),
        sa.Column("page_id", sa.Integer, sa.ForeignKey("pages.id"), primary_key=True),
        sa.Column("fields_seen", sa.Integer, nullable=False),
    )
    op.create_table(
        "worker_quality",
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), primary_key=True),
        sa.Column("field_type", sa.String(30), primary_key=True),
        sa.Column("gold_seen", sa.Integer, nullable=False, server_default="0"),
        sa.Column("gold_correct", sa.Integer, nullable=False, server_default="0"),
        sa.Column("accuracy", sa.Float, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )

"""Worker-quality evidence from agreement, and the OCR engine's own reliability per field type.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Add agreement counters to worker_quality and an ocr_quality table."""
    with op.batch_alter_table("worker_quality") as t:
        t.add_column(sa.Column("agree_seen", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("agree_correct", sa.Integer, nullable=False, server_default="0"))
    # Gold tasks are one per (gold field, worker): they point at the gold field through
    # gold_field_id and leave field_id empty, so field_id stays unique for real fields.
    with op.batch_alter_table("tasks") as t:
        t.alter_column("field_id", existing_type=sa.Integer, nullable=True)
        # Claim order (fields nearly settled first) as an indexed column, so that a claim
        # reads the queue from the top instead of sorting all of it.
        t.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        t.add_column(
            sa.Column(
                "gold_field_id",
                sa.Integer,
                sa.ForeignKey("fields.id", name="fk_tasks_gold_field_id"),
            )
        )
    # Sharded counters: concurrent settles of one field type rarely wait on the same row.
    op.create_table(
        "ocr_quality",
        sa.Column("field_type", sa.String(30), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("seen", sa.Integer, nullable=False, server_default="0"),
        sa.Column("correct", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_answers_worker_id", "answers", ["worker_id"])
    op.create_index("ix_tasks_lease_worker_id", "tasks", ["lease_worker_id"])
    op.create_index(
        "ix_tasks_claim_order",
        "tasks",
        ["status", "kind", sa.text("priority DESC"), "created_at", "id"],
    )

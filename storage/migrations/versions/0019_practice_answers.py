"""The practice round's answers.

Revision ID: 0019
Revises: 0018

A new worker answers a round of known-answer snippets (microtasks.practice) before any paid
work; each answer is kept here (practice_answers: the worker, the round, the item, what
they answered, whether it was right, when), apart from the answers to real tasks: practice
is neither paid nor counted. A round that passes sets workers.practice_passed_at (0018); a
failed one is tried again as a new round.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"

KINDS = ("value", "unreadable", "blank", "skip")


def upgrade() -> None:
    """Create practice_answers."""
    op.create_table(
        "practice_answers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("item", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("correct", sa.Boolean, nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("worker_id", "round", "item", name="uq_practice_answers_item"),
        sa.CheckConstraint(sa.column("kind").in_(KINDS), name="ck_practice_answers_kind"),
    )


def downgrade() -> None:
    """Drop practice_answers (the practice answers are lost; who passed stays known)."""
    op.drop_table("practice_answers")

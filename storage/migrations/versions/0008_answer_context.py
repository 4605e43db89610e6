"""What a worker was shown and how long they took, kept with each answer.

Revision ID: 0008
Revises: 0007

`prefilled` is the text the page put in the box before the worker typed (the OCR's guess;
empty when the task was shown blind), `duration_ms` the time from showing the task to the
submit, as the page measured it. Both are NULL for answers recorded before this revision
and for clients that do not say. They let quality work tell a confirmation of a pre-filled
guess from blind keying, and a careful answer from a tap-through.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    """Add answers.prefilled and answers.duration_ms."""
    with op.batch_alter_table("answers") as t:
        t.add_column(sa.Column("prefilled", sa.Text, nullable=True))
        t.add_column(sa.Column("duration_ms", sa.Integer, nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("answers") as t:
        t.drop_column("duration_ms")
        t.drop_column("prefilled")

"""Each worker's count of answers (skips aside), kept as they answer.

Revision ID: 0007
Revises: 0006

A claim reads it to decide whether a gold snippet is due, and My work shows it. Counting
the worker's answers instead read every one of them, which grows without end for the
workers who do the most.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Add workers.answers_done, counted from the answers recorded so far."""
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("answers_done", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE workers SET answers_done = (SELECT count(*) FROM answers "
        "WHERE answers.worker_id = workers.id AND answers.kind <> 'skip')"
    )

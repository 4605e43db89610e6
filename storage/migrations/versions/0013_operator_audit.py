"""The audit log keeps what operators do: a worker's standing changed, a masked value shown.

Revision ID: 0013
Revises: 0012

The console's actions (pause, unpause, arbiter, cleared, revoke) and each look at a masked
personal or restricted value are audited like a worker's view of a snippet, so the CHECK on
audit_log.action takes two more values. SQLite rebuilds the table to change a constraint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"

BEFORE = ("view", "claim", "answer")
AFTER = (*BEFORE, "standing", "reveal")


def _recheck(values: tuple[str, ...]) -> None:
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("audit_log", recreate=recreate) as t:
        t.drop_constraint("ck_audit_log_action", type_="check")
        t.create_check_constraint("ck_audit_log_action", sa.column("action").in_(values))


def upgrade() -> None:
    """Let audit_log.action be 'standing' or 'reveal' too."""
    _recheck(AFTER)


def downgrade() -> None:
    """Back to the workers' three actions (refused while operators' rows remain)."""
    _recheck(BEFORE)

"""Worker sign-in by invite code and PIN, sign-in rate limits, idle session expiry, language.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add PIN/invite/language columns to workers, last_seen_at to sessions, signin_failures."""
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("pin_hash", sa.String(200), nullable=True))
        t.add_column(sa.Column("invite_hash", sa.String(64), nullable=True))
        t.add_column(sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("language", sa.String(5), nullable=False, server_default="en"))
        t.create_unique_constraint("uq_workers_invite_hash", ["invite_hash"])
    with op.batch_alter_table("sessions") as t:
        t.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    # Failed sign-ins per key ("worker:<number>" or "ip:<address>"), so that a 6-digit PIN
    # cannot be guessed by trying: a key is locked for a while after too many failures.
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )

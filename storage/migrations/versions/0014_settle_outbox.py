"""The transactional outbox of settled documents, so that none is ever without its record.

Revision ID: 0014
Revises: 0013

When a page's last field settles, a row goes into settle_outbox in the same transaction.
Before, the review app emitted a Prefect event after the commit: with Prefect unreachable
the event was lost (and the document had no record until someone noticed). Now a publisher
sends the open rows to Prefect in one event per minute, a flow run reassembles them all and
closes them, and when Prefect cannot be reached the documents are reassembled inline.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"

OPEN = sa.text("done_at IS NULL")


def upgrade() -> None:
    """Create settle_outbox, with indexes on its open rows and on its publications."""
    op.create_table(
        "settle_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("page_id", sa.Integer, sa.ForeignKey("pages.id"), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("publication", sa.String(40), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
    )
    op.create_index("ix_settle_outbox_page_id", "settle_outbox", ["page_id"])
    op.create_index(
        "ix_settle_outbox_open",
        "settle_outbox",
        ["settled_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_settle_outbox_publication", "settle_outbox", ["publication"])


def downgrade() -> None:
    """Drop settle_outbox (open rows are caught by reconcile-records' scan of pages)."""
    op.drop_table("settle_outbox")

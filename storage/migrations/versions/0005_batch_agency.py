"""Batches belong to the agency that submitted them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Add batches.agency_id (the agency user who submitted it; empty: operator's own)."""
    with op.batch_alter_table("batches") as t:
        t.add_column(
            sa.Column(
                "agency_id",
                sa.Integer,
                sa.ForeignKey("workers.id", name="fk_batches_agency_id"),
                nullable=True,
            )
        )
        t.create_index("ix_batches_agency_id", ["agency_id"])

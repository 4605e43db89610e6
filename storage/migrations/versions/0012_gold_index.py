"""An index of the gold fields, so that a gold claim reads only them.

Revision ID: 0012
Revises: 0011

A claim that draws gold (one in every `gold_every` tasks of a worker, one in three on
probation) looks for a gold field the worker has not seen. Without an index on
`fields.gold_value` that was a scan of every field of every batch, so each gold claim
cost more as the database grew (`kerani bench load` saw one full scan of `fields` per
gold claim). The index holds only the fields that are gold (partial, on PostgreSQL and
SQLite alike), by type, which the column mode also asks for.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

GOLD = sa.text("gold_value IS NOT NULL")


def upgrade() -> None:
    """Add ix_fields_gold: fields(kind) where gold_value is set."""
    op.create_index("ix_fields_gold", "fields", ["kind"], postgresql_where=GOLD, sqlite_where=GOLD)


def downgrade() -> None:
    """Drop ix_fields_gold."""
    op.drop_index("ix_fields_gold", table_name="fields")

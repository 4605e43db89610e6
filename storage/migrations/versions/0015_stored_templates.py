"""Templates are stored in the database, versioned; batches and pages name their version.

Revision ID: 0015
Revises: 0014

Before, a batch recorded the template as it was given, a bundled name or a file path, and
every page, the review page and the exports loaded it from there: a relative path or a moved
file took the review page down for everyone. Batches from before keep an empty template_id
and are read by name as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    """Create templates; add batches.template_id and pages.template_id."""
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("workers.id"), nullable=True),
        sa.UniqueConstraint("name", "version", name="uq_templates_name_version"),
    )
    for table in ("batches", "pages"):
        with op.batch_alter_table(table) as t:
            t.add_column(
                sa.Column(
                    "template_id",
                    sa.Integer,
                    sa.ForeignKey("templates.id", name=f"fk_{table}_template_id"),
                    nullable=True,
                )
            )


def downgrade() -> None:
    """Drop the template_id columns and the stored templates."""
    for table in ("pages", "batches"):
        with op.batch_alter_table(table) as t:
            t.drop_column("template_id")
    op.drop_table("templates")

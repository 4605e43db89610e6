"""Pages are unique per batch, not across every agency; a repeat within one agency links.

Revision ID: 0016
Revises: 0015

Before, a page was unique by its scan's content, page number and template across all
batches (uq_pages_content): agency Y submitting a scan agency X had sent got a batch with no
page and "1 already there", which told Y that another agency held the document, and Y never
got its record. Now a page is unique within its batch. A scan repeated within one agency
gets a page of its own in the new batch with `duplicate_of` naming the page first read
(status `duplicate`): it is not read again, and receives a copy of that page's record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"

BEFORE = ("ingested", "ocred", "ocr_failed", "routed", "complete", "gold")
AFTER = (*BEFORE, "duplicate")


def _recreate() -> str:
    # SQLite rebuilds the table to change a constraint.
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    """Unique pages per batch; pages.duplicate_of; status may be 'duplicate'."""
    with op.batch_alter_table("pages", recreate=_recreate()) as t:
        t.drop_constraint("uq_pages_content", type_="unique")
        t.create_unique_constraint(
            "uq_pages_batch_content", ["batch_id", "source_sha256", "page_index"]
        )
        t.add_column(
            sa.Column(
                "duplicate_of",
                sa.Integer,
                sa.ForeignKey("pages.id", name="fk_pages_duplicate_of"),
                nullable=True,
            )
        )
        t.drop_constraint("ck_pages_status", type_="check")
        t.create_check_constraint("ck_pages_status", sa.column("status").in_(AFTER))
    op.create_index("ix_pages_duplicate_of", "pages", ["duplicate_of"])
    # The lookup of an agency's earlier reading of a scan.
    op.create_index("ix_pages_source", "pages", ["source_sha256", "page_index"])
    # Whether a batch has pages still to finish, without reading all of them.
    op.create_index("ix_pages_batch_status", "pages", ["batch_id", "status"])


def downgrade() -> None:
    """Back to pages unique across batches (refused while repeats or duplicates remain)."""
    op.drop_index("ix_pages_batch_status", "pages")
    op.drop_index("ix_pages_source", "pages")
    op.drop_index("ix_pages_duplicate_of", "pages")
    with op.batch_alter_table("pages", recreate=_recreate()) as t:
        t.drop_constraint("ck_pages_status", type_="check")
        t.create_check_constraint("ck_pages_status", sa.column("status").in_(BEFORE))
        t.drop_column("duplicate_of")
        t.drop_constraint("uq_pages_batch_content", type_="unique")
        t.create_unique_constraint("uq_pages_content", ["source_sha256", "page_index", "template"])

"""The agency API: tokens per agency, named batches filled by upload, webhooks.

Revision ID: 0017
Revises: 0016

An agency's programs call the API with a token of their own (api_tokens: only a hash is
kept; revoked, it stops at once). A batch can be created empty with a name (status `open`),
filled by uploads (uploads: chunked, resumable, so a weak line can finish) or from an S3
prefix, then started; it may be cancelled (its open tasks `withdrawn`). When its last
document is done, a webhook signed with the token's secret is delivered
(webhook_deliveries, retried until it lands).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"

BEFORE = ("ingesting", "ingested")
AFTER = ("open", *BEFORE, "cancelled")
UPLOADS = ("receiving", "complete")


TASKS_BEFORE = ("open", "settled")
TASKS_AFTER = (*TASKS_BEFORE, "withdrawn")


def _sqlite_indexes(table: str) -> dict[str, str]:
    rows = op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL",
        (table,),
    )
    return {str(name): str(sql) for name, sql in rows}


def _recheck(values: tuple[str, ...], table: str = "batches") -> None:
    """Let `table`.status take `values`. SQLite rebuilds the table to change a constraint,
    and alembic recreates its indexes from reflection, which loses a column's order
    (ix_tasks_claim_order's `priority DESC`): those are created again as they were."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    before = _sqlite_indexes(table) if sqlite else {}
    with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as t:
        t.drop_constraint(f"ck_{table}_status", type_="check")
        t.create_check_constraint(f"ck_{table}_status", sa.column("status").in_(values))
    after = _sqlite_indexes(table) if sqlite else {}
    for name, sql in before.items():
        if after.get(name) != sql:
            op.execute(f'DROP INDEX IF EXISTS "{name}"')
            op.execute(sql)


def upgrade() -> None:
    """Create api_tokens, uploads and webhook_deliveries; name, webhook and dates on batches."""
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("shown", sa.String(16), nullable=False),
        sa.Column("webhook_secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("workers.id"), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_agency_id", "api_tokens", ["agency_id"])
    with op.batch_alter_table("batches") as t:
        t.add_column(sa.Column("name", sa.String(200), nullable=True))
        t.add_column(sa.Column("webhook_url", sa.Text, nullable=True))
        t.add_column(
            sa.Column(
                "token_id",
                sa.Integer,
                sa.ForeignKey("api_tokens.id", name="fk_batches_token_id"),
                nullable=True,
            )
        )
        t.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    _recheck(AFTER)
    _recheck(TASKS_AFTER, "tasks")
    # The languages a page was read with, for its archive files (hOCR, ALTO, PDF/A).
    with op.batch_alter_table("pages") as t:
        t.add_column(sa.Column("ocr_languages", sa.String(100), nullable=True))
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("batch_id", "filename", name="uq_uploads_batch_filename"),
        sa.CheckConstraint(sa.column("status").in_(UPLOADS), name="ck_uploads_status"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("event", sa.String(50), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("batch_id", "event", name="uq_webhook_deliveries_batch_event"),
    )


def downgrade() -> None:
    """Drop the API's tables and columns (refused while open or cancelled batches remain)."""
    op.drop_table("webhook_deliveries")
    op.drop_table("uploads")
    with op.batch_alter_table("pages") as t:
        t.drop_column("ocr_languages")
    _recheck(TASKS_BEFORE, "tasks")
    _recheck(BEFORE)
    with op.batch_alter_table("batches") as t:
        for name in ("cancelled_at", "completed_at", "token_id", "webhook_url", "name"):
            t.drop_column(name)
    op.drop_index("ix_api_tokens_agency_id", "api_tokens")
    op.drop_table("api_tokens")

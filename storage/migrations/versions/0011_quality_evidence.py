"""What quality needs to stand without truth: probation, blind leases, anchoring, gold
from staff and the crowd, audits of auto-accepted fields and refitted calibrations.

Revision ID: 0011
Revises: 0010

- workers.proven: passed the minimum of gold; until then a worker's answers are kept and
  paid but do not count as votes (probation). workers.suspect: failed their last gold, so
  gold comes more often. Workers already trusted, or with `trusted_min_gold` (4) right
  gold answers, start proven.
- tasks.lease_blind: the holder of the current lease is shown the snippet without the
  OCR's guess; answers.blind keeps what each answer was given (NULL before this revision).
  tasks.answers_given: every answer (votes or not, skips aside), so that workers on
  probation do not all pile onto one task.
- worker_quality.anchor_seen / anchor_accepted: how often a worker was shown a pre-filled
  guess later known wrong, and accepted it.
- fields.gold_value / gold_origin: a known answer that tests workers (truth | staff |
  crowd); fields.audit: an auto-accepted field sent to people blind anyway;
  fields.posterior: the settled value's posterior under the consensus model;
  fields.ocr_group: the group whose counters weigh the OCR's guess (template|type|evidence),
  set by routing; ocr_quality.field_type now holds such a group (up to 200 characters).
- gold_keyings: staff keying a field blind, twice; where both agree it becomes gold.
- calibrations: every refit of a template's auto-accept rule from fields people settled.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"

GOLD_ORIGINS = ("truth", "staff", "crowd")


def upgrade() -> None:
    """Add the columns and tables above; mark proven workers and the truth gold."""
    # Plain ADD COLUMN (SQLite takes it in place): a rebuild of `tasks` would lose the
    # order of ix_tasks_claim_order's `priority DESC`.
    no = sa.false()
    op.add_column("workers", sa.Column("proven", sa.Boolean, nullable=False, server_default=no))
    op.add_column("workers", sa.Column("suspect", sa.Boolean, nullable=False, server_default=no))
    op.add_column("tasks", sa.Column("lease_blind", sa.Boolean, nullable=False, server_default=no))
    op.add_column(
        "tasks", sa.Column("answers_given", sa.Integer, nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE tasks SET answers_given = (SELECT COUNT(*) FROM answers "
        "WHERE answers.task_id = tasks.id AND answers.kind != 'skip')"
    )
    op.add_column("answers", sa.Column("blind", sa.Boolean, nullable=True))
    for counter in ("anchor_seen", "anchor_accepted"):
        op.add_column(
            "worker_quality", sa.Column(counter, sa.Integer, nullable=False, server_default="0")
        )
    with op.batch_alter_table("fields") as t:
        t.add_column(sa.Column("gold_value", sa.Text, nullable=True))
        t.add_column(sa.Column("gold_origin", sa.String(20), nullable=True))
        t.add_column(sa.Column("audit", sa.Boolean, nullable=False, server_default=no))
        t.add_column(sa.Column("posterior", sa.Float, nullable=True))
        t.add_column(sa.Column("ocr_group", sa.String(200), nullable=True))
        t.create_check_constraint(
            "ck_fields_gold_origin", sa.column("gold_origin").in_(GOLD_ORIGINS)
        )
    # The OCR's counters are kept per group (template|field type|evidence) from now on; the
    # per-type rows of before stay, read by fields routed before this revision.
    with op.batch_alter_table("ocr_quality") as t:
        t.alter_column(
            "field_type", type_=sa.String(200), existing_type=sa.String(30), existing_nullable=False
        )
    op.create_table(
        "gold_keyings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("field_id", sa.Integer, sa.ForeignKey("fields.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("keyer_id", sa.Integer, sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("field_id", "round", name="uq_gold_keyings_field_round"),
    )
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fields", sa.Integer, nullable=False),
        sa.Column("rules", sa.Text, nullable=False),  # the Calibration as JSON
        sa.Column("changes", sa.Text, nullable=False),  # what changed from the one before
    )
    op.create_index("ix_calibrations_template", "calibrations", ["template", "fitted_at"])
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE workers SET proven = :yes WHERE trusted = :yes OR id IN "
            "(SELECT worker_id FROM worker_quality GROUP BY worker_id "
            "HAVING SUM(gold_correct) >= 4)"
        ),
        {"yes": True},
    )
    conn.execute(
        sa.text("UPDATE fields SET gold_value = value, gold_origin = 'truth' WHERE status = 'gold'")
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_calibrations_template", "calibrations")
    op.drop_table("calibrations")
    op.drop_table("gold_keyings")
    with op.batch_alter_table("fields") as t:
        t.drop_constraint("ck_fields_gold_origin", type_="check")
        t.drop_column("ocr_group")
        t.drop_column("posterior")
        t.drop_column("audit")
        t.drop_column("gold_origin")
        t.drop_column("gold_value")
    for table, column in (
        ("worker_quality", "anchor_accepted"),
        ("worker_quality", "anchor_seen"),
        ("answers", "blind"),
        ("tasks", "answers_given"),
        ("tasks", "lease_blind"),
        ("workers", "suspect"),
        ("workers", "proven"),
    ):
        op.drop_column(table, column)

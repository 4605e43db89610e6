"""Fair, visible pay: held payments, rates per task kind, payouts; the practice round.

Revision ID: 0018
Revises: 0017

Each answer's payment is now held until a check on the worker's work vouches for it
(ledger.status: held, then credited or voided; ledger.reason says why), paid at the rate of
its field type (pay_rates: confirmed by an operator from measured times), and paid out once
(payouts; ledger.payout_id). Payments made before this migration were credited at once:
they stay credited (reason `before_holds`). workers.practice_passed_at: a worker gets paid
work once they passed the practice round; workers who exist already are taken as passed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"

ACTIONS_BEFORE = ("view", "claim", "answer", "standing", "reveal")
ACTIONS_AFTER = (*ACTIONS_BEFORE, "pay")
STATUSES = ("held", "credited", "voided")
REASONS = (
    "waiting_check",
    "check_passed",
    "hold_ended",
    "paused_on_checks",
    "unpaused",
    "before_holds",
)
PAY_KINDS = ("field", "gold", "arbitration")


def _recheck_actions(values: tuple[str, ...]) -> None:
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("audit_log", recreate=recreate) as t:
        t.drop_constraint("ck_audit_log_action", type_="check")
        t.create_check_constraint("ck_audit_log_action", sa.column("action").in_(values))


def upgrade() -> None:
    """Create pay_rates and payouts; hold, reason, field type and payout on the ledger."""
    op.create_table(
        "payouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("workers.id"), nullable=True),
        sa.Column("total_sen", sa.Integer, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
    )
    op.create_table(
        "pay_rates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("field_type", sa.String(30), nullable=False),
        sa.Column("pay_kind", sa.String(20), nullable=False),
        sa.Column("rate_sen", sa.Integer, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_by", sa.Integer, sa.ForeignKey("workers.id"), nullable=True),
        sa.Column("median_ms", sa.Integer, nullable=True),
        sa.Column("measured", sa.Integer, nullable=True),
        sa.Column("floor_sen_per_hour", sa.Integer, nullable=True),
        sa.CheckConstraint(sa.column("pay_kind").in_(PAY_KINDS), name="ck_pay_rates_pay_kind"),
    )
    op.create_index("ix_pay_rates_kind", "pay_rates", ["field_type", "pay_kind", "id"])
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("ledger", recreate=recreate) as t:
        t.add_column(sa.Column("status", sa.String(10), nullable=False, server_default="credited"))
        t.add_column(
            sa.Column("reason", sa.String(30), nullable=False, server_default="before_holds")
        )
        t.add_column(sa.Column("field_type", sa.String(30), nullable=True))
        t.add_column(sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(
            sa.Column(
                "payout_id",
                sa.Integer,
                sa.ForeignKey("payouts.id", name="fk_ledger_payout_id"),
                nullable=True,
            )
        )
        t.create_check_constraint("ck_ledger_status", sa.column("status").in_(STATUSES))
        t.create_check_constraint("ck_ledger_reason", sa.column("reason").in_(REASONS))
    op.execute("UPDATE ledger SET settled_at = created_at")
    op.create_index("ix_ledger_worker_status", "ledger", ["worker_id", "status"])
    op.create_index("ix_ledger_status_payout", "ledger", ["status", "payout_id"])
    _recheck_actions(ACTIONS_AFTER)
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("practice_passed_at", sa.DateTime(timezone=True), nullable=True))
    # Workers who exist already have been working: they are not sent back to practise.
    op.execute("UPDATE workers SET practice_passed_at = created_at")


def downgrade() -> None:
    """Drop pay_rates and payouts and the ledger's new columns (holds are lost)."""
    with op.batch_alter_table("workers") as t:
        t.drop_column("practice_passed_at")
    _recheck_actions(ACTIONS_BEFORE)
    op.drop_index("ix_ledger_status_payout", "ledger")
    op.drop_index("ix_ledger_worker_status", "ledger")
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("ledger", recreate=recreate) as t:
        t.drop_constraint("ck_ledger_reason", type_="check")
        t.drop_constraint("ck_ledger_status", type_="check")
        for name in ("payout_id", "settled_at", "field_type", "reason", "status"):
            t.drop_column(name)
    op.drop_index("ix_pay_rates_kind", "pay_rates")
    op.drop_table("pay_rates")
    op.drop_table("payouts")

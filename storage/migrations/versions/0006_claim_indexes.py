"""Indexes that keep a claim's cost independent of the queue's and the worker's size.

Revision ID: 0006
Revises: 0005

A claim looks up the worker's own leases and, for each candidate task, whether the
worker already answered it. Without table statistics (a new deployment, or a server
whose autovacuum has not run yet) the planner picked `ix_tasks_status`, reading every
open task, and `ix_answers_worker_id`, reading every answer of the worker, because each
matched one of the two conditions as well as the better index did. One index per lookup,
matching all of its conditions, leaves the planner no worse choice:
- tasks: (lease_worker_id, lease_expires_at) replaces lease_worker_id alone; status alone
  goes (ix_tasks_claim_order begins with it).
- answers: the one-answer-per-worker-and-task key is (worker_id, task_id) instead of
  (task_id, worker_id), which also serves every lookup by worker, so ix_answers_worker_id
  goes.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Replace the single-column indexes of tasks and answers by composite ones."""
    with op.batch_alter_table("tasks") as t:
        t.drop_index("ix_tasks_status")
        t.drop_index("ix_tasks_lease_worker_id")
        t.create_index("ix_tasks_lease", ["lease_worker_id", "lease_expires_at"])
    with op.batch_alter_table("answers") as t:
        t.drop_constraint("uq_answers_task_worker", type_="unique")
        t.drop_index("ix_answers_worker_id")
        t.create_unique_constraint("uq_answers_worker_task", ["worker_id", "task_id"])

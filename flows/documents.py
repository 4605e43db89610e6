"""A document's last steps, shared by the flows and the settle trigger (no Prefect here).

Reassembly (kerani.records.assembly) reports the fields whose rules fail; here they go back
to people as micro tasks (kerani.microtasks.settling.reopen_field) and the stale record goes.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from kerani.microtasks.settling import reopen_field
from kerani.records.assembly import (
    AssemblyOutcome,
    pages_to_reassemble,
    reassemble_page,
    withdraw_record,
)


def finish_document(db: Engine, page_id: int) -> AssemblyOutcome:
    """Build a settled page's record, or send the fields that break a rule back to people."""
    outcome = reassemble_page(db, page_id)
    if outcome.status != "send_back":
        return outcome
    for name, note in outcome.sent_back.items():
        reopen_field(db, outcome.field_ids[name], note)
    withdraw_record(db, page_id)
    return replace(outcome, status="sent_back")


def finish_ready_documents(db: Engine, batch_id: str | None = None) -> int:
    """Reconcile: finish every settled page without a record; return records built."""
    return sum(
        finish_document(db, page_id).status == "assembled"
        for page_id in pages_to_reassemble(db, batch_id)
    )

"""A document's last steps, shared by the flows and the settle trigger (no Prefect here).

Reassembly (kerani.records.assembly) reports the fields whose rules fail; here they go back
to people as micro tasks (kerani.microtasks.settling.reopen_field) and the stale record goes.
`finish_settled` does it for rows of the settle outbox (kerani.storage.outbox) and closes
them, in one go for all the documents a publication carries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from kerani.core.errors import KeraniError
from kerani.flows.webhooks import prefect_in_use
from kerani.microtasks.settling import reopen_field
from kerani.records.assembly import (
    AssemblyOutcome,
    pages_to_reassemble,
    reassemble_page,
    withdraw_record,
)
from kerani.records.completion import batches_touched, check_batches
from kerani.storage import outbox, schema
from kerani.storage.outbox import OutboxRow

log = logging.getLogger(__name__)


def finish_document(db: Engine, page_id: int) -> AssemblyOutcome:
    """Build a settled page's record, or send the fields that break a rule back to people."""
    outcome = reassemble_page(db, page_id)
    if outcome.status == "assembled":
        # The page's batch (and those of its linked copies) may be complete now.
        check_batches(db, batches_touched(db, page_id), prefect_in_use())
    if outcome.status != "send_back":
        return outcome
    for name, note in outcome.sent_back.items():
        reopen_field(db, outcome.field_ids[name], note)
    withdraw_record(db, page_id)
    return replace(outcome, status="sent_back")


def finish_ready_documents(db: Engine, batch_id: str | None = None) -> int:
    """Reconcile: finish every settled page without a record; return records built.

    The open outbox rows of the pages finished are closed, so their publication does not
    build the same records again.
    """
    rows: dict[int, list[int]] = {}
    for row in outbox.open_rows(db, batch_id=batch_id):
        rows.setdefault(row.page_id, []).append(row.id)
    built = 0
    for page_id in pages_to_reassemble(db, batch_id):
        status = finish_document(db, page_id).status
        outbox.close(db, rows.get(page_id, []), status)
        built += status == "assembled"
    return built


@dataclass(frozen=True)
class Finished:
    """What became of one settled document: no field values here, only names and counts
    (this goes into Prefect's logs and artifacts)."""

    page_id: int
    status: str  # assembled | sent_back | not_ready | failed
    found: str  # outbox (its settle's row) | unrecorded (a settled page with no record)
    sent_back: tuple[str, ...] = ()  # names of the fields sent back to people
    flagged: int = 0  # problems kept on the record after arbitration

    def as_dict(self) -> dict[str, Any]:
        """Plain data for flow results, logs and artifacts."""
        return {
            "page_id": self.page_id,
            "status": self.status,
            "found": self.found,
            "sent_back": list(self.sent_back),
            "flagged": self.flagged,
        }


def _finish_one(db: Engine, page_id: int, found: str) -> Finished:
    try:
        outcome = finish_document(db, page_id)
    except (KeraniError, SQLAlchemyError) as e:
        # The settle stands either way; the row stays open and a later run tries again.
        log.warning("reassembly of page %s failed: %s", page_id, type(e).__name__)
        return Finished(page_id, "failed", found)
    return Finished(
        page_id, outcome.status, found, tuple(sorted(outcome.sent_back)), len(outcome.flagged)
    )


def finish_settled(db: Engine, rows: Sequence[OutboxRow]) -> list[Finished]:
    """Reassemble the documents of these outbox rows (each page once) and close the rows;
    a failed one stays open with one more attempt counted."""
    by_page: dict[int, list[int]] = {}
    for row in rows:
        by_page.setdefault(row.page_id, []).append(row.id)
    done = []
    for page_id, row_ids in by_page.items():
        finished = _finish_one(db, page_id, "outbox")
        if finished.status == "failed":
            outbox.failed(db, row_ids)
        else:
            outbox.close(db, row_ids, finished.status)
        done.append(finished)
    return done


def finish_unrecorded(db: Engine, page_ids: Sequence[int]) -> list[Finished]:
    """Reassemble settled pages that have no record and no outbox row (found by a scan)."""
    return [_finish_one(db, page_id, "unrecorded") for page_id in page_ids]


def tally(done: Sequence[Finished]) -> dict[str, int]:
    """How many documents ended each way, and in all."""
    counts = {"pages": len(done), "assembled": 0, "sent_back": 0, "not_ready": 0, "failed": 0}
    for d in done:
        counts[d.status] = counts.get(d.status, 0) + 1
    return counts


def batches_of(db: Engine, page_ids: Sequence[int]) -> dict[int, str]:
    """The batch of each page (for reports of what a run did)."""
    p = schema.pages
    found: dict[int, str] = {}
    with db.connect() as conn:
        for at in range(0, len(page_ids), 500):  # a bounded IN list
            chunk = list(page_ids[at : at + 500])
            rows = conn.execute(select(p.c.id, p.c.batch_id).where(p.c.id.in_(chunk))).all()
            found.update({int(r.id): str(r.batch_id) for r in rows})
    return found

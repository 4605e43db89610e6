"""Reassembly flows: rebuild a document's record when its last field settles, and reconcile.

People settle fields in Kerani's own database, outside any flow run. When the last field of
a document settles, the review app calls `kerani.flows.triggers.document_settled`, which
reassembles it inline, or has the `reassemble-document` flow here do it (by a Prefect event
or by its deployment). Events can be lost and processes can die between a settle and its
reassembly, so `reconcile-records` runs on a schedule and reassembles every settled page
that still has no record. Like every flow here, these take ids, never the settings
(see kerani.flows.digitise).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from kerani.core.settings import current_settings
from kerani.flows.documents import finish_document
from kerani.records.archive import write_text_layers
from kerani.records.assembly import pages_to_reassemble
from kerani.records.report import batch_report, report_markdown
from kerani.storage.stores import open_stores

log = logging.getLogger(__name__)


@task(name="reassemble-page")
def reassemble_task(page_id: int) -> dict[str, Any]:
    """Validate one settled page and write its record, or send failing fields back."""
    return finish_document(open_stores(current_settings()).db, page_id).as_dict()


@flow(name="reassemble-document")
def reassemble_document(page_id: int) -> dict[str, Any]:
    """Reassemble one document whose last field settled (run by the event's trigger)."""
    return reassemble_task(int(page_id))


@flow(name="reconcile-records")
def reconcile_records(batch_id: str | None = None) -> dict[str, Any]:
    """Reassemble every settled page without a record: the safety net for lost triggers."""
    pages = pages_to_reassemble(open_stores(current_settings()).db, batch_id)
    counts = {"pages": len(pages), "assembled": 0, "sent_back": 0, "not_ready": 0}
    sent_back: dict[int, dict[str, str]] = {}
    for page_id in pages:
        outcome = reassemble_task(page_id)
        counts[outcome["status"]] += 1
        if outcome["sent_back"]:
            sent_back[page_id] = outcome["sent_back"]
    if pages:
        log.info("reconciled %s pages: %s", len(pages), counts)
    return counts | {"sent_back_fields": sent_back}


@task(name="write-text-layers")
def text_layers_task(batch_id: str) -> dict[str, Any]:
    """Write the hOCR text layer of each page with a record; return how many and where."""
    stores = open_stores(current_settings())
    keys = write_text_layers(stores.db, stores.blobs, batch_id)
    return {"pages": len(keys), "where": stores.blobs.location(f"exports/{batch_id}/hocr")}


@task(name="batch-report")
def report_task(batch_id: str) -> dict[str, Any]:
    """Build the batch report and publish it as Prefect artifacts (Markdown and a table)."""
    report = batch_report(open_stores(current_settings()).db, batch_id)
    key = batch_id[:12].lower()
    create_markdown_artifact(
        report_markdown(report), key=f"batch-report-{key}", description="Batch report"
    )
    if report.unread_fields:
        create_table_artifact(
            [vars(u) for u in report.unread_fields],
            key=f"unread-fields-{key}",
            description="Fields that could not be read",
        )
    return report.as_dict()
